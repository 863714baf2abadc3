-- The order in which a run's steps settled in its executions: the handler received the
-- step's outcome, or gave the step up (withdrawn: a cancelled branch). Replay delivers
-- recorded outcomes in this order, one at a time, so that concurrent branches make the
-- same decisions in every execution. Written by the worker that holds the run (fenced).
CREATE TABLE aiki_step_order (
    run_id    uuid NOT NULL REFERENCES aiki_runs (id) ON DELETE CASCADE,
    position  integer NOT NULL,
    address   text NOT NULL,
    seq       integer NOT NULL,
    withdrawn boolean NOT NULL DEFAULT false,
    error     jsonb,                              -- a step refused without a record of its own
    PRIMARY KEY (run_id, position)
);
CREATE UNIQUE INDEX aiki_step_order_step ON aiki_step_order (run_id, address, seq);

-- A wait its handler gave up takes no event and wakes nothing.
ALTER TABLE aiki_waits DROP CONSTRAINT aiki_waits_state_check;
ALTER TABLE aiki_waits ADD CONSTRAINT aiki_waits_state_check
    CHECK (state IN ('pending', 'completed', 'cut_short', 'timed_out', 'withdrawn'));
