-- stsgate schema, version 7: cluster mode through the shared PostgreSQL (DESIGN §8).
--
-- Three tables, all written by the gateway replicas themselves (crates/policy-store/src/pg/
-- cluster.rs); nothing here is an admin setting, so no change-log rows and no notifications.

-- Membership: one row per running replica, beaten about once a second. A replica whose last
-- beat is older than three beats is out; the live count divides the per-subject limits.
-- Times are the database's clock, so replicas' clocks do not matter.
CREATE TABLE cluster_members (
    id          UUID PRIMARY KEY,
    host        TEXT NOT NULL,
    public_addr TEXT NOT NULL,
    admin_addr  TEXT NOT NULL,
    version     TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_beat   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Each app's STS-calls-per-second budget, shared by the cluster: a GCRA cell (the theoretical
-- arrival time, Unix seconds). Taking a token moves it on by 1/rate in one atomic statement;
-- nothing is held by a replica, so a dead replica holds no share.
CREATE TABLE sts_budget (
    app_id BIGINT PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    tat    DOUBLE PRECISION NOT NULL DEFAULT 0
);

-- Takes one token of `p_app`'s budget: `p_interval` is 1/rate seconds, `p_burst` how far
-- ahead of the clock the cell may run (burst tokens × interval). Returns 0 when the token was
-- granted, else the seconds until one will be. Called as one statement; the row lock
-- serialises replicas, and the clock is read after the lock is held.
CREATE FUNCTION sts_budget_take(p_app BIGINT, p_interval DOUBLE PRECISION, p_burst DOUBLE PRECISION)
RETURNS DOUBLE PRECISION LANGUAGE plpgsql AS $$
DECLARE
    cell  DOUBLE PRECISION;
    now_s DOUBLE PRECISION;
    base  DOUBLE PRECISION;
BEGIN
    SELECT tat INTO cell FROM sts_budget WHERE app_id = p_app FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO sts_budget (app_id) VALUES (p_app) ON CONFLICT (app_id) DO NOTHING;
        SELECT tat INTO cell FROM sts_budget WHERE app_id = p_app FOR UPDATE;
    END IF;
    now_s := extract(epoch FROM clock_timestamp());
    base := greatest(cell, now_s);
    IF base + p_interval - now_s <= p_burst THEN
        UPDATE sts_budget SET tat = base + p_interval WHERE app_id = p_app;
        RETURN 0;
    END IF;
    RETURN base + p_interval - p_burst - now_s;
END
$$;

-- Credentials shared between replicas, one row per cache key. `key_hash` is the SHA-256 of
-- the cache key; `sealed` is the credential under the master key (AES-GCM, the cache key as
-- associated data). A row with no `sealed` is a claim: `claimed_by` is minting it and the
-- others wait for it until `claim_until`. Rows past `reuse_until` are purged.
CREATE TABLE shared_credentials (
    key_hash     TEXT PRIMARY KEY,
    app_id       BIGINT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    subject_hash TEXT NOT NULL,
    sealed       TEXT,
    reuse_until  TIMESTAMPTZ,
    claimed_by   UUID,
    claim_until  TIMESTAMPTZ NOT NULL,
    CONSTRAINT shared_credentials_sealed_or_claimed CHECK ((sealed IS NULL) = (reuse_until IS NULL))
);
CREATE INDEX shared_credentials_subject ON shared_credentials (app_id, subject_hash);
CREATE INDEX shared_credentials_reuse_until ON shared_credentials (reuse_until);
