-- Browser sign-in (authorization code + PKCE, OpenID Connect).

-- A client's sign-in settings. A public client (a browser or mobile app) has neither a
-- secret nor keys; every other client has exactly one of them.
ALTER TABLE clients ADD COLUMN public boolean NOT NULL DEFAULT false;
ALTER TABLE clients ADD COLUMN redirect_uris text[] NOT NULL DEFAULT '{}';
ALTER TABLE clients ADD COLUMN post_logout_redirect_uris text[] NOT NULL DEFAULT '{}';
ALTER TABLE clients ADD COLUMN first_party boolean NOT NULL DEFAULT false;
ALTER TABLE clients DROP CONSTRAINT clients_one_credential;
ALTER TABLE clients ADD CONSTRAINT clients_one_credential
    CHECK (num_nonnulls(secret_hash, jwks) = CASE WHEN public THEN 0 ELSE 1 END);

-- Authorization codes, by SHA-256 (hex) of the code: the code's binding (client, redirect
-- URI, PKCE challenge, person, scope, nonce…) as JSON read back whole, and the session
-- its first exchange created. `used_by` is set once, by a conditional UPDATE: that
-- decides which of two replicas exchanging one code is first.
CREATE TABLE auth_codes (
    hash text PRIMARY KEY,
    record text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_by uuid
);
CREATE INDEX auth_codes_expiry ON auth_codes (expires_at);

-- What a person allowed a third-party client; gone with either.
CREATE TABLE consents (
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    scope text NOT NULL,
    granted_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

-- A login through a client (the authorization code flow): that client may revoke it.
ALTER TABLE sessions ADD COLUMN client_id uuid;
