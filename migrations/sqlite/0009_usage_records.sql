-- Legacy usage records (issue 15.3). A usage record has no identifier Stripe
-- deduplicates on: the Idempotency-Key is the only protection, kept by Stripe "at
-- least 24 hours". So the call whose key may have been applied (no answer, a 5xx,
-- or a crash during the call) is remembered, set BEFORE the call:
-- the N of its key `<outcome id>:usage_record:<N>` and when that key was first
-- used (Unix ms). Both NULL once an answer settles it. While set, the record is
-- resent only under that key within 23 hours, and after that only once Stripe's
-- usage record summaries say it did not land (docs/usage-records.md).
ALTER TABLE outcomes ADD COLUMN usage_doubt_call BIGINT;
ALTER TABLE outcomes ADD COLUMN usage_doubt_since BIGINT;
-- 1 once Stripe answered a resend under that key with the saved 5xx of the call in
-- doubt (`Idempotent-Replayed: true`): the key will say nothing new for as long as
-- Stripe keeps it, so the record is settled from the summaries without waiting out
-- the 23 hours. Reset with the two columns above.
ALTER TABLE outcomes ADD COLUMN usage_doubt_saved BIGINT NOT NULL DEFAULT 0;
-- A clawback by `action=set`: the quantity set at the record's timestamp, fixed
-- before the first call so every resend repeats it (setting it twice subtracts once).
ALTER TABLE reversals ADD COLUMN usage_set_quantity BIGINT;
