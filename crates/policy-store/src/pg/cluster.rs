//! Cluster mode (DESIGN §8): `cluster_members`, `sts_budget` and `shared_credentials`.
//!
//! Every time here is the database's clock, so replicas with skewed clocks agree on who is
//! live, on the budget and on what is still reusable.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use super::PgStore;
use crate::error::{DbResult as _, Result};
use crate::model::*;
use crate::repo::ClusterStore;
use crate::template::sub_hash;

/// Members not seen for this long (an SQL interval) are deleted.
macro_rules! forget_members_after {
    () => {
        "interval '1 hour'"
    };
}

fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The encryption's associated data: the cache key itself, so a row copied under another key
/// does not decrypt.
fn sealed_field(key: &str) -> String {
    format!("credential:{key}")
}

/// What is sealed: the whole credential (only the reuse window is also in the clear).
#[derive(Serialize, Deserialize)]
struct Sealed<'a> {
    tmp_secret_id: &'a str,
    tmp_secret_key: &'a str,
    session_token: &'a str,
    expired_time: i64,
    expiration: &'a str,
    request_id: &'a str,
    start_time: i64,
    reuse_until: i64,
}

impl PgStore {
    fn seal(&self, key: SharedKey<'_>, c: &SharedCredential) -> String {
        let plain = SecretString::from(
            serde_json::to_string(&Sealed {
                tmp_secret_id: &c.tmp_secret_id,
                tmp_secret_key: c.tmp_secret_key.expose_secret(),
                session_token: c.session_token.expose_secret(),
                expired_time: c.expired_time,
                expiration: &c.expiration,
                request_id: &c.request_id,
                start_time: c.start_time,
                reuse_until: c.reuse_until,
            })
            .expect("a credential serialises"),
        );
        self.cipher
            .encrypt(key.app_id, &sealed_field(key.key), plain.expose_secret())
    }

    fn open(&self, key: SharedKey<'_>, stored: &str) -> Result<SharedCredential> {
        let plain = self
            .cipher
            .decrypt(key.app_id, &sealed_field(key.key), stored)?;
        let s: Sealed<'_> = serde_json::from_str(plain.expose_secret())
            .map_err(|_| crate::crypto::CryptoError::Malformed)?;
        Ok(SharedCredential {
            tmp_secret_id: s.tmp_secret_id.to_owned(),
            tmp_secret_key: SecretString::from(s.tmp_secret_key),
            session_token: SecretString::from(s.session_token),
            expired_time: s.expired_time,
            expiration: s.expiration.to_owned(),
            request_id: s.request_id.to_owned(),
            start_time: s.start_time,
            reuse_until: s.reuse_until,
        })
    }
}

/// `sts_budget_take`'s answer: 0 when the token was granted, else the seconds until one is.
fn grant(wait: f64) -> BudgetGrant {
    if wait <= 0.0 {
        BudgetGrant::Granted
    } else {
        BudgetGrant::RetryAfter(Duration::from_secs_f64(wait.min(3600.0)))
    }
}

fn member_from_row(r: &sqlx::postgres::PgRow) -> std::result::Result<ClusterMember, sqlx::Error> {
    Ok(ClusterMember {
        id: r.try_get("id")?,
        host: r.try_get("host")?,
        public_addr: r.try_get("public_addr")?,
        admin_addr: r.try_get("admin_addr")?,
        version: r.try_get("version")?,
        started_at: r.try_get("started_at")?,
        last_beat: r.try_get("last_beat")?,
        beat_age_ms: r.try_get("beat_age_ms")?,
        live: r.try_get("live")?,
    })
}

async fn list_members(
    conn: &mut PgConnection,
    live_within: Duration,
) -> Result<Vec<ClusterMember>> {
    let rows = sqlx::query(concat!(
        "SELECT id, host, public_addr, admin_addr, version, started_at, last_beat, \
             (extract(epoch FROM now() - last_beat) * 1000)::bigint AS beat_age_ms, \
             last_beat > now() - make_interval(secs => $1) AS live \
         FROM cluster_members WHERE last_beat > now() - ",
        forget_members_after!(),
        " ORDER BY started_at, id"
    ))
    .bind(live_within.as_secs_f64())
    .fetch_all(&mut *conn)
    .await
    .db()?;
    rows.iter()
        .map(member_from_row)
        .collect::<std::result::Result<_, _>>()
        .db()
}

