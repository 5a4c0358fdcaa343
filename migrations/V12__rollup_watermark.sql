-- The dashboard's rollup also holds the current hour up to a watermark (README "The dashboard
-- at scale"): issuance_hourly and issuance_hourly_top hold exactly the log rows with
-- `at < rolled_to` (as committed when the rollup was refreshed), so the page reads only the
-- rows after it live instead of the whole current hour. A refresh sets rolled_to to two minutes
-- before refreshed_at. Versions from before this one roll up complete hours only and leave the
-- column alone (its default lets their first insert succeed): readers then take the start of
-- refreshed_at's hour as the watermark, so replicas of both versions can run side by side
-- during a rolling upgrade.
ALTER TABLE issuance_rollup_state ADD COLUMN rolled_to TIMESTAMPTZ NOT NULL DEFAULT '-infinity';
