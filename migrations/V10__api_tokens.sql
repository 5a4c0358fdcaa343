-- stsgate schema, version 10: bearer tokens for the admin API (/api/v1/…).
--
-- A token is shown once when it is created; only its SHA-256 is kept. `prefix` (the first
-- characters of the token, `stsg_` and a few more) lets a list tell tokens apart without
-- holding anything that can be used. A revoked token keeps its row (the change log names it).
CREATE TABLE api_tokens (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    role         TEXT NOT NULL CHECK (role IN ('admin', 'auditor')),
    token_hash   TEXT NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    prefix       TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ
);
-- A name names one live token; a revoked token's name can be used again.
CREATE UNIQUE INDEX api_tokens_live_name_idx ON api_tokens (name) WHERE revoked_at IS NULL;
