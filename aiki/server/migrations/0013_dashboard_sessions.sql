-- Dashboard sign-ins: the browser holds `aikis_<id>_<secret>` in an HttpOnly cookie, never
-- the API key. Only the SHA-256 of the whole token is kept. A session acts with its key
-- while both are usable: signing out ends it (ended_at) on every server, and revoking or
-- expiring the key ends every session of it.

CREATE TABLE aiki_dashboard_sessions (
    id          text PRIMARY KEY,
    token_hash  bytea NOT NULL,
    key_prefix  text NOT NULL REFERENCES aiki_api_keys (prefix) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz
);

CREATE INDEX aiki_dashboard_sessions_key ON aiki_dashboard_sessions (key_prefix);
