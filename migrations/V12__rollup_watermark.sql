-- The dashboard's rollup also holds the current hour up to a watermark (README "Dashboard"):
-- issuance_hourly and issuance_hourly_top hold exactly the log rows with `at < rolled_to` (as
-- committed when the rollup was refreshed), so the page reads only the rows after it live
-- instead of the whole current hour. Until this migration the rollup held complete hours only,
-- which is a watermark at the start of the hour it was refreshed in.
ALTER TABLE issuance_rollup_state ADD COLUMN rolled_to TIMESTAMPTZ;
UPDATE issuance_rollup_state SET rolled_to = date_trunc('hour', refreshed_at, 'UTC');
ALTER TABLE issuance_rollup_state ALTER COLUMN rolled_to SET NOT NULL;
