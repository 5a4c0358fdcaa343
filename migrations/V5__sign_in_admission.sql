-- stsgate schema, version 5: sign-in admission for the admin pages.
--
-- Every sign-in attempt runs one statement that counts it before any password is checked
-- (crates/policy-store/src/pg/admin_users.rs, `admit_sign_in`). For an existing user it
-- updates that user's row; for a username that does not exist it updates this one row
-- instead, so every attempt writes exactly one row and the database work does not tell
-- which usernames exist.
CREATE TABLE admin_sign_in_decoy (
    id                    BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    unknown_user_attempts BIGINT NOT NULL DEFAULT 0
);
INSERT INTO admin_sign_in_decoy DEFAULT VALUES;
