-- The shared store for replicas (issue #9). Everything the file store keeps.

CREATE TABLE users (
    id uuid PRIMARY KEY,
    email text NOT NULL,
    -- The service's uniqueness key for the email (trimmed, Unicode lower case, as
    -- Email::key computes it); unique here, so the database decides, not a read-then-write.
    email_key text NOT NULL,
    first_name text,
    last_name text,
    role text NOT NULL CHECK (role IN ('user', 'admin')),
    password_hash text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    tokens_valid_after timestamptz NOT NULL,
    kept_session uuid
);
CREATE UNIQUE INDEX users_email_key ON users (email_key);
CREATE INDEX users_created ON users (created_at, id);

CREATE TABLE sessions (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    scope text NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX sessions_user ON sessions (user_id);

-- A session's refresh tokens, newest last; rotated ones are kept for reuse detection.
CREATE TABLE refresh_tokens (
    hash text PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    rotated_at timestamptz
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id, issued_at);

CREATE TABLE revoked_jtis (
    jti text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX revoked_jtis_expiry ON revoked_jtis (expires_at);

CREATE TABLE clients (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    scope text NOT NULL,
    secret_hash text NOT NULL,
    created_at timestamptz NOT NULL,
    secret_rotated_at timestamptz NOT NULL
);

-- Failed logins per account or address, in fixed windows, shared by every replica.
CREATE TABLE login_failures (
    key text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    failures integer NOT NULL
);
