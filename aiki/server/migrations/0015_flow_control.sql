-- Flow control: concurrency limits per key, priorities and fair shares, at one gate.

-- A limit's numbers in a namespace: as last declared by a registration, and as in force
-- (an operator may change them; the next registration that declares other numbers sets
-- both again).
CREATE TABLE aiki_limits (
    namespace text NOT NULL,
    name text NOT NULL,
    per_key integer NOT NULL,
    total integer,
    declared_per_key integer NOT NULL,
    declared_total integer,
    changed_by text,
    changed_at timestamptz,
    PRIMARY KEY (namespace, name)
);

-- Every change of a limit's numbers, by whom (a key's name, or "registration").
CREATE TABLE aiki_limit_changes (
    id bigserial PRIMARY KEY,
    namespace text NOT NULL,
    name text NOT NULL,
    per_key integer NOT NULL,
    total integer,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);

-- The limits a workflow version's runs take a slot of (immutable, like its schemas).
CREATE TABLE aiki_version_limits (
    namespace text NOT NULL,
    workflow text NOT NULL,
    version text NOT NULL,
    name text NOT NULL,
    key_path text,
    on_limit text NOT NULL,
    holds text NOT NULL,
    PRIMARY KEY (namespace, workflow, version, name)
);

-- The key of a limit for an input: the value at a dotted path (a string, an integer or
-- a boolean, as text), or '' for a limit with no key path. The server checks at start
-- that an input has one (`aiki.protocol.limit_key`, which a test holds to this).
CREATE FUNCTION aiki_limit_key(doc jsonb, path text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN path IS NULL THEN ''
        ELSE (SELECT CASE WHEN jsonb_typeof(v) IN ('string', 'boolean')
                            OR (jsonb_typeof(v) = 'number' AND v::text ~ '^-?[0-9]+$')
                          THEN v #>> '{}' END
              FROM (SELECT doc #> string_to_array(path, '.') AS v) picked)
    END
$$;

-- What kinds of slots a version's runs take: NULL (none), 'executing', 'open' or 'mixed'.
CREATE FUNCTION aiki_slots_kind(ns text, wf text, ver text) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN count(*) = 0 THEN NULL
                WHEN bool_and(holds = 'open') THEN 'open'
                WHEN bool_and(holds = 'executing') THEN 'executing'
                ELSE 'mixed' END
    FROM aiki_version_limits
    WHERE namespace = ns AND workflow = wf AND version = ver
$$;

-- The slots a run takes: one per limit its version names, with the key its input gave.
CREATE TABLE aiki_run_slots (
    run_id uuid NOT NULL REFERENCES aiki_runs (id) ON DELETE CASCADE,
    namespace text NOT NULL,
    name text NOT NULL,
    key text NOT NULL,
    holds text NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX aiki_run_slots_by_key ON aiki_run_slots (namespace, name, key);

-- Per run: its priority and fairness key; for a run with slots, which of them it holds
-- ('none', 'all', or 'open': only those held for the run's whole open life), what kinds
-- they are ('executing', 'open', 'mixed'), and since when it waits at the gate (NULL:
-- it does not).
ALTER TABLE aiki_runs
    ADD COLUMN priority smallint NOT NULL DEFAULT 2,
    ADD COLUMN fairness_key text NOT NULL DEFAULT '',
    ADD COLUMN fairness_weight integer NOT NULL DEFAULT 1,
    ADD COLUMN slots_held text,
    ADD COLUMN slots_kind text,
    ADD COLUMN gated_at timestamptz;
CREATE INDEX aiki_runs_gated ON aiki_runs (priority DESC, gated_at, id) WHERE gated_at IS NOT NULL;
CREATE INDEX aiki_runs_gate_groups ON aiki_runs
    (namespace, workflow, version, (COALESCE(pool, '')), fairness_key, priority, gated_at, id)
    WHERE gated_at IS NOT NULL AND slots_held IS NULL;
CREATE INDEX aiki_runs_gated_limited ON aiki_runs (priority DESC, gated_at, id)
    WHERE gated_at IS NOT NULL AND slots_held IS NOT NULL;
CREATE INDEX aiki_runs_holding ON aiki_runs (id) WHERE slots_held IN ('all', 'open');
