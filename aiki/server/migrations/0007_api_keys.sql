-- API keys: `aiki_<prefix>_<secret>`. The prefix names the key (shown in listings and the
-- audit trail); only the SHA-256 of the whole key is kept, never the key. A key acts with
-- one role in one namespace (NULL: every namespace, for admin keys), until it expires or
-- is revoked; revoking sets revoked_at, and every server refuses the key from then on.

CREATE TABLE aiki_api_keys (
    prefix       text PRIMARY KEY,
    key_hash     bytea NOT NULL,
    role         text NOT NULL CHECK (role IN ('viewer', 'client', 'worker', 'admin')),
    namespace    text,
    name         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CHECK (namespace IS NOT NULL OR role = 'admin')
);
