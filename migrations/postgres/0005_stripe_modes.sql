-- Explicit Stripe modes, a fresh idempotency key for each call, Stripe Connect.

-- Stripe calls made for this outcome's meter event, never reset (a replay resets
-- `attempts`, the retry budget, not this): call N uses the key `<id>:meter_event:<N>`,
-- so a retry never meets a result Stripe saved for an earlier key (a 500 included).
ALTER TABLE outcomes ADD COLUMN calls BIGINT NOT NULL DEFAULT 0;
-- Where `reported` or `dry_run` was reached: live | test | dry_run (Stripe's `livemode`
-- when it answered). NULL: reported before modes were recorded.
ALTER TABLE outcomes ADD COLUMN reported_mode TEXT;
UPDATE outcomes SET reported_mode = 'dry_run' WHERE state = 'dry_run';
-- Stripe Connect: the connected account (`Stripe-Account`), fixed when confirmed so a
-- later reversal goes to the same account.
ALTER TABLE outcomes ADD COLUMN stripe_account TEXT;

-- The mode each call was made in, what Stripe said (`livemode`), and the key sent.
ALTER TABLE stripe_attempts ADD COLUMN mode TEXT;
ALTER TABLE stripe_attempts ADD COLUMN livemode BIGINT;
ALTER TABLE stripe_attempts ADD COLUMN idempotency_key TEXT;
UPDATE stripe_attempts SET mode = 'dry_run' WHERE dry_run = 1;