/// Deletes the shared credentials of `app` (of one subject when given), in the caller's
/// transaction: a blocked subject's or a disabled app's credentials are not handed out again
/// by another replica.
pub(super) async fn purge_shared_credentials(
    conn: &mut PgConnection,
    app: AppId,
    subject: Option<&str>,
) -> Result<()> {
    match subject {
        Some(s) => {
            sqlx::query("DELETE FROM shared_credentials WHERE app_id = $1 AND subject_hash = $2")
                .bind(app)
                .bind(sub_hash(s))
                .execute(conn)
                .await
                .db()?;
        }
        None => {
            sqlx::query("DELETE FROM shared_credentials WHERE app_id = $1")
                .bind(app)
                .execute(conn)
                .await
                .db()?;
        }
    }
    Ok(())
}

#[async_trait]
impl ClusterStore for PgStore {
    async fn heartbeat(
        &self,
        me: &MemberInfo,
        live_within: Duration,
    ) -> Result<Vec<ClusterMember>> {
        let mut conn = self.coordination.acquire().await.db()?;
        sqlx::query(
            "INSERT INTO cluster_members (id, host, public_addr, admin_addr, version) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET last_beat = now()",
        )
        .bind(me.id)
        .bind(&me.host)
        .bind(&me.public_addr)
        .bind(&me.admin_addr)
        .bind(&me.version)
        .execute(&mut *conn)
        .await
        .db()?;
        list_members(&mut conn, live_within).await
    }

    async fn cluster_members(&self, live_within: Duration) -> Result<Vec<ClusterMember>> {
        let mut conn = self.pool.acquire().await.db()?;
        list_members(&mut conn, live_within).await
    }

    async fn leave_cluster(&self, id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM cluster_members WHERE id = $1")
            .bind(id)
            .execute(&self.coordination)
            .await
            .db()?;
        Ok(())
    }

    async fn take_sts_budget(&self, id: AppId, budget: StsBudget) -> Result<BudgetGrant> {
        let wait: f64 = sqlx::query_scalar("SELECT sts_budget_take($1, $2, $3)")
            .bind(id)
            .bind(budget.interval())
            .bind(budget.ahead())
            .fetch_one(&self.coordination)
            .await
            .db()?;
        Ok(grant(wait))
    }

    async fn shared_credential(&self, key: SharedKey<'_>) -> Result<Option<SharedCredential>> {
        let sealed: Option<String> = sqlx::query_scalar(
            "SELECT sealed FROM shared_credentials \
             WHERE key_hash = $1 AND sealed IS NOT NULL AND reuse_until > now()",
        )
        .bind(key_hash(key.key))
        .fetch_optional(&self.coordination)
        .await
        .db()?;
        sealed.map(|s| self.open(key, &s)).transpose()
    }

