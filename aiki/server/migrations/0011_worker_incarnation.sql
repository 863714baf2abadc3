-- Which process holds a worker ID: the SHA-256 of the secret (the incarnation) the worker
-- registered with. While the worker is alive, only a registration with the same
-- incarnation (the same process, on a new session) may take the ID over.

ALTER TABLE aiki_workers ADD COLUMN incarnation bytea;
