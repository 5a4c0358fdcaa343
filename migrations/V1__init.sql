-- stsgate schema, version 1 (DESIGN.md §6).
-- Applied by policy_store::migrate (refinery history in refinery_schema_history), one
-- transaction per migration, under a session advisory lock.

-- Apps: one tenant each. Secrets are AES-256-GCM ciphertexts `v1:<kid>:<nonce>:<ct>` bound to
-- (app id, field name); see crates/policy-store/src/crypto.rs.
CREATE TABLE apps (
    id                      BIGSERIAL PRIMARY KEY,
    slug                    TEXT NOT NULL UNIQUE
                            CONSTRAINT apps_slug_format CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name                    TEXT NOT NULL,
    enabled                 BOOLEAN NOT NULL DEFAULT TRUE,
    region                  TEXT NOT NULL CHECK (region <> ''),
    bucket                  TEXT NOT NULL CHECK (bucket <> ''),
    mode                    TEXT NOT NULL CHECK (mode IN ('federation_token', 'assume_role')),
    role_arn                TEXT,
    external_id             TEXT,
    secret_id               TEXT NOT NULL,
    secret_key_enc          TEXT NOT NULL CHECK (secret_key_enc LIKE 'v1:%'),
    sts_endpoint            TEXT,
    duration_default        INT NOT NULL,
    duration_max            INT NOT NULL,
    min_remaining           INT,
    rate_subject_per_minute INT NOT NULL DEFAULT 0,
    rate_app_per_second     INT NOT NULL DEFAULT 0,
    active_template_version INT,
    created_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT apps_durations CHECK (
        duration_default > 0 AND duration_max > 0
        AND duration_default <= duration_max AND duration_max <= 129600),
    CONSTRAINT apps_min_remaining CHECK (min_remaining IS NULL OR min_remaining >= 0),
    CONSTRAINT apps_rates CHECK (rate_subject_per_minute >= 0 AND rate_app_per_second >= 0),
    CONSTRAINT apps_assume_role_needs_role_arn CHECK (
        mode <> 'assume_role' OR (role_arn IS NOT NULL AND role_arn <> ''))
);

-- JWT settings of an app (DESIGN.md §4 "JWT").
CREATE TABLE app_auth (
    app_id         BIGINT PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    issuer         TEXT,
    audiences      TEXT[] NOT NULL DEFAULT '{}',
    algorithms     TEXT[] NOT NULL DEFAULT '{}',
    hs_secret_enc  TEXT CHECK (hs_secret_enc IS NULL OR hs_secret_enc LIKE 'v1:%'),
    public_keys    TEXT[] NOT NULL DEFAULT '{}',
    jwks_url       TEXT,
    user_claim     TEXT NOT NULL DEFAULT 'sub' CHECK (user_claim <> ''),
    leeway_seconds INT NOT NULL DEFAULT 60 CHECK (leeway_seconds >= 0),
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Policy templates: every saved version is kept (diff, rollback); the app points at the
-- active one.
CREATE TABLE policy_templates (
    app_id     BIGINT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    version    INT NOT NULL CHECK (version > 0),
    document   JSONB NOT NULL,
    author     TEXT NOT NULL,
    note       TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, version)
);

ALTER TABLE apps
    ADD CONSTRAINT apps_active_template_fk
    FOREIGN KEY (id, active_template_version)
    REFERENCES policy_templates (app_id, version);

-- Kill switch per user (DESIGN.md §4).
CREATE TABLE blocked_subjects (
    app_id     BIGINT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    subject    TEXT NOT NULL,
    reason     TEXT,
    blocked_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, subject)
);

