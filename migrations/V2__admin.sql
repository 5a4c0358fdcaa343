-- stsgate schema, version 2: what the admin and auditor pages need (DESIGN §7).

-- Issuance-log search: every filter of the log page can walk an index in (at, id) DESC order
-- and stop after one page, so keyset pagination stays fast on millions of rows.
-- (app, …), (subject, …), tmp_secret_id and the primary key (at, id) exist since V1.
CREATE INDEX issuance_log_outcome_at_id_idx ON issuance_log (outcome, at DESC, id DESC);
-- Superseded by the index above where an older V1 created it.
DROP INDEX IF EXISTS issuance_log_outcome_at_idx;
-- Exact source addresses walk this in order; CIDR blocks (`<<=`) use it as a range scan.
CREATE INDEX issuance_log_source_ip_at_idx ON issuance_log (source_ip, at DESC, id DESC);

-- Admin change-log filters, newest first.
CREATE INDEX admin_audit_actor_idx ON admin_audit (actor, id DESC);
CREATE INDEX admin_audit_target_idx ON admin_audit (target, id DESC);
CREATE INDEX admin_audit_action_idx ON admin_audit (action, id DESC);
