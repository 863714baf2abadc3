-- Namespaces: every run, schedule, worker and workflow version belongs to one (events,
-- tasks, waits and history belong to their run's). What existed moves into 'default'.
-- Reference IDs, schedule identities and versions are unique per namespace.

ALTER TABLE aiki_runs ADD COLUMN namespace text NOT NULL DEFAULT 'default';
ALTER TABLE aiki_schedules ADD COLUMN namespace text NOT NULL DEFAULT 'default';
ALTER TABLE aiki_workers ADD COLUMN namespace text NOT NULL DEFAULT 'default';
ALTER TABLE aiki_workflow_versions ADD COLUMN namespace text NOT NULL DEFAULT 'default';

ALTER TABLE aiki_workflow_versions DROP CONSTRAINT aiki_workflow_versions_pkey;
ALTER TABLE aiki_workflow_versions ADD PRIMARY KEY (namespace, workflow, version);

DROP INDEX aiki_runs_reference;
CREATE UNIQUE INDEX aiki_runs_reference ON aiki_runs (namespace, workflow, version, reference_id)
    WHERE reference_id IS NOT NULL;
DROP INDEX aiki_schedules_identity;
CREATE UNIQUE INDEX aiki_schedules_identity ON aiki_schedules (namespace, identity)
    WHERE status <> 'deactivated';
CREATE INDEX aiki_runs_by_namespace ON aiki_runs (namespace, created_at DESC, id DESC);
