-- Refresh-token families (issue #15): every refresh token names its session and carries
-- the family's secret, whose SHA-256 the session keeps here, so a token of the family is
-- recognised however many rotations ago it was replaced. `refresh_tokens` then holds a
-- session's current token and those superseded within the grace window, nothing older.
-- Sessions from before (NULL) keep their rows for their expiry and revocation, but their
-- refresh tokens, which carry no secret, are refused: their holders log in again.
ALTER TABLE sessions ADD COLUMN family text;
