-- Task progress: the latest details each running task reported, read by the broadcaster
-- in the same commit-safe windows as transitions (hence tx).

CREATE TABLE aiki_progress (
    run_id  uuid NOT NULL REFERENCES aiki_runs (id) ON DELETE CASCADE,
    address text NOT NULL,
    seq     integer NOT NULL,
    task    text NOT NULL,
    details jsonb,
    at      timestamptz NOT NULL DEFAULT now(),
    tx      xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (run_id, address, seq)
);
CREATE INDEX aiki_progress_tx ON aiki_progress (tx);
