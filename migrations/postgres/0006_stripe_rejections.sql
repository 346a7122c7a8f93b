-- Stripe's asynchronous rejections (issue 11.3).

-- Stripe event-destination notifications (thin events) received at POST /stripe/events,
-- committed before Stripe gets its 2xx and processed at least once (claimed with a
-- lease; processing is idempotent). One row per Stripe event id, ever.
CREATE TABLE stripe_events (
    id               TEXT   PRIMARY KEY,      -- evt_...
    type             TEXT   NOT NULL,
    related_object   TEXT,                    -- the related object's id (mtr_...), if any
    context          TEXT,                    -- Stripe-Context to fetch it with (connected accounts)
    livemode         BIGINT NOT NULL DEFAULT 0,
    created          TEXT,                    -- Stripe's time, as sent (RFC 3339)
    received_at      BIGINT NOT NULL,
    body             TEXT   NOT NULL,         -- the notification as received
    state            TEXT   NOT NULL DEFAULT 'pending', -- pending | processed | ignored | failed
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_until      BIGINT,
    processed_at     BIGINT,
    error            TEXT,
    summary          TEXT                     -- what processing found (JSON)
);
CREATE INDEX stripe_events_pending ON stripe_events (next_attempt_at) WHERE state = 'pending';

-- Every meter event Stripe accepted and then rejected, named by an event's sample errors:
-- one row per Stripe identifier (an outcome's, a resent one's, or a correction's).
CREATE TABLE stripe_rejections (
    identifier       TEXT   PRIMARY KEY,
    outcome_id       TEXT   NOT NULL,
    stripe_event_id  TEXT   NOT NULL,
    code             TEXT   NOT NULL,
    message          TEXT   NOT NULL,
    rejected_at      BIGINT NOT NULL
);
CREATE INDEX stripe_rejections_outcome ON stripe_rejections (outcome_id);

-- How many times an outcome rejected by Stripe was sent again (`replay --rejected`). Its
-- Stripe identifier is the outcome id, then `<outcome id>_resend<N>`: Stripe does not say
-- whether a rejected identifier may be reused, so a resend never reuses one.
ALTER TABLE outcomes ADD COLUMN stripe_resends BIGINT NOT NULL DEFAULT 0;
