-- Live updates: each transition remembers the transaction that wrote it, so a reader can
-- take transitions in commit-safe windows: every row whose transaction id is below the
-- oldest transaction still running is final, and no later commit can add a row there.

ALTER TABLE aiki_transitions ADD COLUMN tx xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX aiki_transitions_tx ON aiki_transitions (tx);
