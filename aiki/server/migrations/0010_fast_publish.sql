-- Starts are published by the server that committed them right after the commit, and
-- their outbox row is deleted when the run is claimed: the claim finds it by run.

CREATE INDEX aiki_outbox_by_run ON aiki_outbox (run_id);
