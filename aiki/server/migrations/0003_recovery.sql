-- Fault tolerance: claim freshness, publish times for redelivery, worker liveness.

ALTER TABLE aiki_runs
    ADD COLUMN claimed_at   timestamptz,          -- last claim or heartbeat of its worker
    ADD COLUMN published_at timestamptz;          -- last time the run was put on its stream
CREATE INDEX aiki_runs_claims ON aiki_runs (claimed_at) WHERE status = 'running';
CREATE INDEX aiki_runs_unpublished ON aiki_runs (published_at) WHERE status = 'queued';
CREATE INDEX aiki_runs_by_worker ON aiki_runs (worker_id) WHERE status = 'running';

ALTER TABLE aiki_workers ADD COLUMN alive boolean NOT NULL DEFAULT true;
