-- The durable core: workflow versions, runs, tasks, transition history, outbox, workers.

CREATE TABLE aiki_workflow_versions (
    workflow      text NOT NULL,
    version       text NOT NULL,
    input_schema  jsonb,
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow, version)
);

CREATE TABLE aiki_runs (
    id           uuid PRIMARY KEY,                -- time-ordered (UUIDv7)
    workflow     text NOT NULL,
    version      text NOT NULL,
    status       text NOT NULL,
    revision     bigint NOT NULL,                 -- bumped by every claim and transition (fencing)
    input        jsonb NOT NULL,
    input_hash   text NOT NULL,
    output       jsonb,
    error        jsonb,
    reference_id text,
    pool         text,
    attempt      integer NOT NULL DEFAULT 1,      -- workflow-level attempt
    retry        jsonb,                           -- per-run retry override
    worker_id    text,                            -- the claimant while running
    wake_at      timestamptz,                     -- awaiting_retry: when to queue again
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX aiki_runs_reference ON aiki_runs (workflow, version, reference_id)
    WHERE reference_id IS NOT NULL;
CREATE INDEX aiki_runs_newest ON aiki_runs (created_at DESC, id DESC);
CREATE INDEX aiki_runs_by_workflow ON aiki_runs (workflow, version, created_at DESC, id DESC);
CREATE INDEX aiki_runs_by_status ON aiki_runs (status, created_at DESC, id DESC);
CREATE INDEX aiki_runs_wake ON aiki_runs (wake_at) WHERE wake_at IS NOT NULL;

-- One row per task call (address = name:sha256(input), seq = occurrence); final when
-- state is completed or failed, 'running' while attempts are being made.
CREATE TABLE aiki_tasks (
    run_id     uuid NOT NULL REFERENCES aiki_runs (id) ON DELETE CASCADE,
    address    text NOT NULL,
    seq        integer NOT NULL,
    name       text NOT NULL,
    state      text NOT NULL CHECK (state IN ('running', 'completed', 'failed')),
    attempts   integer NOT NULL,
    input      jsonb,
    output     jsonb,
    error      jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, address, seq)
);

-- Failed attempts (the successful one is the task row itself). A workflow-level retry
-- deletes the run's failed tasks, and with them these rows, so the tasks run again.
CREATE TABLE aiki_task_attempts (
    run_id      uuid NOT NULL,
    address     text NOT NULL,
    seq         integer NOT NULL,
    attempt     integer NOT NULL,
    error       jsonb,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, address, seq, attempt),
    FOREIGN KEY (run_id, address, seq) REFERENCES aiki_tasks ON DELETE CASCADE
);

CREATE TABLE aiki_transitions (
    id          bigserial PRIMARY KEY,
    run_id      uuid NOT NULL REFERENCES aiki_runs (id) ON DELETE CASCADE,
    from_status text,
    to_status   text NOT NULL,
    revision    bigint NOT NULL,
    reason      text,
    worker_id   text,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX aiki_transitions_run ON aiki_transitions (run_id, id);

-- Runs to publish to Redis Streams. Written in the transaction that queues the run;
-- deleted once published. A lease keeps several dispatchers from publishing one row at once.
CREATE TABLE aiki_outbox (
    id           bigserial PRIMARY KEY,
    run_id       uuid NOT NULL,
    revision     bigint NOT NULL,
    leased_until timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE aiki_workers (
    id            text PRIMARY KEY,
    versions      jsonb NOT NULL,
    pools         jsonb NOT NULL,
    concurrency   integer NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);
