-- Users, sessions (refresh tokens), API keys and the audit log of administrative actions.
-- Secrets are never stored: passwords as argon2id hashes, refresh tokens and API keys as
-- SHA-256 digests of high-entropy random values.

CREATE SCHEMA auth;

CREATE TABLE auth.users (
    user_id       uuid        PRIMARY KEY,
    username      text        NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 100),
    password_hash text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('admin', 'agent', 'viewer')),
    -- An agent acts for this RESO ListAgentKey (and, if configured, its ListOfficeKey).
    agent_key     text,
    office_key    text,
    disabled      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (role <> 'agent' OR agent_key IS NOT NULL)
);

CREATE TABLE auth.refresh_tokens (
    token_id    uuid        PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES auth.users ON DELETE CASCADE,
    token_hash  bytea       NOT NULL UNIQUE,
    -- Tokens rotated from one sign-in form a family: reuse of a rotated token revokes it all.
    family_id   uuid        NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX ON auth.refresh_tokens (user_id);
CREATE INDEX ON auth.refresh_tokens (family_id);

CREATE TABLE auth.api_keys (
    key_id       uuid        PRIMARY KEY,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- The first characters of the key, shown in listings so an operator can tell keys apart.
    prefix       text        NOT NULL,
    key_hash     bytea       NOT NULL UNIQUE,
    scopes       text[]      NOT NULL CHECK (scopes <@ ARRAY['read', 'write', 'import']::text[] AND cardinality(scopes) > 0),
    -- Informational (the audit log names the actor): an access token may outlive its user.
    created_by   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE TABLE auth.audit_log (
    audit_id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL,
    action     text        NOT NULL,
    target     text        NOT NULL,
    details    jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX ON auth.audit_log (at);
