-- outcome-meter schema (SQLite). Times are Unix milliseconds.

-- The inbox: every authentic delivery, committed before the helpdesk gets 2xx.
CREATE TABLE deliveries (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant        TEXT    NOT NULL,
    provider      TEXT    NOT NULL,
    delivery_key  TEXT    NOT NULL,
    received_at   BIGINT  NOT NULL,
    headers       TEXT    NOT NULL,
    body          BLOB,
    status        TEXT    NOT NULL DEFAULT 'pending', -- pending | processed | quarantined
    error         TEXT,
    event_count   BIGINT  NOT NULL DEFAULT 0,
    lease_until   BIGINT,
    processed_at  BIGINT,
    UNIQUE (tenant, provider, delivery_key)
);
CREATE INDEX deliveries_pending ON deliveries (id) WHERE status = 'pending';
CREATE INDEX deliveries_quarantined ON deliveries (tenant, id) WHERE status = 'quarantined';

-- Normalized events, deduplicated by the vendor's event key.
CREATE TABLE ticket_events (
    tenant       TEXT   NOT NULL,
    provider     TEXT   NOT NULL,
    event_key    TEXT   NOT NULL,
    ticket_id    TEXT   NOT NULL,
    kind         TEXT   NOT NULL,
    occurred_at  BIGINT NOT NULL,
    resolver     TEXT,
    actor_id     TEXT,
    tags         TEXT   NOT NULL,
    channel      TEXT,
    delivery_id  BIGINT NOT NULL,
    PRIMARY KEY (tenant, provider, event_key)
);
CREATE INDEX ticket_events_ticket ON ticket_events (tenant, provider, ticket_id);

-- One row per ticket: the frozen (settled) prefix and when it is next due.
CREATE TABLE tickets (
    tenant               TEXT   NOT NULL,
    provider             TEXT   NOT NULL,
    ticket_id            TEXT   NOT NULL,
    settled_seq          BIGINT NOT NULL DEFAULT 0,
    settled_resolved_at  BIGINT,
    settle_at            BIGINT,
    updated_at           BIGINT NOT NULL,
    PRIMARY KEY (tenant, provider, ticket_id)
);
CREATE INDEX tickets_due ON tickets (settle_at) WHERE settle_at IS NOT NULL;

-- Every decision on every resolution, billable or not, with the deciding clause.
CREATE TABLE decisions (
    tenant            TEXT   NOT NULL,
    provider          TEXT   NOT NULL,
    ticket_id         TEXT   NOT NULL,
    seq               BIGINT NOT NULL,
    resolved_at       BIGINT NOT NULL,
    resolver          TEXT,
    settle_at         BIGINT NOT NULL,
    status            TEXT   NOT NULL, -- in_window | reopened | confirmed | not_billable
    billable          BIGINT NOT NULL,
    clause            TEXT   NOT NULL,
    detail            TEXT   NOT NULL,
    contract_version  TEXT   NOT NULL,
    contract_hash     TEXT   NOT NULL,
    evidence          TEXT   NOT NULL,
    outcome_id        TEXT,
    final             BIGINT NOT NULL DEFAULT 0,
    decided_at        BIGINT NOT NULL,
    PRIMARY KEY (tenant, provider, ticket_id, seq)
);

-- Confirmed outcomes, and the outbox state of their Stripe report.
CREATE TABLE outcomes (
    id                  TEXT   PRIMARY KEY,
    tenant              TEXT   NOT NULL,
    provider            TEXT   NOT NULL,
    ticket_id           TEXT   NOT NULL,
    seq                 BIGINT NOT NULL,
    resolved_at         BIGINT NOT NULL,
    confirmed_at        BIGINT NOT NULL,
    event_name          TEXT   NOT NULL,
    value               BIGINT NOT NULL,
    stripe_customer_id  TEXT   NOT NULL,
    contract_version    TEXT   NOT NULL,
    contract_hash       TEXT   NOT NULL,
    evidence            TEXT   NOT NULL,
    state               TEXT   NOT NULL DEFAULT 'pending', -- pending | reported | dry_run | failed
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL,
    lease_until         BIGINT,
    last_error          TEXT,
    stripe_request_id   TEXT,
    reported_at         BIGINT,
    UNIQUE (tenant, provider, ticket_id, seq)
);
CREATE INDEX outcomes_pending ON outcomes (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outcomes_tenant ON outcomes (tenant, confirmed_at);

-- Every call made (or, in dry-run, that would have been made) to Stripe.
CREATE TABLE stripe_attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    outcome_id    TEXT   NOT NULL,
    attempted_at  BIGINT NOT NULL,
    dry_run       BIGINT NOT NULL,
    request       TEXT   NOT NULL,
    status_code   BIGINT,
    request_id    TEXT,
    result        TEXT   NOT NULL,
    error         TEXT
);
CREATE INDEX stripe_attempts_outcome ON stripe_attempts (outcome_id);