-- Admin page users (argon2id PHC hashes) and their server-side sessions.
CREATE TABLE admin_users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE CHECK (username <> ''),
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'auditor')),
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    failed_logins INT NOT NULL DEFAULT 0,
    locked_until  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE admin_sessions (
    -- Hash of the session token; the token itself lives only in the cookie.
    id           TEXT PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES admin_users (id) ON DELETE CASCADE,
    csrf_token   TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX admin_sessions_user_idx ON admin_sessions (user_id);
CREATE INDEX admin_sessions_expires_idx ON admin_sessions (expires_at);

-- Issuance log: one row per credential request outcome (DESIGN.md §5.7).
-- APPEND-ONLY: the application only ever INSERTs here (and stsgate_ensure_issuance_partitions
-- moves rows out of the default partition into a new monthly one). Never UPDATE or DELETE
-- rows; retention is done by detaching and dropping whole monthly partitions. Where the
-- database allows separate roles, grant the application role INSERT/SELECT only.
-- Never holds TmpSecretKey, the session token or the JWT.
CREATE TABLE issuance_log (
    id               BIGINT GENERATED ALWAYS AS IDENTITY,
    at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    app              TEXT NOT NULL,
    subject          TEXT,
    outcome          TEXT NOT NULL CHECK (outcome IN (
                         'issued', 'cached', 'denied', 'rate_limited',
                         'upstream_error', 'invalid_token', 'bad_request')),
    http_status      SMALLINT NOT NULL,
    error_code       TEXT,
    request_id       TEXT NOT NULL,
    sts_request_id   TEXT,
    tmp_secret_id    VARCHAR(1024),
    policy_hash      TEXT,
    template_version INT,
    actions          TEXT[] NOT NULL DEFAULT '{}',
    prefix           TEXT,
    duration_seconds INT,
    expired_time     TIMESTAMPTZ,
    source_ip        INET,
    user_agent       TEXT,
    latency_us       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (at, id)
) PARTITION BY RANGE (at);

-- Catches rows outside every monthly partition, so an insert never fails for lack of one.
CREATE TABLE issuance_log_default PARTITION OF issuance_log DEFAULT;

-- The primary key (at, id) already serves "newest first" scans backwards; every extra index
-- is paid on each insert, so only the filters the log search needs get one.
CREATE INDEX issuance_log_app_at_idx ON issuance_log (app, at DESC, id DESC);
CREATE INDEX issuance_log_subject_at_idx ON issuance_log (subject, at DESC, id DESC);
CREATE INDEX issuance_log_tmp_secret_id_idx ON issuance_log (tmp_secret_id)
    WHERE tmp_secret_id IS NOT NULL;

-- Creates the monthly partitions issuance_log_yYYYYmMM (UTC months) from the current month
-- to `months_ahead` months later. Idempotent and safe to call from several replicas at once
-- (transaction-scoped advisory lock). Rows that already landed in the default partition for a
-- month being created are moved into the new partition. Returns the number created.
CREATE FUNCTION stsgate_ensure_issuance_partitions(months_ahead INT)
RETURNS INT
LANGUAGE plpgsql
AS $$
DECLARE
    first_month DATE := date_trunc('month', now() AT TIME ZONE 'UTC')::DATE;
    lo          DATE;
    hi          DATE;
    lo_ts       TIMESTAMPTZ;
    hi_ts       TIMESTAMPTZ;
    part        TEXT;
    created     INT := 0;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and 120, got %', months_ahead;
    END IF;
    -- 'STSGPART'
    PERFORM pg_advisory_xact_lock(6004515768945955412);
    FOR i IN 0..months_ahead LOOP
        lo := (first_month + make_interval(months => i))::DATE;
        hi := (lo + INTERVAL '1 month')::DATE;
        lo_ts := lo::TIMESTAMP AT TIME ZONE 'UTC';
        hi_ts := hi::TIMESTAMP AT TIME ZONE 'UTC';
        part := format('issuance_log_y%sm%s', to_char(lo, 'YYYY'), to_char(lo, 'MM'));
        IF to_regclass(format('%I.%I', current_schema(), part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I (LIKE issuance_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                part);
            EXECUTE format(
                'WITH moved AS (DELETE FROM issuance_log_default WHERE at >= %L AND at < %L RETURNING *) '
                'INSERT INTO %I SELECT * FROM moved',
                lo_ts, hi_ts, part);
            EXECUTE format(
                'ALTER TABLE issuance_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                part, lo_ts, hi_ts);
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

SELECT stsgate_ensure_issuance_partitions(3);

-- Who changed what in the admin pages, before and after (secrets redacted).
CREATE TABLE admin_audit (
    id     BIGSERIAL PRIMARY KEY,
    at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before JSONB,
    after  JSONB
);
CREATE INDEX admin_audit_at_idx ON admin_audit (at);
