//! Apps and their JWT settings (`apps`, `app_auth`). Secrets are encrypted with the app id
//! and field name as associated data, and re-encrypted under the current key on the next
//! write when an old key wrote them.

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sqlx::PgConnection;
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use time::OffsetDateTime;

use super::{PgStore, REDACTED, audit, decode_err, map_db_error, notify};
use crate::error::{DbResult as _, Result, StoreError};
use crate::model::*;
use crate::origin::normalize_origins;
use crate::redact::mask_secret_id;
use crate::repo::AppStore;
use crate::validate::{invalid_if_any, non_empty, validate_app};

const FIELD_SECRET_KEY: &str = "secret_key";
const FIELD_HS_SECRET: &str = "hs_secret";

macro_rules! app_columns {
    () => {
        "id, slug, name, enabled, region, bucket, mode, role_arn, external_id, secret_id, \
         secret_key_enc, sts_endpoint, duration_default, duration_max, min_remaining, \
         rate_subject_per_minute, rate_app_per_second, allowed_origins, active_template_version, \
         updated_at"
    };
}

macro_rules! auth_columns {
    () => {
        "app_id, issuer, audiences, algorithms, hs_secret_enc, public_keys, jwks_url, \
         user_claim, leeway_seconds"
    };
}

impl PgStore {
    fn app_from_row(&self, row: &PgRow) -> Result<App> {
        let raw = AppRow::from_row(row).db()?;
        let secret_key = self
            .cipher
            .decrypt(raw.id, FIELD_SECRET_KEY, &raw.secret_key_enc)?;
        Ok(App {
            id: raw.id,
            slug: raw.slug,
            name: raw.name,
            enabled: raw.enabled,
            region: raw.region,
            bucket: raw.bucket,
            mode: raw.mode,
            role_arn: raw.role_arn,
            external_id: raw.external_id,
            secret_id: raw.secret_id,
            secret_key,
            sts_endpoint: raw.sts_endpoint,
            duration_default: raw.duration_default,
            duration_max: raw.duration_max,
            min_remaining: raw.min_remaining,
            rate_subject_per_minute: raw.rate_subject_per_minute,
            rate_app_per_second: raw.rate_app_per_second,
            allowed_origins: raw.allowed_origins,
            active_template_version: raw.active_template_version,
            updated_at: raw.updated_at,
        })
    }

    fn auth_from_row(&self, row: &PgRow) -> Result<AppAuth> {
        let raw = AuthRow::from_row(row).db()?;
        let hs_secret = raw
            .hs_secret_enc
            .as_deref()
            .map(|enc| self.cipher.decrypt(raw.app_id, FIELD_HS_SECRET, enc))
            .transpose()?;
        Ok(AppAuth {
            app_id: raw.app_id,
            issuer: raw.issuer,
            audiences: raw.audiences,
            algorithms: raw.algorithms,
            hs_secret,
            public_keys: raw.public_keys,
            jwks_url: raw.jwks_url,
            user_claim: raw.user_claim,
            leeway_seconds: raw.leeway_seconds,
        })
    }

    /// Re-encrypts a stored secret under the current key if it was written by an old one.
    fn rotate(&self, app_id: AppId, field: &str, stored: &str) -> Option<String> {
        if !self.cipher.needs_rotation(stored) {
            return None;
        }
        let plain = self.cipher.decrypt(app_id, field, stored).ok()?;
        Some(self.cipher.encrypt(app_id, field, plain.expose_secret()))
    }
}

// -------------------------------------------------------------------------------------------
// Raw rows (secrets still encrypted)

struct AppRow {
    id: AppId,
    slug: String,
    name: String,
    enabled: bool,
    region: String,
    bucket: String,
    mode: StsMode,
    role_arn: Option<String>,
    external_id: Option<String>,
    secret_id: String,
    secret_key_enc: String,
    sts_endpoint: Option<String>,
    duration_default: i32,
    duration_max: i32,
    min_remaining: Option<i32>,
    rate_subject_per_minute: i32,
    rate_app_per_second: i32,
    allowed_origins: Vec<String>,
    active_template_version: Option<i32>,
    updated_at: OffsetDateTime,
}

