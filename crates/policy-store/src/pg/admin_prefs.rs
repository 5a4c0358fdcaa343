//! An admin user's display preferences (`admin_users.display_timezone`), kept apart from the
//! account and sign-in code.

use async_trait::async_trait;

use super::PgStore;
use crate::error::{DbResult as _, FieldError, Result, StoreError};
use crate::repo::AdminPrefsStore;

/// Longest accepted time-zone name (IANA names are far shorter).
const MAX_ZONE_LEN: usize = 64;

#[async_trait]
impl AdminPrefsStore for PgStore {
    async fn admin_display_timezone(&self, user_id: i64) -> Result<Option<String>> {
        let zone: Option<Option<String>> =
            sqlx::query_scalar("SELECT display_timezone FROM admin_users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await
                .db()?;
        Ok(zone.flatten())
    }

    async fn set_admin_display_timezone(&self, user_id: i64, zone: Option<&str>) -> Result<()> {
        if let Some(z) = zone
            && (z.is_empty()
                || z.len() > MAX_ZONE_LEN
                || z.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(StoreError::Invalid(vec![FieldError::new(
                "display_timezone",
                "a time zone name such as Asia/Shanghai",
            )]));
        }
        let updated = sqlx::query("UPDATE admin_users SET display_timezone = $2 WHERE id = $1")
            .bind(user_id)
            .bind(zone)
            .execute(&self.pool)
            .await
            .db()?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
