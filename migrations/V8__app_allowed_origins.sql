-- stsgate schema, version 8: the web origins each app's browser pages may call the credential
-- API from (CORS, DESIGN §3). Stored as browsers send the Origin header (scheme://host[:port],
-- lowercase, no default port, no path); the store normalises what an admin types
-- (crates/policy-store/src/origin.rs). Empty: no browser page may call the app.
ALTER TABLE apps
    ADD COLUMN allowed_origins TEXT[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT apps_allowed_origins_count CHECK (cardinality(allowed_origins) <= 50);
