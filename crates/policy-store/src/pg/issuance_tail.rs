//! The issuance log read oldest first, after a keyset cursor: what a `follow=true` export
//! tails. Uses the same filters (and indexes) as the newest-first search.

use async_trait::async_trait;

use super::PgStore;
use crate::error::Result;
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
        self.issuance_page(filter, after, limit, true).await
    }
}
