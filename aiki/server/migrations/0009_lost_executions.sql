-- How many times a run's execution was lost: its worker died or was declared dead while
-- running it (a claim released by the sweeper). Past the server's bound the run fails
-- instead of being queued again (a poison pill: a task that crashes or blocks its worker).

ALTER TABLE aiki_runs ADD COLUMN lost_executions integer NOT NULL DEFAULT 0;