    async fn claim_shared_credential(
        &self,
        key: SharedKey<'_>,
        me: Uuid,
        claim_for: Duration,
        budget: Option<StsBudget>,
    ) -> Result<Claim> {
        // One statement. A reusable credential in the row (as of the statement's snapshot) is
        // read and handed back, and nothing is written or locked (`Ready`). Otherwise the upsert
        // claims a new row, or one whose credential's reuse window or claim has run out, or a
        // claim of this replica's own (a mint of its that failed or was cancelled: it mints one
        // key at a time); it leaves another replica's live claim alone (`Taken`). A credential
        // stored by the claim's holder after the snapshot is seen by the upsert (which then
        // leaves the row alone: `Taken`, never a second claim) and read at the next poll.
        //
        // A won claim takes the STS budget's token too, but only if the app's budget row can
        // be locked at once (`SKIP LOCKED`): the statement never waits on the budget while it
        // holds an uncommitted claim, which a request whose deadline ran out meanwhile could
        // neither use nor release. When the row is busy (or not there yet) `wait` is NULL and
        // the caller takes the token with a statement of its own, after the claim committed.
        let row = sqlx::query(
            "WITH live AS ( \
                 SELECT sealed FROM shared_credentials \
                 WHERE key_hash = $1 AND sealed IS NOT NULL AND reuse_until > now() \
             ), won AS ( \
                 INSERT INTO shared_credentials \
                     (key_hash, app_id, subject_hash, claimed_by, claim_until) \
                 SELECT $1::text, $2::bigint, $3::text, $4::uuid, \
                     now() + make_interval(secs => $5::float8) \
                 WHERE NOT EXISTS (SELECT FROM live) \
                 ON CONFLICT (key_hash) DO UPDATE SET sealed = NULL, reuse_until = NULL, \
                     claimed_by = excluded.claimed_by, claim_until = excluded.claim_until \
                 WHERE (shared_credentials.sealed IS NOT NULL \
                         AND shared_credentials.reuse_until <= now()) \
                    OR (shared_credentials.sealed IS NULL \
                         AND (shared_credentials.claim_until <= now() \
                              OR shared_credentials.claimed_by = excluded.claimed_by)) \
                 RETURNING true \
             ), budget AS ( \
                 SELECT app_id FROM sts_budget WHERE app_id = $2 FOR UPDATE SKIP LOCKED \
             ) \
             SELECT claim.mine, \
                 CASE WHEN claim.mine AND $6::float8 IS NOT NULL THEN \
                     CASE WHEN EXISTS (SELECT FROM budget) \
                         THEN sts_budget_take($2, $6, $7) END \
                 END AS wait, \
                 (SELECT sealed FROM live) AS sealed \
             FROM (SELECT count(*) > 0 AS mine FROM won) AS claim",
        )
        .bind(key_hash(key.key))
        .bind(key.app_id)
        .bind(sub_hash(key.subject))
        .bind(me)
        .bind(claim_for.as_secs_f64())
        .bind(budget.map(StsBudget::interval))
        .bind(budget.map(StsBudget::ahead))
        .fetch_one(&self.coordination)
        .await
        .db()?;
        if row.try_get::<bool, _>("mine").db()? {
            let wait: Option<f64> = row.try_get("wait").db()?;
            return Ok(Claim::Mine {
                budget: wait.map(grant),
            });
        }
        let sealed: Option<String> = row.try_get("sealed").db()?;
        Ok(match sealed {
            Some(s) => Claim::Ready(self.open(key, &s)?),
            None => Claim::Taken,
        })
    }

    async fn put_shared_credential(
        &self,
        key: SharedKey<'_>,
        credential: &SharedCredential,
    ) -> Result<()> {
        let sealed = self.seal(key, credential);
        sqlx::query(
            "INSERT INTO shared_credentials \
                 (key_hash, app_id, subject_hash, sealed, reuse_until, claimed_by, claim_until) \
             VALUES ($1, $2, $3, $4, to_timestamp($5), NULL, now()) \
             ON CONFLICT (key_hash) DO UPDATE SET sealed = excluded.sealed, \
                 reuse_until = excluded.reuse_until, claimed_by = NULL, claim_until = now()",
        )
        .bind(key_hash(key.key))
        .bind(key.app_id)
        .bind(sub_hash(key.subject))
        .bind(sealed)
        .bind(credential.reuse_until as f64)
        .execute(&self.coordination)
        .await
        .db()?;
        Ok(())
    }

    async fn release_shared_claim(&self, key: SharedKey<'_>, me: Uuid) -> Result<()> {
        sqlx::query(
            "DELETE FROM shared_credentials \
             WHERE key_hash = $1 AND claimed_by = $2 AND sealed IS NULL",
        )
        .bind(key_hash(key.key))
        .bind(me)
        .execute(&self.coordination)
        .await
        .db()?;
        Ok(())
    }

    async fn purge_cluster_rows(&self) -> Result<u64> {
        let gone = sqlx::query(
            "DELETE FROM shared_credentials WHERE reuse_until <= now() \
             OR (sealed IS NULL AND claim_until < now() - interval '1 minute')",
        )
        .execute(&self.pool)
        .await
        .db()?
        .rows_affected();
        sqlx::query(concat!(
            "DELETE FROM cluster_members WHERE last_beat < now() - ",
            forget_members_after!()
        ))
        .execute(&self.pool)
        .await
        .db()?;
        Ok(gone)
    }
}
