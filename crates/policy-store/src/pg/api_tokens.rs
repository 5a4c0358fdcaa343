//! Bearer tokens of the admin API (`api_tokens`), stored as the SHA-256 of the token.

use async_trait::async_trait;
use serde_json::json;
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use super::{ADMIN_NOTIFY_PAYLOAD, PgStore, audit, decode_err, map_db_error, notify};
use crate::error::{DbResult as _, FieldError, Result, StoreError};
use crate::model::*;
use crate::repo::ApiTokenStore;
use crate::validate::invalid_if_any;

macro_rules! api_token_columns {
    () => {
        "id, name, role, prefix, created_by, created_at, expires_at, last_used_at, revoked_at"
    };
}

fn api_token_from_row(row: &PgRow) -> Result<ApiToken, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(ApiToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role)
            .ok_or_else(|| decode_err(format!("unknown api_tokens.role {role:?}")))?,
        prefix: row.try_get("prefix")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// Whether `name` can name a token: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` (the table's CHECK).
fn valid_token_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn validate(token: &NewApiToken) -> Result<()> {
    let mut errs = Vec::new();
    if !valid_token_name(&token.name) {
        errs.push(FieldError::new(
            "name",
            "1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ));
    }
    if token.token_hash.len() != 64
        || !token
            .token_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        errs.push(FieldError::new(
            "token_hash",
            "the lowercase hex SHA-256 of the token (never the token itself)",
        ));
    }
    if let Some(at) = token.expires_at
        && at <= time::OffsetDateTime::now_utc()
    {
        errs.push(FieldError::new("expires_at", "must be in the future"));
    }
    invalid_if_any(errs)
}

fn summary(t: &ApiToken) -> serde_json::Value {
    json!({
        "name": t.name,
        "role": t.role.as_str(),
        "prefix": t.prefix,
        "expires_at": t.expires_at.map(|at| at.unix_timestamp()),
        "revoked": t.revoked_at.is_some(),
    })
}

#[async_trait]
impl ApiTokenStore for PgStore {
    async fn create_api_token(&self, actor: &str, token: &NewApiToken) -> Result<ApiToken> {
        validate(token)?;
        let mut tx = self.pool.begin().await.db()?;
        let row = sqlx::query(concat!(
            "INSERT INTO api_tokens (name, role, token_hash, prefix, created_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
            api_token_columns!()
        ))
        .bind(&token.name)
        .bind(token.role.as_str())
        .bind(&token.token_hash)
        .bind(&token.prefix)
        .bind(actor)
        .bind(token.expires_at)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            map_db_error(e, || {
                format!("a live API token named {:?} already exists", token.name)
            })
        })?;
        let created = api_token_from_row(&row).db()?;
        audit(
            &mut tx,
            actor,
            "api_token.create",
            &created.name,
            None,
            Some(summary(&created)),
        )
        .await?;
        notify(&mut tx, ADMIN_NOTIFY_PAYLOAD).await?;
        tx.commit().await.db()?;
        Ok(created)
    }

    async fn list_api_tokens(&self) -> Result<Vec<ApiToken>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            api_token_columns!(),
            " FROM api_tokens ORDER BY id DESC"
        ))
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(rows
            .iter()
            .map(api_token_from_row)
            .collect::<Result<_, _>>()
            .db()?)
    }

    async fn api_token_by_id(&self, id: i64) -> Result<Option<ApiToken>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            api_token_columns!(),
            " FROM api_tokens WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        Ok(row.map(|r| api_token_from_row(&r)).transpose().db()?)
    }

    async fn revoke_api_token(&self, actor: &str, id: i64) -> Result<ApiToken> {
        let mut tx = self.pool.begin().await.db()?;
        let before = sqlx::query(concat!(
            "SELECT ",
            api_token_columns!(),
            " FROM api_tokens WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .db()?
        .ok_or(StoreError::NotFound)?;
        let before = api_token_from_row(&before).db()?;
        if before.revoked_at.is_some() {
            return Ok(before);
        }
        let row = sqlx::query(concat!(
            "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 RETURNING ",
            api_token_columns!()
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .db()?;
        let after = api_token_from_row(&row).db()?;
        audit(
            &mut tx,
            actor,
            "api_token.revoke",
            &after.name,
            Some(summary(&before)),
            Some(summary(&after)),
        )
        .await?;
        notify(&mut tx, ADMIN_NOTIFY_PAYLOAD).await?;
        tx.commit().await.db()?;
        Ok(after)
    }

    async fn use_api_token(&self, token_hash: &str) -> Result<Option<ApiToken>> {
        // One round trip: find the live token, and stamp its use when the last stamp is
        // more than a minute old (so a busy script writes once a minute, not per request).
        let row = sqlx::query(concat!(
            "WITH live AS (SELECT ",
            api_token_columns!(),
            " FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL \
               AND (expires_at IS NULL OR expires_at > now())), \
             stamped AS (UPDATE api_tokens SET last_used_at = now() \
               WHERE id IN (SELECT id FROM live) \
                 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute') \
               RETURNING id, last_used_at) \
             SELECT live.id, name, role, prefix, created_by, created_at, expires_at, \
               COALESCE(stamped.last_used_at, live.last_used_at) AS last_used_at, revoked_at \
             FROM live LEFT JOIN stamped ON stamped.id = live.id"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        Ok(row.map(|r| api_token_from_row(&r)).transpose().db()?)
    }
}
