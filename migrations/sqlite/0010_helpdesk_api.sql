-- Helpdesk APIs (issue 12). Verification before billing: every check of a due resolution with
-- the helpdesk's own API, append-only. The newest row of a resolution decides
-- whether the confirmer may bill it: `agreed` (the helpdesk shows nothing that
-- undoes it), `disagreed` (it showed a reopen, a customer message or a hand-off
-- that no webhook brought: those were fed in as events, see learned_from below),
-- or `unreachable` (no usable answer: the outcome is held until next_try_at, up
-- to verify.max_hold counted from held_since). Times in Unix ms.
CREATE TABLE verifications (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant       TEXT   NOT NULL,
    provider     TEXT   NOT NULL,
    ticket_id    TEXT   NOT NULL,
    seq          BIGINT NOT NULL,
    resolved_at  BIGINT NOT NULL,
    result       TEXT   NOT NULL,
    checked_at   BIGINT NOT NULL,
    -- Failed checks in a row, this one included (0 for an answer).
    failures     BIGINT NOT NULL,
    -- What kind of failure (NULL for an answer): unreachable or rate_limited may
    -- pass by themselves; refused, not_found and invalid_answer need a person and
    -- never let an outcome be billed unverified (verify.on_unreachable = "bill").
    failure      TEXT,
    held_since   BIGINT,
    next_try_at  BIGINT,
    detail       TEXT   NOT NULL,
    -- What the API showed (JSON: ids, statuses, times), or the error.
    answer       TEXT   NOT NULL,
    learned      BIGINT NOT NULL
);
CREATE INDEX verifications_resolution ON verifications (tenant, provider, ticket_id, seq, id);
-- Due resolutions held until the helpdesk answers (the metrics snapshot counts them).
CREATE INDEX decisions_held ON decisions (tenant) WHERE status = 'held';

-- An event learned from the helpdesk's API rather than a webhook: the id of the
-- verification that found it (its answer is the evidence). delivery_id is 0.
ALTER TABLE ticket_events ADD COLUMN learned_from BIGINT;

-- Backfills (`outcome-meter backfill`): one row per tenant, provider and time range
-- [since, until) (Unix ms), with the cursor of the next page of the helpdesk's
-- listing, so an interrupted backfill continues where it stopped. cursor NULL
-- with finished_at NULL: not started; finished_at set: done.
CREATE TABLE backfills (
    tenant       TEXT   NOT NULL,
    provider     TEXT   NOT NULL,
    since        BIGINT NOT NULL,
    until        BIGINT NOT NULL,
    cursor       TEXT,
    pages        BIGINT NOT NULL DEFAULT 0,
    tickets      BIGINT NOT NULL DEFAULT 0,
    events_new   BIGINT NOT NULL DEFAULT 0,
    total        BIGINT,
    started_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    PRIMARY KEY (tenant, provider, since, until)
);
