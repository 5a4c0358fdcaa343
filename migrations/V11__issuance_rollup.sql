-- Hourly rollup of the issuance log for the dashboard (README "Dashboard"): complete hours
-- only (the current hour is read live), recomputed for the last two hours every minute by
-- whichever replica holds the rollup lock, so rows committed late are still counted.
-- Derived data: safe to TRUNCATE, the next refresh rebuilds the last 8 days.
CREATE TABLE issuance_hourly (
    hour         TIMESTAMPTZ NOT NULL,
    app          TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    requests     BIGINT NOT NULL,
    -- Request latency as a sparse histogram {"bucket": count}; bucket b holds latencies up
    -- to 100 µs * 1.1^(b+1) (policy_store::LatencyHistogram), so hours and apps merge.
    latency      JSONB NOT NULL,
    PRIMARY KEY (hour, app, outcome)
);

-- The busiest subjects and source IPs of each complete hour (top 50 of each).
CREATE TABLE issuance_hourly_top (
    hour     TIMESTAMPTZ NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('subject', 'source_ip')),
    key      TEXT NOT NULL,
    requests BIGINT NOT NULL,
    PRIMARY KEY (hour, kind, key)
);

-- When the rollup last ran and from which hour it is complete.
CREATE TABLE issuance_rollup_state (
    id           INT PRIMARY KEY CHECK (id = 1),
    refreshed_at TIMESTAMPTZ NOT NULL,
    backfilled   BOOLEAN NOT NULL
);
