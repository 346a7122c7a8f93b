-- One row that `/readyz` rewrites (at most once a second per process) to learn
-- whether storage can take a write: a full disk fails it, a read would not.
CREATE TABLE storage_probe (
    id INTEGER PRIMARY KEY,
    writes BIGINT NOT NULL
);
