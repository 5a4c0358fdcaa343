//! Admin users (`admin_users`), their sign-in lockout counters and server-side sessions
//! (`admin_sessions`, keyed by the hash of the session token).

use async_trait::async_trait;
use serde_json::json;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};

use super::{ADMIN_NOTIFY_PAYLOAD, PgStore, REDACTED, audit, decode_err, map_db_error, notify};
use crate::error::{DbResult as _, FieldError, Result, StoreError};
use crate::model::*;
use crate::repo::AdminUserStore;
use crate::validate::invalid_if_any;

/// The largest `max_failures` [`AdminUserStore::admit_sign_in`] honours.
const MAX_SIGN_IN_FAILURES: i32 = 1000;

macro_rules! admin_user_columns {
    () => {
        "id, username, password_hash, role, disabled, failed_logins, locked_until, created_at"
    };
}

fn admin_user_from_row(row: &PgRow) -> Result<AdminUser, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Ok(AdminUser {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        role: Role::parse(&role)
            .ok_or_else(|| decode_err(format!("unknown admin_users.role {role:?}")))?,
        disabled: row.try_get("disabled")?,
        failed_logins: row.try_get("failed_logins")?,
        locked_until: row.try_get("locked_until")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Locks every admin user row (serialising role and disable changes, so two admins cannot
/// demote each other at once) and returns the one with `id`.
async fn lock_admin_users(conn: &mut PgConnection, id: i64) -> Result<AdminUser> {
    sqlx::query("SELECT 1 FROM admin_users ORDER BY id FOR UPDATE")
        .execute(&mut *conn)
        .await
        .db()?;
    let row = sqlx::query(concat!(
        "SELECT ",
        admin_user_columns!(),
        " FROM admin_users WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .db()?
    .ok_or(StoreError::NotFound)?;
    admin_user_from_row(&row).db()
}

/// Refuses a change that would leave no enabled admin besides `id`.
async fn ensure_another_admin(conn: &mut PgConnection, id: i64) -> Result<()> {
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM admin_users WHERE role = 'admin' AND NOT disabled AND id <> $1",
    )
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .db()?;
    if others == 0 {
        return Err(StoreError::Invalid(vec![FieldError::new(
            "role",
            "this is the last enabled admin; make another user admin first",
        )]));
    }
    Ok(())
}

#[async_trait]
impl AdminUserStore for PgStore {
    async fn create_admin_user(
        &self,
        actor: &str,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<AdminUser> {
        let mut errs = Vec::new();
        if username.is_empty()
            || username.chars().count() > 64
            || username
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            errs.push(FieldError::new("username", "1 to 64 characters, no spaces"));
        }
        if !password_hash.starts_with("$argon2id$") {
            errs.push(FieldError::new(
                "password_hash",
                "an argon2id PHC string (never a plaintext password)",
            ));
        }
        invalid_if_any(errs)?;
        let mut tx = self.pool.begin().await.db()?;
        let row = sqlx::query(concat!(
            "INSERT INTO admin_users (username, password_hash, role) VALUES ($1, $2, $3) RETURNING ",
            admin_user_columns!()
        ))
        .bind(username)
        .bind(password_hash)
        .bind(role.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_db_error(e, || format!("an admin user named {username:?} already exists")))?;
        let user = admin_user_from_row(&row).db()?;
        audit(
            &mut tx,
            actor,
            "admin_user.create",
            username,
            None,
            Some(json!({ "username": username, "role": role.as_str(), "disabled": false })),
        )
        .await?;
        notify(&mut tx, ADMIN_NOTIFY_PAYLOAD).await?;
        tx.commit().await.db()?;
        Ok(user)
    }

    async fn admin_user_by_name(&self, username: &str) -> Result<Option<AdminUser>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            admin_user_columns!(),
            " FROM admin_users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        Ok(row.map(|r| admin_user_from_row(&r)).transpose().db()?)
    }

    async fn admin_user_by_id(&self, id: i64) -> Result<Option<AdminUser>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            admin_user_columns!(),
            " FROM admin_users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        Ok(row.map(|r| admin_user_from_row(&r)).transpose().db()?)
    }

    async fn list_admin_users(&self) -> Result<Vec<AdminUser>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            admin_user_columns!(),
            " FROM admin_users ORDER BY username"
        ))
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(rows
            .iter()
            .map(admin_user_from_row)
            .collect::<Result<_, _>>()
            .db()?)
    }

    async fn set_admin_user_role(&self, actor: &str, id: i64, role: Role) -> Result<AdminUser> {
        let mut tx = self.pool.begin().await.db()?;
        let before = lock_admin_users(&mut tx, id).await?;
        if before.role == Role::Admin && role != Role::Admin && !before.disabled {
            ensure_another_admin(&mut tx, id).await?;
        }
        let row = sqlx::query(concat!(
            "UPDATE admin_users SET role = $2, updated_at = now() WHERE id = $1 RETURNING ",
            admin_user_columns!()
        ))
        .bind(id)
        .bind(role.as_str())
        .fetch_one(&mut *tx)
        .await
        .db()?;
        let after = admin_user_from_row(&row).db()?;
        if before.role != after.role {
            audit(
                &mut tx,
                actor,
                "admin_user.role",
                &after.username,
                Some(json!({ "role": before.role.as_str() })),
                Some(json!({ "role": after.role.as_str() })),
            )
            .await?;
            notify(&mut tx, ADMIN_NOTIFY_PAYLOAD).await?;
        }
        tx.commit().await.db()?;
        Ok(after)
    }

    async fn set_admin_user_disabled(
        &self,
        actor: &str,
        id: i64,
        disabled: bool,
    ) -> Result<AdminUser> {
        let mut tx = self.pool.begin().await.db()?;
        let before = lock_admin_users(&mut tx, id).await?;
        if disabled && before.role == Role::Admin && !before.disabled {
            ensure_another_admin(&mut tx, id).await?;
        }
        let row = sqlx::query(concat!(
            "UPDATE admin_users SET disabled = $2, updated_at = now(), \
             failed_logins = CASE WHEN $2 THEN failed_logins ELSE 0 END, \
             locked_until = CASE WHEN $2 THEN locked_until ELSE NULL END \
             WHERE id = $1 RETURNING ",
            admin_user_columns!()
        ))
        .bind(id)
        .bind(disabled)
        .fetch_one(&mut *tx)
        .await
        .db()?;
        let after = admin_user_from_row(&row).db()?;
        if disabled {
            sqlx::query("DELETE FROM admin_sessions WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .db()?;
        }
        if before.disabled != disabled {
            let action = if disabled {
                "admin_user.disable"
            } else {
                "admin_user.enable"
            };
            audit(
                &mut tx,
                actor,
                action,
                &after.username,
                Some(json!({ "disabled": before.disabled })),
                Some(json!({ "disabled": disabled })),
            )
            .await?;
            notify(&mut tx, ADMIN_NOTIFY_PAYLOAD).await?;
        }
        tx.commit().await.db()?;
        Ok(after)
    }

    async fn set_admin_user_password(
        &self,
        actor: &str,
        id: i64,
        password_hash: &str,
    ) -> Result<AdminUser> {
        if !password_hash.starts_with("$argon2id$") {
            return Err(StoreError::Invalid(vec![FieldError::new(
                "password_hash",
                "an argon2id PHC string (never a plaintext password)",
            )]));
        }
        let mut tx = self.pool.begin().await.db()?;
        lock_admin_users(&mut tx, id).await?;
        let row = sqlx::query(concat!(
            "UPDATE admin_users SET password_hash = $2, failed_logins = 0, locked_until = NULL, \
             updated_at = now() WHERE id = $1 RETURNING ",
            admin_user_columns!()
        ))
        .bind(id)
        .bind(password_hash)
        .fetch_one(&mut *tx)
        .await
        .db()?;
        let after = admin_user_from_row(&row).db()?;
        sqlx::query("DELETE FROM admin_sessions WHERE user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .db()?;
        // Neither the password nor its hash is recorded.
        audit(
            &mut tx,
            actor,
            "admin_user.password",
            &after.username,
            Some(json!({ "password": REDACTED })),
            Some(json!({ "password": REDACTED, "sessions_ended": true })),
        )
        .await?;
        notify(&mut tx, ADMIN_NOTIFY_PAYLOAD).await?;
        tx.commit().await.db()?;
        Ok(after)
    }

    async fn admit_sign_in(
        &self,
        username: &str,
        max_failures: i32,
        lock_secs: i64,
    ) -> Result<SignInAdmission> {
        // One statement, so concurrent attempts queue on the row lock and each sees the count
        // the previous one left. A live lock refuses and sets the count to max + 1, which is
        // how the outcome reads back from the updated row: admitted means enabled and a count
        // within the limit. A lock that has run out starts a fresh count. Unknown names update
        // the decoy row instead, so every attempt writes one row.
        let row = sqlx::query(concat!(
            "WITH attempt AS ( \
               UPDATE admin_users SET \
                 failed_logins = CASE \
                   WHEN disabled THEN failed_logins \
                   WHEN locked_until > now() THEN $2 + 1 \
                   WHEN locked_until IS NOT NULL THEN 1 \
                   ELSE LEAST(failed_logins + 1, $2 + 1) END, \
                 locked_until = CASE \
                   WHEN disabled OR locked_until > now() THEN locked_until \
                   WHEN (CASE WHEN locked_until IS NOT NULL THEN 1 \
                              ELSE failed_logins + 1 END) >= $2 \
                     THEN now() + make_interval(secs => $3::double precision) \
                   ELSE NULL END \
               WHERE username = $1 \
               RETURNING ",
            admin_user_columns!(),
            "), \
             decoy AS ( \
               UPDATE admin_sign_in_decoy SET unknown_user_attempts = unknown_user_attempts + 1 \
               WHERE NOT EXISTS (SELECT 1 FROM attempt)) \
             SELECT *, NOT disabled AND failed_logins <= $2 AS admitted FROM attempt"
        ))
        .bind(username)
        .bind(max_failures.clamp(1, MAX_SIGN_IN_FAILURES))
        .bind(lock_secs.max(1) as f64)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        let Some(row) = row else {
            return Ok(SignInAdmission::Refused(None));
        };
        let user = admin_user_from_row(&row).db()?;
        Ok(if row.try_get::<bool, _>("admitted").db()? {
            SignInAdmission::Admitted(user)
        } else {
            SignInAdmission::Refused(Some(user))
        })
    }

    async fn record_login_success(&self, user_id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE admin_users SET failed_logins = 0, locked_until = NULL \
             WHERE id = $1 AND (failed_logins <> 0 OR locked_until IS NOT NULL)",
        )
        .bind(user_id)
        .execute(&self.pool)
        .await
        .db()?;
        Ok(())
    }

    async fn create_admin_session(
        &self,
        user_id: i64,
        token_hash: &str,
        csrf_token: &str,
        ttl_secs: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO admin_sessions (id, user_id, csrf_token, expires_at) \
             VALUES ($1, $2, $3, now() + make_interval(secs => $4::double precision))",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(csrf_token)
        .bind(ttl_secs.max(1) as f64)
        .execute(&self.pool)
        .await
        .map_err(|e| map_db_error(e, || "that session already exists".into()))?;
        Ok(())
    }

    async fn admin_session(&self, token_hash: &str) -> Result<Option<AdminSession>> {
        // `last_seen_at` is refreshed at most once a minute, so page views stay read-only
        // for the database most of the time.
        let row = sqlx::query(
            "WITH s AS ( \
               SELECT s.id, s.user_id, s.csrf_token, s.created_at, s.expires_at, s.last_seen_at \
               FROM admin_sessions s JOIN admin_users u ON u.id = s.user_id \
               WHERE s.id = $1 AND s.expires_at > now() AND NOT u.disabled), \
             touched AS ( \
               UPDATE admin_sessions t SET last_seen_at = now() FROM s \
               WHERE t.id = s.id AND s.last_seen_at < now() - interval '1 minute') \
             SELECT s.csrf_token, s.created_at AS session_created_at, s.expires_at, \
               u.id, u.username, u.password_hash, u.role, u.disabled, u.failed_logins, \
               u.locked_until, u.created_at \
             FROM s JOIN admin_users u ON u.id = s.user_id",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(AdminSession {
            user: admin_user_from_row(&row).db()?,
            csrf_token: row.try_get("csrf_token").db()?,
            created_at: row.try_get("session_created_at").db()?,
            expires_at: row.try_get("expires_at").db()?,
        }))
    }

    async fn delete_admin_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM admin_sessions WHERE id = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .db()?;
        Ok(())
    }

    async fn delete_expired_admin_sessions(&self) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= now()")
                .execute(&self.pool)
                .await
                .db()?
                .rows_affected(),
        )
    }
}
