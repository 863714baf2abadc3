-- Finding runs by the reference ID people know, and retrying failed ones in bulk.

CREATE INDEX aiki_runs_by_reference_id ON aiki_runs (namespace, reference_id, created_at DESC)
    WHERE reference_id IS NOT NULL;
CREATE INDEX aiki_runs_failed_roots ON aiki_runs (workflow, updated_at, id)
    WHERE status = 'failed' AND parent_id IS NULL;
