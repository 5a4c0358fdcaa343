-- stsgate schema, version 4: what the admin pages need for troubleshooting and local time.

-- Each admin user's display time zone: an IANA name such as Asia/Shanghai (NULL: UTC). The
-- pages check the name against their time-zone database before saving it.
ALTER TABLE admin_users
    ADD COLUMN display_timezone TEXT
    CONSTRAINT admin_users_display_timezone CHECK (
        display_timezone IS NULL
        OR (display_timezone <> '' AND length(display_timezone) <= 64));

-- Issuance-log subject search, exact or by prefix ("starts with"). text_pattern_ops compares
-- bytes, so a prefix becomes a range scan (subject ~>=~ 'ali' AND subject ~<~ 'alj') whatever
-- the database's collation; an exact subject still walks (at, id) DESC in order. It replaces
-- the (subject, at, id) index of V1, so inserts pay for one subject index, not two.
CREATE INDEX issuance_log_subject_pattern_idx
    ON issuance_log (subject text_pattern_ops, at DESC, id DESC);
DROP INDEX IF EXISTS issuance_log_subject_at_idx;
