-- Crash-safe clawback reversals.

-- When a reporter first took the outcome to send it to Stripe: never later than Stripe first
-- received it, so Stripe's 24-hour cancellation window is measured from here (not from
-- reported_at, which a lost answer or a crash can delay). Backfilled from the first attempt.
ALTER TABLE outcomes ADD COLUMN first_sent_at BIGINT;
UPDATE outcomes SET first_sent_at = (
    SELECT MIN(a.attempted_at) FROM stripe_attempts a
    WHERE a.outcome_id = outcomes.id AND a.dry_run = 0 AND a.result NOT LIKE 'reversal:%'
) WHERE first_sent_at IS NULL;

-- 1 while a cancel request may have reached Stripe without a definite answer (a network
-- error, a 5xx, or a crash after it was sent). Set before each cancel request, cleared by a
-- definite answer. A later "too old to cancel" refusal then cannot prove the cancel was not
-- applied, so the reversal is parked for an operator instead of switching to a correction.
ALTER TABLE reversals ADD COLUMN cancel_in_doubt BIGINT NOT NULL DEFAULT 0;