impl AppRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        let mode: String = row.try_get("mode")?;
        Ok(Self {
            id: row.try_get("id")?,
            slug: row.try_get("slug")?,
            name: row.try_get("name")?,
            enabled: row.try_get("enabled")?,
            region: row.try_get("region")?,
            bucket: row.try_get("bucket")?,
            mode: StsMode::parse(&mode)
                .ok_or_else(|| decode_err(format!("unknown apps.mode {mode:?}")))?,
            role_arn: row.try_get("role_arn")?,
            external_id: row.try_get("external_id")?,
            secret_id: row.try_get("secret_id")?,
            secret_key_enc: row.try_get("secret_key_enc")?,
            sts_endpoint: row.try_get("sts_endpoint")?,
            duration_default: row.try_get("duration_default")?,
            duration_max: row.try_get("duration_max")?,
            min_remaining: row.try_get("min_remaining")?,
            rate_subject_per_minute: row.try_get("rate_subject_per_minute")?,
            rate_app_per_second: row.try_get("rate_app_per_second")?,
            allowed_origins: row.try_get("allowed_origins")?,
            active_template_version: row.try_get("active_template_version")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// The audit-log view: no secret key (not even its ciphertext), SecretId masked.
    fn audit_json(&self) -> Value {
        json!({
            "id": self.id,
            "slug": self.slug,
            "name": self.name,
            "enabled": self.enabled,
            "region": self.region,
            "bucket": self.bucket,
            "mode": self.mode.as_str(),
            "role_arn": self.role_arn,
            "external_id": self.external_id,
            "secret_id": mask_secret_id(&self.secret_id),
            "secret_key": REDACTED,
            "sts_endpoint": self.sts_endpoint,
            "duration_default": self.duration_default,
            "duration_max": self.duration_max,
            "min_remaining": self.min_remaining,
            "rate_subject_per_minute": self.rate_subject_per_minute,
            "rate_app_per_second": self.rate_app_per_second,
            "allowed_origins": self.allowed_origins,
            "active_template_version": self.active_template_version,
        })
    }
}

struct AuthRow {
    app_id: AppId,
    issuer: Option<String>,
    audiences: Vec<String>,
    algorithms: Vec<String>,
    hs_secret_enc: Option<String>,
    public_keys: Vec<String>,
    jwks_url: Option<String>,
    user_claim: String,
    leeway_seconds: i32,
}

impl AuthRow {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            app_id: row.try_get("app_id")?,
            issuer: row.try_get("issuer")?,
            audiences: row.try_get("audiences")?,
            algorithms: row.try_get("algorithms")?,
            hs_secret_enc: row.try_get("hs_secret_enc")?,
            public_keys: row.try_get("public_keys")?,
            jwks_url: row.try_get("jwks_url")?,
            user_claim: row.try_get("user_claim")?,
            leeway_seconds: row.try_get("leeway_seconds")?,
        })
    }

    fn audit_json(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "audiences": self.audiences,
            "algorithms": self.algorithms,
            "hs_secret": self.hs_secret_enc.as_ref().map(|_| REDACTED),
            "public_keys": self.public_keys,
            "jwks_url": self.jwks_url,
            "user_claim": self.user_claim,
            "leeway_seconds": self.leeway_seconds,
        })
    }
}

