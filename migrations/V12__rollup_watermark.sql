-- The dashboard's rollup also holds the current hour up to a watermark (README "The dashboard
-- at scale"): issuance_hourly and issuance_hourly_top hold exactly the log rows with
-- `at < rolled_to` (as committed when the rollup was refreshed), so the page reads only the
-- rows after it live instead of the whole current hour. A refresh sets rolled_to to two minutes
-- before refreshed_at. Until now the rollup held complete hours only: a watermark at the start
-- of the hour it was last refreshed in.
ALTER TABLE issuance_rollup_state ADD COLUMN rolled_to TIMESTAMPTZ;
UPDATE issuance_rollup_state SET rolled_to = date_trunc('hour', refreshed_at, 'UTC');
-- Versions from before this one roll up complete hours only and leave the column alone; the
-- default lets their first insert succeed with a value every client can read. Readers take the
-- start of refreshed_at's hour as the watermark whenever rolled_to is not exactly two minutes
-- before refreshed_at, so replicas of both versions can run side by side during an upgrade.
ALTER TABLE issuance_rollup_state
    ALTER COLUMN rolled_to SET DEFAULT '1970-01-01 00:00:00+00',
    ALTER COLUMN rolled_to SET NOT NULL;
