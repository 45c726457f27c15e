-- Accounts by mail (issue #19), part 2: whether the owner of the address proved it, and
-- where an account waits to move (a change of address not confirmed yet), so the code
-- sent to the new address finds its account. Accounts from before verification are not
-- verified: nobody proved their addresses.
ALTER TABLE users ADD COLUMN email_verified boolean NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN moving_to_key text;
CREATE INDEX users_moving_to ON users (moving_to_key) WHERE moving_to_key IS NOT NULL;
