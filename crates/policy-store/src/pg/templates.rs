//! Policy templates (`policy_templates`): numbered versions per app, one of them active.

use async_trait::async_trait;
use serde_json::json;
use sqlx::PgConnection;
use sqlx::Row as _;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use super::{PgStore, audit, notify};
use crate::error::{DbResult as _, Result, StoreError};
use crate::model::*;
use crate::repo::TemplateStore;
use crate::template::TemplateDocument;

macro_rules! template_columns {
    () => {
        "app_id, version, document, author, note, created_at"
    };
}

fn template_from_row(row: &PgRow) -> Result<PolicyTemplateVersion, sqlx::Error> {
    let Json(document): Json<TemplateDocument> = row.try_get("document")?;
    Ok(PolicyTemplateVersion {
        app_id: row.try_get("app_id")?,
        version: row.try_get("version")?,
        document,
        author: row.try_get("author")?,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
    })
}

/// The statements marked shared by every user, with their reasons, for the change log
/// (`[{"statement": 2, "reason": "…"}]`, numbered from 1 as the editor shows them).
fn shared_reasons(document: &TemplateDocument) -> serde_json::Value {
    document
        .statements
        .iter()
        .enumerate()
        .filter_map(|(i, st)| {
            st.shared
                .as_ref()
                .map(|s| json!({ "statement": i + 1, "reason": s.reason }))
        })
        .collect()
}

#[async_trait]
impl TemplateStore for PgStore {
    async fn save_template(
        &self,
        actor: &str,
        id: AppId,
        document: &TemplateDocument,
        note: Option<&str>,
    ) -> Result<PolicyTemplateVersion> {
        let mut tx = self.pool.begin().await.db()?;
        let saved = self
            .save_template_in(&mut tx, actor, id, document, note)
            .await?;
        tx.commit().await.db()?;
        Ok(saved)
    }

    async fn active_template(&self, id: AppId) -> Result<Option<PolicyTemplateVersion>> {
        let row = sqlx::query(
            "SELECT t.app_id, t.version, t.document, t.author, t.note, t.created_at \
             FROM apps a JOIN policy_templates t \
               ON t.app_id = a.id AND t.version = a.active_template_version \
             WHERE a.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        Ok(row.map(|r| template_from_row(&r)).transpose().db()?)
    }

    async fn template_versions(&self, id: AppId) -> Result<Vec<PolicyTemplateVersion>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            template_columns!(),
            " FROM policy_templates WHERE app_id = $1 ORDER BY version DESC"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(rows
            .iter()
            .map(template_from_row)
            .collect::<Result<_, _>>()
            .db()?)
    }

    async fn template_version(
        &self,
        id: AppId,
        version: i32,
    ) -> Result<Option<PolicyTemplateVersion>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            template_columns!(),
            " FROM policy_templates WHERE app_id = $1 AND version = $2"
        ))
        .bind(id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .db()?;
        Ok(row.map(|r| template_from_row(&r)).transpose().db()?)
    }

    async fn activate_template(&self, actor: &str, id: AppId, version: i32) -> Result<()> {
        let mut tx = self.pool.begin().await.db()?;
        let (slug, active): (String, Option<i32>) = sqlx::query_as(
            "SELECT slug, active_template_version FROM apps WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .db()?
        .ok_or(StoreError::NotFound)?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM policy_templates WHERE app_id = $1 AND version = $2)",
        )
        .bind(id)
        .bind(version)
        .fetch_one(&mut *tx)
        .await
        .db()?;
        if !exists {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE apps SET active_template_version = $2, updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(version)
        .execute(&mut *tx)
        .await
        .db()?;
        audit(
            &mut tx,
            actor,
            "template.activate",
            &slug,
            Some(json!({ "active_version": active })),
            Some(json!({ "active_version": version })),
        )
        .await?;
        notify(&mut tx, &id.to_string()).await?;
        tx.commit().await.db()?;
        Ok(())
    }
}

/// The writer, on the caller's transaction (one save, or a whole apply).
impl PgStore {
    pub(super) async fn save_template_in(
        &self,
        tx: &mut PgConnection,
        actor: &str,
        id: AppId,
        document: &TemplateDocument,
        note: Option<&str>,
    ) -> Result<PolicyTemplateVersion> {
        document.validate().map_err(StoreError::Invalid)?;
        let note = note.map(str::trim).filter(|n| !n.is_empty());
        // Locking the app row serialises version numbering per app.
        let (slug, active): (String, Option<i32>) = sqlx::query_as(
            "SELECT slug, active_template_version FROM apps WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .db()?
        .ok_or(StoreError::NotFound)?;
        let row = sqlx::query(concat!(
            "INSERT INTO policy_templates (app_id, version, document, author, note) \
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4 \
             FROM policy_templates WHERE app_id = $1 \
             RETURNING ",
            template_columns!()
        ))
        .bind(id)
        .bind(Json(document))
        .bind(actor)
        .bind(note)
        .fetch_one(&mut *tx)
        .await
        .db()?;
        let saved = template_from_row(&row).db()?;
        sqlx::query(
            "UPDATE apps SET active_template_version = $2, updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(saved.version)
        .execute(&mut *tx)
        .await
        .db()?;
        audit(
            tx,
            actor,
            "template.save",
            &slug,
            Some(json!({ "active_version": active })),
            Some(json!({
                "active_version": saved.version,
                "version": saved.version,
                "note": note,
                "shared": shared_reasons(document),
                "document": document,
            })),
        )
        .await?;
        notify(tx, &id.to_string()).await?;
        Ok(saved)
    }
}
