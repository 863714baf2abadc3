-- Schedules: recurring starts of a workflow version. The scheduler locks a due schedule row
-- (FOR UPDATE SKIP LOCKED), starts its occurrences' runs and moves next_at on in the same
-- transaction, so with several servers each occurrence fires once; the unique index on
-- (schedule_id, occurrence) in aiki_runs is the second guard.

CREATE TABLE aiki_schedules (
    id            uuid PRIMARY KEY,
    identity      text NOT NULL,         -- 'ref:<reference ID>' or 'def:<definition hash>'
    definition_hash text NOT NULL,
    reference_id  text,
    workflow      text NOT NULL,
    version       text NOT NULL,
    input         jsonb,
    spec          jsonb NOT NULL,
    policy        jsonb NOT NULL,
    options       jsonb NOT NULL,
    status        text NOT NULL CHECK (status IN ('active', 'paused', 'deactivated')),
    anchor        timestamptz NOT NULL,  -- interval occurrences: anchor + k * every
    next_at       timestamptz,           -- the oldest occurrence not yet handled (nominal)
    due_at        timestamptz,           -- next_at plus its jitter: when the scheduler fires
    last_fired_at timestamptz,
    fired         bigint NOT NULL DEFAULT 0,
    skipped       bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- One live schedule per identity; a deactivated one frees its identity.
CREATE UNIQUE INDEX aiki_schedules_identity ON aiki_schedules (identity)
    WHERE status <> 'deactivated';
CREATE INDEX aiki_schedules_due ON aiki_schedules (due_at) WHERE status = 'active';
CREATE INDEX aiki_schedules_listing ON aiki_schedules (created_at DESC, id DESC);

ALTER TABLE aiki_runs ADD COLUMN schedule_id uuid REFERENCES aiki_schedules (id);
ALTER TABLE aiki_runs ADD COLUMN occurrence timestamptz;
CREATE UNIQUE INDEX aiki_runs_occurrence ON aiki_runs (schedule_id, occurrence)
    WHERE schedule_id IS NOT NULL;
