-- When a call for the outcome's current identifier first went unanswered or got a 5xx
-- (Stripe may have recorded the event). Stripe deduplicates identifiers for at least 24
-- hours only: past that, sending again could bill twice, so the outcome is parked for an
-- operator instead (`replay --failed --include-in-doubt` after checking Stripe).
ALTER TABLE outcomes ADD COLUMN doubt_since BIGINT;
