-- Notifications for the bulk paths migration 2 missed: TRUNCATE fires no row trigger (so
-- `store copy --overwrite` emptying tables told no replica), and a session inserted
-- already revoked (copied in) may replace one a replica cached as live.

CREATE FUNCTION simple_api_notify_flush() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Not a key: every replica empties its cache.
    PERFORM pg_notify('simple_api', 'flush');
    RETURN NULL;
END
$$;

CREATE TRIGGER users_flush AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION simple_api_notify_flush();
CREATE TRIGGER sessions_flush AFTER TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION simple_api_notify_flush();
CREATE TRIGGER revoked_jtis_flush AFTER TRUNCATE ON revoked_jtis
    FOR EACH STATEMENT EXECUTE FUNCTION simple_api_notify_flush();

CREATE TRIGGER sessions_notify_revoked AFTER INSERT ON sessions
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL) EXECUTE FUNCTION simple_api_notify();
