-- How many events a run has received (duplicates aside): past the server's bound
-- (--max-events-per-run) a new event to it is refused, so no sender can grow one run's
-- history without end.

ALTER TABLE aiki_runs ADD COLUMN events_received integer NOT NULL DEFAULT 0;
UPDATE aiki_runs r SET events_received = e.n
FROM (SELECT run_id, count(*) AS n FROM aiki_events GROUP BY run_id) e WHERE e.run_id = r.id;