#[async_trait]
impl AppStore for PgStore {
    async fn app_by_slug(&self, slug: &str) -> Result<Option<App>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps WHERE slug = $1"
        ))
        .bind(slug)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        row.map(|r| self.app_from_row(&r)).transpose()
    }

    async fn app_by_id(&self, id: AppId) -> Result<Option<App>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        row.map(|r| self.app_from_row(&r)).transpose()
    }

    async fn list_apps(&self) -> Result<Vec<App>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps ORDER BY slug"
        ))
        .fetch_all(&self.pool)
        .await
        .db()?;
        rows.iter().map(|r| self.app_from_row(r)).collect()
    }

    async fn create_app(&self, actor: &str, input: &AppInput) -> Result<App> {
        let mut tx = self.pool.begin().await.db()?;
        let app = self.create_app_in(&mut tx, actor, input).await?;
        tx.commit().await.db()?;
        Ok(app)
    }

    async fn update_app(&self, actor: &str, id: AppId, input: &AppInput) -> Result<App> {
        let mut tx = self.pool.begin().await.db()?;
        let app = self.update_app_in(&mut tx, actor, id, input).await?;
        tx.commit().await.db()?;
        Ok(app)
    }

    async fn set_app_enabled(&self, actor: &str, id: AppId, enabled: bool) -> Result<()> {
        let mut tx = self.pool.begin().await.db()?;
        self.set_app_enabled_in(&mut tx, actor, id, enabled).await?;
        tx.commit().await.db()?;
        Ok(())
    }
    async fn app_auth(&self, id: AppId) -> Result<Option<AppAuth>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            auth_columns!(),
            " FROM app_auth WHERE app_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        row.map(|r| self.auth_from_row(&r)).transpose()
    }

    async fn set_app_auth(&self, actor: &str, id: AppId, input: &AppAuthInput) -> Result<AppAuth> {
        let mut tx = self.pool.begin().await.db()?;
        let auth = self.set_app_auth_in(&mut tx, actor, id, input).await?;
        tx.commit().await.db()?;
        Ok(auth)
    }
}

/// The writers, on the caller's transaction (one call of the trait, or a whole apply).
impl PgStore {
    /// Every app, read on the caller's transaction. `lock` locks their rows against other
    /// writers of the apps (the pages, the API) until the transaction ends, with `FOR NO KEY
    /// UPDATE`: unlike `FOR UPDATE` it does not conflict with the `FOR KEY SHARE` lock a
    /// foreign-key check takes, so issuance (a `shared_credentials` claim references its
    /// app) is never blocked by an apply.
    pub(crate) async fn apps_in(&self, tx: &mut PgConnection, lock: bool) -> Result<Vec<App>> {
        let sql = if lock {
            concat!(
                "SELECT ",
                app_columns!(),
                " FROM apps ORDER BY slug FOR NO KEY UPDATE"
            )
        } else {
            concat!("SELECT ", app_columns!(), " FROM apps ORDER BY slug")
        };
        let rows = sqlx::query(sql).fetch_all(&mut *tx).await.db()?;
        rows.iter().map(|r| self.app_from_row(r)).collect()
    }

