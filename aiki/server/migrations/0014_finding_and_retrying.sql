-- Day two: finding runs by the reference ID people know, retrying failed ones in bulk,
-- and seeing at once that a worker's session ended.

CREATE INDEX aiki_runs_by_reference_id ON aiki_runs (namespace, reference_id, created_at DESC)
    WHERE reference_id IS NOT NULL;
CREATE INDEX aiki_runs_failed_roots ON aiki_runs (workflow, updated_at, id)
    WHERE status = 'failed' AND parent_id IS NULL;

-- The session a worker registered over (NULL: it has none now, its session ended).
ALTER TABLE aiki_workers ADD COLUMN session text;
