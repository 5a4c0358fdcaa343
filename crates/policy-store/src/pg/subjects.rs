//! Blocked subjects (`blocked_subjects`): the per-subject kill switch.

use async_trait::async_trait;
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;

use super::{PgStore, audit, notify};
use crate::error::{DbResult as _, Result, StoreError};
use crate::model::*;
use crate::repo::SubjectStore;
use crate::validate::validate_subject;

#[async_trait]
impl SubjectStore for PgStore {
    async fn is_blocked(&self, id: AppId, subject: &str) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM blocked_subjects WHERE app_id = $1 AND subject = $2)",
        )
        .bind(id)
        .bind(subject)
        .fetch_one(&self.pool)
        .await
        .db()?)
    }

    async fn block_subject(
        &self,
        actor: &str,
        id: AppId,
        subject: &str,
        reason: Option<&str>,
    ) -> Result<BlockOutcome> {
        let mut tx = self.pool.begin().await.db()?;
        let out = self
            .block_subject_in(&mut tx, actor, id, subject, reason)
            .await?;
        tx.commit().await.db()?;
        Ok(out)
    }

    /// Unblocking a subject that is not blocked is a no-op (no audit row).
    async fn unblock_subject(&self, actor: &str, id: AppId, subject: &str) -> Result<()> {
        let mut tx = self.pool.begin().await.db()?;
        let out = self.unblock_subject_in(&mut tx, actor, id, subject).await?;
        tx.commit().await.db()?;
        Ok(out)
    }

    async fn blocked_subjects(&self, id: AppId) -> Result<Vec<BlockedSubject>> {
        let rows: Vec<(i64, String, Option<String>, String, OffsetDateTime)> = sqlx::query_as(
            "SELECT app_id, subject, reason, blocked_by, created_at FROM blocked_subjects \
             WHERE app_id = $1 ORDER BY created_at DESC, subject",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(rows
            .into_iter()
            .map(
                |(app_id, subject, reason, blocked_by, created_at)| BlockedSubject {
                    app_id,
                    subject,
                    reason,
                    blocked_by,
                    created_at,
                },
            )
            .collect())
    }
}

impl PgStore {
    pub(super) async fn block_subject_in(
        &self,
        tx: &mut PgConnection,
        actor: &str,
        id: AppId,
        subject: &str,
        reason: Option<&str>,
    ) -> Result<BlockOutcome> {
        validate_subject(subject)?;
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        let slug: String = sqlx::query_scalar("SELECT slug FROM apps WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .db()?
            .ok_or(StoreError::NotFound)?;
        // The subject is stored and matched exactly as given (no trimming): the gateway
        // compares the token's claim byte for byte.
        let existing: Option<Option<String>> = sqlx::query_scalar(
            "SELECT reason FROM blocked_subjects WHERE app_id = $1 AND subject = $2 FOR UPDATE",
        )
        .bind(id)
        .bind(subject)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let outcome = match existing {
            None => {
                sqlx::query(
                    "INSERT INTO blocked_subjects (app_id, subject, reason, blocked_by) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(subject)
                .bind(reason)
                .bind(actor)
                .execute(&mut *tx)
                .await
                .db()?;
                audit(
                    tx,
                    actor,
                    "subject.block",
                    &slug,
                    None,
                    Some(json!({ "subject": subject, "reason": reason })),
                )
                .await?;
                super::cluster::purge_shared_credentials(tx, id, Some(subject)).await?;
                BlockOutcome::Blocked
            }
            // Blocking again without a (new) reason keeps the stored one.
            Some(old) if reason.is_none() || reason == old.as_deref() => {
                return Ok(BlockOutcome::AlreadyBlocked);
            }
            Some(old) => {
                sqlx::query(
                    "UPDATE blocked_subjects SET reason = $3, blocked_by = $4 \
                     WHERE app_id = $1 AND subject = $2",
                )
                .bind(id)
                .bind(subject)
                .bind(reason)
                .bind(actor)
                .execute(&mut *tx)
                .await
                .db()?;
                audit(
                    tx,
                    actor,
                    "subject.block",
                    &slug,
                    Some(json!({ "subject": subject, "reason": old })),
                    Some(json!({ "subject": subject, "reason": reason })),
                )
                .await?;
                BlockOutcome::ReasonUpdated
            }
        };
        notify(tx, &id.to_string()).await?;
        Ok(outcome)
    }
}

impl PgStore {
    pub(super) async fn unblock_subject_in(
        &self,
        tx: &mut PgConnection,
        actor: &str,
        id: AppId,
        subject: &str,
    ) -> Result<()> {
        let slug: String = sqlx::query_scalar("SELECT slug FROM apps WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .db()?
            .ok_or(StoreError::NotFound)?;
        let removed: Option<Option<String>> = sqlx::query_scalar(
            "DELETE FROM blocked_subjects WHERE app_id = $1 AND subject = $2 RETURNING reason",
        )
        .bind(id)
        .bind(subject)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let Some(reason) = removed else {
            return Ok(());
        };
        audit(
            tx,
            actor,
            "subject.unblock",
            &slug,
            Some(json!({ "subject": subject, "reason": reason })),
            None,
        )
        .await?;
        notify(tx, &id.to_string()).await?;
        Ok(())
    }
}
