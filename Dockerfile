# Multi-stage build: compile a stripped release binary, run it as a non-root user.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# The whole workspace manifest must resolve: the test kit crate and bench targets are
# declared in Cargo.toml, so they are copied too (only the binary is built).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY benches ./benches
COPY src ./src
COPY migrations ./migrations
COPY config ./config
# Build settings (SQLite's compile-time options).
COPY .cargo ./.cargo
# Stripped: no symbols or line tables in the shipped binary.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_DEBUG=false
RUN cargo build --release --locked --bin outcome-meter

FROM debian:bookworm-slim
# The data directory exists and belongs to the service user, so a named volume
# mounted there starts out writable by it.
RUN useradd --system --uid 10001 --home-dir /var/lib/outcome-meter --create-home outcome-meter \
 && mkdir -p /var/lib/outcome-meter/data \
 && chown -R outcome-meter:outcome-meter /var/lib/outcome-meter \
 && chmod 0700 /var/lib/outcome-meter/data
WORKDIR /var/lib/outcome-meter
COPY --from=build /src/target/release/outcome-meter /usr/local/bin/outcome-meter
# For reference: the defaults are built into the binary (config/default.toml restates
# them and is not read); mount your configuration and pass it with OUTCOME_METER_CONFIG.
COPY config ./config
USER outcome-meter
# Webhooks on 8080 for everyone; health, readiness and metrics on the admin
# listener, loopback inside the container (the HEALTHCHECK asks it there).
# The allocator (mimalloc) without transparent huge pages even on hosts that
# set them to `always`: with them its arenas doubled the service's RSS.
ENV MIMALLOC_ALLOW_THP=0 \
    OUTCOME_METER__SERVER__LISTEN=0.0.0.0:8080 \
    OUTCOME_METER__SERVER__ADMIN_LISTEN=127.0.0.1:9090 \
    OUTCOME_METER__DATABASE__URL=sqlite:///var/lib/outcome-meter/data/outcome-meter.db
EXPOSE 8080
VOLUME ["/var/lib/outcome-meter/data"]
# No curl in the image: the binary asks its own admin listener.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/outcome-meter", "health"]
ENTRYPOINT ["/usr/local/bin/outcome-meter"]
CMD ["serve"]
