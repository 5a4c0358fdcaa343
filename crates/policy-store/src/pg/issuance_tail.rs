//! The issuance log read oldest first, after a keyset cursor: what a `follow=true` export
//! tails. Uses the same filters (and indexes) as the newest-first search.

use async_trait::async_trait;
use sqlx::{Postgres, QueryBuilder};

use super::issuance::{ISSUANCE_COLUMNS, issuance_from_row};
use super::{PgStore, clamp_limit, issuance_filter};
use crate::error::{DbResult as _, Result};
use crate::model::*;
use crate::repo::IssuanceTailStore;

#[async_trait]
impl IssuanceTailStore for PgStore {
    async fn issuance_after(
        &self,
        filter: &IssuanceFilter,
        after: Option<IssuanceCursor>,
        limit: i64,
    ) -> Result<Vec<IssuanceRecord>> {
        issuance_filter::check(filter)?;
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {ISSUANCE_COLUMNS} FROM issuance_log WHERE TRUE"
        ));
        issuance_filter::push_where(&mut qb, filter);
        if let Some(c) = after {
            qb.push(" AND (at, id) > (")
                .push_bind(c.at)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        qb.push(" ORDER BY at, id LIMIT ")
            .push_bind(clamp_limit(limit));
        let rows = qb.build().fetch_all(&self.pool).await.db()?;
        Ok(rows
            .iter()
            .map(issuance_from_row)
            .collect::<Result<_, _>>()
            .db()?)
    }
}
