-- The billing system an outcome is sent to (issue 15), frozen when it is confirmed:
-- `stripe_meters` (every outcome before this migration), `metronome` or
-- `stripe_usage_records`. Sending, reversing and reconciling follow it, whatever
-- the tenant's `sink` says later.
ALTER TABLE outcomes ADD COLUMN sink TEXT NOT NULL DEFAULT 'stripe_meters';
-- Who is billed there beyond the Stripe customer: the Metronome customer id (or
-- ingest alias), or the legacy subscription item (`si_…`); NULL for meter events.
ALTER TABLE outcomes ADD COLUMN sink_target TEXT;
