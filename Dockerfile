# Multi-stage build: compile the release binary, run it as a non-root user.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# The whole workspace manifest must resolve: the test kit crate and bench targets are
# declared in Cargo.toml, so they are copied too (only the binary is built).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY benches ./benches
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked --bin outcome-meter

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/outcome-meter --create-home outcome-meter
WORKDIR /var/lib/outcome-meter
COPY --from=build /src/target/release/outcome-meter /usr/local/bin/outcome-meter
COPY config ./config
USER outcome-meter
ENV OUTCOME_METER__SERVER__LISTEN=0.0.0.0:8080 \
    OUTCOME_METER__DATABASE__URL=sqlite:///var/lib/outcome-meter/data/outcome-meter.db
EXPOSE 8080
VOLUME ["/var/lib/outcome-meter/data"]
ENTRYPOINT ["/usr/local/bin/outcome-meter"]
CMD ["serve"]
