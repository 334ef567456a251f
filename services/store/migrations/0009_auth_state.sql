-- Sign-in state that must be checked on every request, not only at sign-in.
--
-- * Signing keys generated per installation (used when KEH_JWT_SECRET is not set): the
--   newest signs, older ones verify until `retired_at`. Readable only by the roles that
--   sign or verify access tokens; written by the owner (`kubeestatehub migrate`,
--   `kubeestatehub signing-keys rotate`).
-- * A per-user token epoch: any change that must end a user's current access tokens
--   (disabled, role or keys changed, password changed) bumps it, and tokens carry the epoch
--   they were issued at.
-- * Every change to a user, a session or the keys is announced on the channel `keh_auth`
--   (`user:<id>`, `session:<family id>`, `keys`), so every replica drops what it cached at
--   once. The triggers make manual SQL changes count too.
-- * A canonical username (NFKC, case-folded, UTS #39 skeleton) that must be unique, so
--   `AGENTA` beside `agenta` or a Cyrillic `аdmin` beside `admin` cannot be created. The
--   application fills it (the skeleton needs Unicode tables PostgreSQL does not have).
-- * Failed sign-ins per account, for a capped exponential delay.

CREATE TABLE auth.signing_keys (
    kid        text        PRIMARY KEY,
    secret     bytea       NOT NULL CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- After this instant the key neither signs nor verifies.
    retired_at timestamptz
);

ALTER TABLE auth.users
    ADD COLUMN token_epoch  bigint NOT NULL DEFAULT 0,
    ADD COLUMN username_key text;
CREATE UNIQUE INDEX users_canonical_username ON auth.users (username_key);

CREATE TABLE auth.sign_in_failures (
    username_key  text        PRIMARY KEY,
    failures      integer     NOT NULL,
    last_failure  timestamptz NOT NULL DEFAULT now(),
    blocked_until timestamptz NOT NULL DEFAULT now()
);
-- Rows of names nobody has failed on for a day are cleared as failures are recorded.
CREATE INDEX ON auth.sign_in_failures (last_failure);

CREATE FUNCTION auth.bump_token_epoch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.role IS DISTINCT FROM OLD.role
       OR NEW.agent_key IS DISTINCT FROM OLD.agent_key
       OR NEW.office_key IS DISTINCT FROM OLD.office_key
       OR NEW.disabled IS DISTINCT FROM OLD.disabled
       OR NEW.password_hash IS DISTINCT FROM OLD.password_hash
       OR NEW.username IS DISTINCT FROM OLD.username THEN
        NEW.token_epoch := OLD.token_epoch + 1;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER users_token_epoch BEFORE UPDATE ON auth.users
    FOR EACH ROW EXECUTE FUNCTION auth.bump_token_epoch();

CREATE FUNCTION auth.notify_user() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keh_auth', 'user:' || OLD.user_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER users_notify AFTER UPDATE OR DELETE ON auth.users
    FOR EACH ROW EXECUTE FUNCTION auth.notify_user();

CREATE FUNCTION auth.notify_session() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keh_auth', 'session:' || OLD.family_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER refresh_tokens_notify AFTER UPDATE OF revoked_at ON auth.refresh_tokens
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION auth.notify_session();
CREATE TRIGGER refresh_tokens_notify_delete AFTER DELETE ON auth.refresh_tokens
    FOR EACH ROW EXECUTE FUNCTION auth.notify_session();

CREATE FUNCTION auth.notify_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keh_auth', 'keys');
    RETURN NULL;
END
$$;
CREATE TRIGGER signing_keys_notify AFTER INSERT OR UPDATE OR DELETE ON auth.signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION auth.notify_keys();

-- Both APIs verify access tokens, so both read the keys and the state behind a token; only
-- the query API (which serves sign-in) writes sign-in state.
GRANT SELECT ON auth.signing_keys TO keh_query, keh_command;
-- Only what the check of a token reads: never a password hash or a refresh-token digest.
GRANT SELECT (user_id, token_epoch, disabled) ON auth.users TO keh_command;
GRANT SELECT (family_id, user_id, revoked_at) ON auth.refresh_tokens TO keh_command;
GRANT SELECT, INSERT, UPDATE, DELETE ON auth.sign_in_failures TO keh_query;
