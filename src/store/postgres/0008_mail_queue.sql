-- Accounts by mail (issue #19): messages waiting to be delivered. A row each; the body is
-- sealed with a key from KEYS_DIR (it may carry a one-time code). Claiming a message moves
-- next_attempt_at forward by a lease (FOR UPDATE SKIP LOCKED: one replica per message).
CREATE TABLE mail_queue (
    id uuid PRIMARY KEY,
    recipient text NOT NULL,
    sealed text NOT NULL,
    purpose text NOT NULL,
    user_id uuid,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX mail_queue_due ON mail_queue (next_attempt_at, id);
-- One-time codes sent by mail (password reset), hashed: JSON (`MailCodesRecord`).
ALTER TABLE users ADD COLUMN mail_codes text;
