-- Reversals of reported outcomes whose ticket was reopened within the clawback
-- duration: one per outcome, ever (exactly once across crashes).
CREATE TABLE reversals (
    outcome_id        TEXT   PRIMARY KEY,
    tenant            TEXT   NOT NULL,
    provider          TEXT   NOT NULL,
    ticket_id         TEXT   NOT NULL,
    event_name        TEXT   NOT NULL,
    value             BIGINT NOT NULL,
    stripe_customer_id TEXT  NOT NULL,
    reopen_event_key  TEXT   NOT NULL,
    reopened_at       BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    evidence          TEXT   NOT NULL,
    method            TEXT,             -- void | cancel | correction | dry_run, fixed at the first attempt
    state             TEXT   NOT NULL DEFAULT 'pending', -- pending | done | failed
    attempts          BIGINT NOT NULL DEFAULT 0,
    next_attempt_at   BIGINT NOT NULL,
    lease_until       BIGINT,
    last_error        TEXT,
    stripe_request_id TEXT,
    stripe_timestamp  BIGINT,           -- the correcting event's timestamp (method = correction)
    done_at           BIGINT
);
CREATE INDEX reversals_pending ON reversals (next_attempt_at) WHERE state = 'pending';
CREATE INDEX reversals_tenant ON reversals (tenant, created_at);

-- Every effective contract ever used, by hash, so old decisions stay explainable.
CREATE TABLE contracts (
    hash        TEXT   PRIMARY KEY,
    version     TEXT   NOT NULL,
    terms       TEXT   NOT NULL,
    first_seen  BIGINT NOT NULL
);

CREATE INDEX outcomes_customer ON outcomes (stripe_customer_id, confirmed_at);
CREATE INDEX decisions_tenant ON decisions (tenant, resolved_at);
CREATE INDEX ticket_events_time ON ticket_events (tenant, occurred_at);
