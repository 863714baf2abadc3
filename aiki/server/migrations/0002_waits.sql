-- Durable waits (sleeps, events, child workflows), run control, timeouts, delayed starts.

ALTER TABLE aiki_runs
    ADD COLUMN parent_id     uuid REFERENCES aiki_runs (id),
    ADD COLUMN child_address text,                -- the parent's replay address of this start
    ADD COLUMN child_seq     integer,
    ADD COLUMN deadline_at   timestamptz,         -- run timeout: fail if not terminal by then
    ADD COLUMN stop_reason   text;                -- why a run was cancelled / paused
CREATE INDEX aiki_runs_parent ON aiki_runs (parent_id) WHERE parent_id IS NOT NULL;
CREATE UNIQUE INDEX aiki_runs_child_step ON aiki_runs (parent_id, child_address, child_seq)
    WHERE parent_id IS NOT NULL;
CREATE INDEX aiki_runs_deadline ON aiki_runs (deadline_at) WHERE deadline_at IS NOT NULL;
CREATE INDEX aiki_runs_queued_since ON aiki_runs (updated_at) WHERE status = 'queued';

-- One row per wait a run reached: kind + key + occurrence (seq) is its replay identity.
CREATE TABLE aiki_waits (
    run_id      uuid NOT NULL REFERENCES aiki_runs (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('sleep', 'event', 'child')),
    key         text NOT NULL,                    -- sleep name | event name | child run ID
    seq         integer NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'completed', 'cut_short', 'timed_out')),
    wake_at     timestamptz,                      -- sleep end, or the wait's timeout
    result      jsonb,                            -- event payload | child outcome
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    PRIMARY KEY (run_id, kind, key, seq)
);
CREATE INDEX aiki_waits_due ON aiki_waits (wake_at) WHERE state = 'pending' AND wake_at IS NOT NULL;
CREATE INDEX aiki_waits_on_child ON aiki_waits (key) WHERE kind = 'child' AND state = 'pending';
CREATE INDEX aiki_waits_pending ON aiki_waits (run_id) WHERE state = 'pending';

-- Events sent to runs, in arrival order per name; a wait consumes the oldest unconsumed one.
CREATE TABLE aiki_events (
    run_id       uuid NOT NULL REFERENCES aiki_runs (id) ON DELETE CASCADE,
    name         text NOT NULL,
    seq          integer NOT NULL,
    reference_id text,
    payload      jsonb,
    consumed_by  integer,                          -- the seq of the wait that consumed it
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, name, seq)
);
CREATE UNIQUE INDEX aiki_events_reference ON aiki_events (run_id, name, reference_id)
    WHERE reference_id IS NOT NULL;

ALTER TABLE aiki_workflow_versions ADD COLUMN event_schemas jsonb;
