-- Second factors (TOTP, recovery codes): one JSON document per user, read back whole
-- (`MfaRecord`); the TOTP secret in it is sealed with a key from KEYS_DIR, never in clear.
ALTER TABLE users ADD COLUMN mfa text;
-- How a login's person signed in (RFC 8176 `amr`): its refreshed tokens say it too.
ALTER TABLE sessions ADD COLUMN amr text[] NOT NULL DEFAULT '{}';
