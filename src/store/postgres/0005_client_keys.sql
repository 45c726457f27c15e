-- private_key_jwt clients (RFC 7523): a client proves who it is with a secret or with
-- public keys, never both. Rows from before all have a secret.
ALTER TABLE clients ALTER COLUMN secret_hash DROP NOT NULL;
-- A JWK Set (JSON text, as `ClientKeys::to_jwks` writes it): read back whole, never queried
-- into, so text rather than jsonb (jsonb would reorder its members).
ALTER TABLE clients ADD COLUMN jwks text;
ALTER TABLE clients ADD CONSTRAINT clients_one_credential
    CHECK (num_nonnulls(secret_hash, jwks) = 1);

-- Replicas now cache clients too (they are read on every client token and client
-- authentication): a change to one notifies `c:<id>`. As migration 2's function, with
-- clients added.
CREATE OR REPLACE FUNCTION simple_api_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        payload := 'u:' || CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    ELSIF TG_TABLE_NAME = 'sessions' THEN
        payload := 's:' || CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    ELSIF TG_TABLE_NAME = 'clients' THEN
        payload := 'c:' || CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
    ELSE
        payload := 'j:' || NEW.jti;
    END IF;
    PERFORM pg_notify('simple_api', payload);
    RETURN NULL;
END
$$;

-- Inserts count too: the upsert that replaces a client may be an insert (the row was
-- deleted meanwhile), and a replica must never be told less than what changed.
CREATE TRIGGER clients_notify AFTER INSERT OR UPDATE OR DELETE ON clients
    FOR EACH ROW EXECUTE FUNCTION simple_api_notify();
-- `store copy --overwrite` empties clients with TRUNCATE, which fires no row trigger.
CREATE TRIGGER clients_flush AFTER TRUNCATE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION simple_api_notify_flush();

-- The assertion ids (`jti`) each client has used, kept until the assertion expires, so a
-- replayed assertion is refused by every replica: the primary key decides, once.
-- The id is kept as its SHA-256: the client chooses it, of any length, and a long one
-- would not fit a btree entry (the insert would fail instead of answering); a digest is
-- fixed-size, and the raw id is never needed back.
-- No foreign key to clients: a row outlives nothing but its expiry (at most an hour),
-- deleting a client or emptying clients (`store copy --overwrite`) need not touch these
-- rows, and a client copied back in under the same id keeps refusing its replays.
CREATE TABLE client_assertions (
    client_id uuid NOT NULL,
    jti_sha256 bytea NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti_sha256)
);
CREATE INDEX client_assertions_expiry ON client_assertions (expires_at);