    /// An app's JWT settings, read on the caller's transaction.
    pub(super) async fn app_auth_in(
        &self,
        tx: &mut PgConnection,
        id: AppId,
    ) -> Result<Option<AppAuth>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            auth_columns!(),
            " FROM app_auth WHERE app_id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        row.map(|r| self.auth_from_row(&r)).transpose()
    }

    pub(super) async fn create_app_in(
        &self,
        tx: &mut PgConnection,
        actor: &str,
        input: &AppInput,
    ) -> Result<App> {
        invalid_if_any(validate_app(input, true))?;
        let secret_key = input.secret_key.as_ref().expect("validated");
        // Take the id first: the ciphertext is bound to it (associated data).
        let id: i64 = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence('apps', 'id'))")
            .fetch_one(&mut *tx)
            .await
            .db()?;
        let secret_key_enc = self
            .cipher
            .encrypt(id, FIELD_SECRET_KEY, secret_key.expose_secret());
        let row = sqlx::query(concat!(
            "INSERT INTO apps (id, slug, name, enabled, region, bucket, mode, role_arn, \
             external_id, secret_id, secret_key_enc, sts_endpoint, duration_default, \
             duration_max, min_remaining, rate_subject_per_minute, rate_app_per_second, \
             allowed_origins) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $18) \
             RETURNING ",
            app_columns!()
        ))
        .bind(id)
        .bind(&input.slug)
        .bind(input.name.trim())
        .bind(input.enabled)
        .bind(&input.region)
        .bind(&input.bucket)
        .bind(input.mode.as_str())
        .bind(non_empty(&input.role_arn))
        .bind(non_empty(&input.external_id))
        .bind(&input.secret_id)
        .bind(&secret_key_enc)
        .bind(non_empty(&input.sts_endpoint))
        .bind(input.duration_default)
        .bind(input.duration_max)
        .bind(input.min_remaining)
        .bind(input.rate_subject_per_minute)
        .bind(input.rate_app_per_second)
        .bind(normalize_origins(&input.allowed_origins))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            map_db_error(e, || {
                format!("an app with slug {:?} already exists", input.slug)
            })
        })?;
        let raw = AppRow::from_row(&row).db()?;
        audit(
            tx,
            actor,
            "app.create",
            &raw.slug,
            None,
            Some(raw.audit_json()),
        )
        .await?;
        notify(tx, &id.to_string()).await?;
        let app = self.app_from_row(&row)?;
        Ok(app)
    }

    pub(super) async fn update_app_in(
        &self,
        tx: &mut PgConnection,
        actor: &str,
        id: AppId,
        input: &AppInput,
    ) -> Result<App> {
        invalid_if_any(validate_app(input, false))?;
        let before = sqlx::query(concat!(
            "SELECT ",
            app_columns!(),
            " FROM apps WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .db()?
        .ok_or(StoreError::NotFound)?;
        let before = AppRow::from_row(&before).db()?;
        let secret_key_changed = input.secret_key.is_some();
        let secret_key_enc = match &input.secret_key {
            Some(k) => Some(self.cipher.encrypt(id, FIELD_SECRET_KEY, k.expose_secret())),
            None => self.rotate(id, FIELD_SECRET_KEY, &before.secret_key_enc),
        };
        let row = sqlx::query(concat!(
            "UPDATE apps SET slug = $2, name = $3, enabled = $4, region = $5, bucket = $6, \
             mode = $7, role_arn = $8, external_id = $9, secret_id = $10, \
             secret_key_enc = COALESCE($11, secret_key_enc), sts_endpoint = $12, \
             duration_default = $13, duration_max = $14, min_remaining = $15, \
             rate_subject_per_minute = $16, rate_app_per_second = $17, allowed_origins = $18, \
             updated_at = now() \
             WHERE id = $1 RETURNING ",
            app_columns!()
        ))
        .bind(id)
        .bind(&input.slug)
        .bind(input.name.trim())
        .bind(input.enabled)
        .bind(&input.region)
        .bind(&input.bucket)
        .bind(input.mode.as_str())
        .bind(non_empty(&input.role_arn))
        .bind(non_empty(&input.external_id))
        .bind(&input.secret_id)
        .bind(secret_key_enc)
        .bind(non_empty(&input.sts_endpoint))
        .bind(input.duration_default)
        .bind(input.duration_max)
        .bind(input.min_remaining)
        .bind(input.rate_subject_per_minute)
        .bind(input.rate_app_per_second)
        .bind(normalize_origins(&input.allowed_origins))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            map_db_error(e, || {
                format!("an app with slug {:?} already exists", input.slug)
            })
        })?;
        let after = AppRow::from_row(&row).db()?;
        let mut after_json = after.audit_json();
        after_json["secret_key_changed"] = Value::Bool(secret_key_changed);
        audit(
            tx,
            actor,
            "app.update",
            &after.slug,
            Some(before.audit_json()),
            Some(after_json),
        )
        .await?;
        notify(tx, &id.to_string()).await?;
        let app = self.app_from_row(&row)?;
        Ok(app)
    }

    pub(super) async fn set_app_enabled_in(
        &self,
        tx: &mut PgConnection,
        actor: &str,
        id: AppId,
        enabled: bool,
    ) -> Result<()> {
        let (slug, was): (String, bool) =
            sqlx::query_as("SELECT slug, enabled FROM apps WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .db()?
                .ok_or(StoreError::NotFound)?;
        sqlx::query("UPDATE apps SET enabled = $2, updated_at = now() WHERE id = $1")
            .bind(id)
            .bind(enabled)
            .execute(&mut *tx)
            .await
            .db()?;
        if !enabled {
            super::cluster::purge_shared_credentials(tx, id, None).await?;
        }
        let action = if enabled { "app.enable" } else { "app.disable" };
        audit(
            tx,
            actor,
            action,
            &slug,
            Some(json!({ "enabled": was })),
            Some(json!({ "enabled": enabled })),
        )
        .await?;
        notify(tx, &id.to_string()).await?;
        Ok(())
    }

    pub(super) async fn set_app_auth_in(
        &self,
        tx: &mut PgConnection,
        actor: &str,
        id: AppId,
        input: &AppAuthInput,
    ) -> Result<AppAuth> {
        let slug: String = sqlx::query_scalar("SELECT slug FROM apps WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .db()?
            .ok_or(StoreError::NotFound)?;
        let before = sqlx::query(concat!(
            "SELECT ",
            auth_columns!(),
            " FROM app_auth WHERE app_id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .db()?
        .map(|r| AuthRow::from_row(&r))
        .transpose()
        .db()?;
        let stored_hs = before.as_ref().and_then(|b| b.hs_secret_enc.clone());
        // The gateway's own compile step decides: the store never saves settings the gateway
        // would refuse (an app down with 503 app_misconfigured).
        let stored_plain = stored_hs
            .as_deref()
            .map(|enc| self.cipher.decrypt(id, FIELD_HS_SECRET, enc))
            .transpose()?;
        invalid_if_any(crate::jwt::check_auth_input(
            id,
            input,
            stored_plain.as_ref(),
            self.jwt,
        ))?;

        let hs_secret_enc = match (&input.hs_secret, &stored_hs) {
            (Some(s), _) => Some(self.cipher.encrypt(id, FIELD_HS_SECRET, s.expose_secret())),
            (None, Some(stored)) => self.rotate(id, FIELD_HS_SECRET, stored),
            (None, None) => None,
        };
        let mut algorithms: Vec<String> = Vec::with_capacity(input.algorithms.len());
        for a in &input.algorithms {
            if !algorithms.contains(a) {
                algorithms.push(a.clone());
            }
        }
        let audiences: Vec<String> = input
            .audiences
            .iter()
            .map(|a| a.trim().to_owned())
            .collect();
        let row = sqlx::query(concat!(
            "INSERT INTO app_auth (app_id, issuer, audiences, algorithms, hs_secret_enc, \
             public_keys, jwks_url, user_claim, leeway_seconds) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (app_id) DO UPDATE SET issuer = EXCLUDED.issuer, \
             audiences = EXCLUDED.audiences, algorithms = EXCLUDED.algorithms, \
             hs_secret_enc = COALESCE(EXCLUDED.hs_secret_enc, app_auth.hs_secret_enc), \
             public_keys = EXCLUDED.public_keys, jwks_url = EXCLUDED.jwks_url, \
             user_claim = EXCLUDED.user_claim, leeway_seconds = EXCLUDED.leeway_seconds, \
             updated_at = now() \
             RETURNING ",
            auth_columns!()
        ))
        .bind(id)
        .bind(non_empty(&input.issuer))
        .bind(&audiences)
        .bind(&algorithms)
        .bind(hs_secret_enc)
        .bind(&input.public_keys)
        .bind(non_empty(&input.jwks_url))
        .bind(&input.user_claim)
        .bind(input.leeway_seconds)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_db_error(e, || "JWT settings already exist".into()))?;
        let after = AuthRow::from_row(&row).db()?;
        let mut after_json = after.audit_json();
        after_json["hs_secret_changed"] = Value::Bool(input.hs_secret.is_some());
        audit(
            tx,
            actor,
            "auth.update",
            &slug,
            before.as_ref().map(AuthRow::audit_json),
            Some(after_json),
        )
        .await?;
        notify(tx, &id.to_string()).await?;
        let auth = self.auth_from_row(&row)?;
        Ok(auth)
    }
}
