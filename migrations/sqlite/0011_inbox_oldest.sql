-- The oldest delivery still waiting in the inbox, found by an index search, not a
-- scan of the whole inbox: every confirmation pass asks it (a resolution is due only
-- when no delivery older than its window's end is still waiting), twice, once inside
-- its write transaction. Without it each pass read every pending row, which on SQLite
-- held the single writer for tens of milliseconds per pass under a backlog.
CREATE INDEX deliveries_pending_received ON deliveries (received_at) WHERE status = 'pending';
