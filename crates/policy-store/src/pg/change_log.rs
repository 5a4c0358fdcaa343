//! The admin change log (`admin_audit`), newest first, with keyset paging by id.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row as _};

use super::{PgStore, clamp_limit};
use crate::error::{DbResult as _, Result};
use crate::model::*;
use crate::repo::ChangeLogStore;

fn admin_change_from_row(row: &PgRow) -> Result<AdminChange, sqlx::Error> {
    Ok(AdminChange {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        before: row.try_get("before")?,
        after: row.try_get("after")?,
    })
}

#[async_trait]
impl ChangeLogStore for PgStore {
    async fn admin_changes(&self, before_id: Option<i64>, limit: i64) -> Result<Vec<AdminChange>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, before, after FROM admin_audit \
             WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(before_id)
        .bind(clamp_limit(limit))
        .fetch_all(&self.pool)
        .await
        .db()?;
        Ok(rows
            .iter()
            .map(admin_change_from_row)
            .collect::<Result<_, _>>()
            .db()?)
    }

    async fn search_admin_changes(
        &self,
        filter: &AdminChangeFilter,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AdminChange>> {
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
            "SELECT id, at, actor, action, target, before, after FROM admin_audit WHERE TRUE",
        );
        if let Some(actor) = &filter.actor {
            qb.push(" AND actor = ").push_bind(actor.clone());
        }
        if let Some(action) = &filter.action {
            qb.push(" AND action = ").push_bind(action.clone());
        }
        if let Some(target) = &filter.target {
            qb.push(" AND target = ").push_bind(target.clone());
        }
        if let Some(from) = filter.from {
            qb.push(" AND at >= ").push_bind(from);
        }
        if let Some(to) = filter.to {
            qb.push(" AND at < ").push_bind(to);
        }
        if let Some(before) = before_id {
            qb.push(" AND id < ").push_bind(before);
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(clamp_limit(limit));
        let rows = qb.build().fetch_all(&self.pool).await.db()?;
        Ok(rows
            .iter()
            .map(admin_change_from_row)
            .collect::<Result<_, _>>()
            .db()?)
    }
}
