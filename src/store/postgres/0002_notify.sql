-- Cache coherence for replicas (issue #9): every change that can invalidate what a
-- replica caches (a user, a session's revocation, a revoked token id) notifies channel
-- `simple_api` from the database itself, so no write path (the service, `store copy`, an
-- operator's SQL) can forget to. Notifications are delivered at commit, once per distinct
-- payload per transaction.

CREATE FUNCTION simple_api_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        payload := 'u:' || CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    ELSIF TG_TABLE_NAME = 'sessions' THEN
        payload := 's:' || CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    ELSE
        payload := 'j:' || NEW.jti;
    END IF;
    PERFORM pg_notify('simple_api', payload);
    RETURN NULL;
END
$$;

-- Inserts count too for users: a replica may have cached "no such user".
CREATE TRIGGER users_notify AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION simple_api_notify();
-- A new session is not revoked, which is what an unknown one reads as: no insert trigger.
CREATE TRIGGER sessions_notify AFTER UPDATE OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION simple_api_notify();
-- Deleting an expired revocation changes nothing a replica may use (the token has expired).
CREATE TRIGGER revoked_jtis_notify AFTER INSERT ON revoked_jtis
    FOR EACH ROW EXECUTE FUNCTION simple_api_notify();

-- The order refresh tokens were issued in, independent of the replicas' clocks: the
-- newest token of a session is the one inserted last.
ALTER TABLE refresh_tokens ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
DROP INDEX refresh_tokens_session;
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id, seq);

-- When a failure window ends, so expired counters can be pruned whatever LOGIN_WINDOW is.
ALTER TABLE login_failures ADD COLUMN window_end timestamptz NOT NULL DEFAULT now();
ALTER TABLE login_failures ALTER COLUMN window_end DROP DEFAULT;
