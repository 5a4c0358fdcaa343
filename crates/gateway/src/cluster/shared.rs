//! Credentials shared between replicas (`shared_credentials`), consulted on a local miss.
//!
//! On a miss a replica claims the key's mint with one statement, which also answers with the
//! reusable credential already there (served as a cache hit) when the claim is not won, and,
//! when it is won and the app has an STS budget, takes the budget's token (unless the budget's
//! row is locked at that moment: then the mint takes it with a statement of its own): a miss is
//! one round trip before STS and one (the write) after it, besides its issuance-log row. The claimer
//! calls STS and stores the credential (sealed under the master key, the cache key as
//! associated data); the other replicas poll the row (each poll one such statement) until it is
//! there, up to the claim timeout, then mint themselves.
//! A claim holds for `claim_timeout` at most, or for what is left of the request's deadline
//! plus the longest STS call if that is shorter; a replica takes over its own claim at once
//! (its mints of one key are one at a time: its cache coalesces them). A mint that fails
//! releases its claim, on a bound of its own, so that a waiter takes it over at once. An error from
//! the table never fails a request: the replica mints on its own and says so in the log.
//!
//! Every round trip, and the wait for another replica's row, draws from the request's one
//! database deadline ([`Deadline`]); once it is spent the request is answered 503 (its
//! issuance-log row could not be written in time either), without calling STS. A miss with
//! less than the deadline's floor left does not claim: it only reads the row (a credential
//! there is still served) and is otherwise answered 503.
//!
//! A replica whose last beat counted it the only live one ([`Membership::alone`]) skips the
//! table: its cache already coalesces its own misses of a key, so there is nothing to share
//! and the table would only cost two round trips per miss.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use policy_store::{BudgetGrant, Claim, SharedCredential, SharedKey, Store, StoreError, StsBudget};
use secrecy::SecretString;
use sts_core::TemporaryCredentials;

use crate::cluster::membership::Membership;
use crate::credcache::{CacheKey, CachedCredential};
use crate::deadline::Deadline;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// How often a waiting replica looks at the claimed row.
const POLL: Duration = Duration::from_millis(20);

/// How long the release of a failed mint's claim may take. It runs on its own, after the
/// answer, so a mint that failed because the request's deadline ran out still releases.
const RELEASE_WITHIN: Duration = Duration::from_secs(1);

pub struct SharedCredentials {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    membership: Arc<Membership>,
    enabled: bool,
    claim_timeout: Duration,
    /// The longest an STS call can take, retries included.
    sts_longest: Duration,
}

/// The cache key spelled out: the row's key (hashed) and the associated data of its
/// encryption. The subject goes last, so no separator inside it can make two keys alike.
fn key_text(key: &CacheKey) -> String {
    format!(
        "{}|{}|{}|{}|{}|{}",
        key.app_id,
        key.app_generation,
        key.template_version,
        key.policy_hash(),
        key.duration,
        key.subject()
    )
}

fn from_shared(c: SharedCredential) -> Arc<CachedCredential> {
    Arc::new(
        CachedCredential::new(
            TemporaryCredentials {
                tmp_secret_id: c.tmp_secret_id,
                tmp_secret_key: c.tmp_secret_key,
                session_token: c.session_token,
                expired_time: c.expired_time,
                expiration: c.expiration,
                request_id: c.request_id,
            },
            c.start_time,
            c.reuse_until,
            Instant::now(),
        )
        .taken_from_peer(),
    )
}

fn to_shared(c: &CachedCredential) -> SharedCredential {
    SharedCredential {
        tmp_secret_id: c.tmp_secret_id().to_owned(),
        tmp_secret_key: SecretString::from(c.expose_tmp_secret_key()),
        session_token: SecretString::from(c.expose_session_token()),
        expired_time: c.expired_time,
        expiration: c.expiration().to_owned(),
        request_id: c.request_id().to_owned(),
        start_time: c.start_time,
        reuse_until: c.reuse_until,
    }
}

/// What went wrong with a round trip to the table.
enum Trouble {
    /// The store answered with an error: mint here instead.
    Failed(StoreError),
    /// The request's database deadline ran out: answer 503.
    Deadline,
}

/// A store call within the request's deadline.
async fn bounded<T>(
    deadline: &Deadline,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, Trouble> {
    match deadline.run(call).await {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(Trouble::Failed(e)),
        None => Err(Trouble::Deadline),
    }
}

impl SharedCredentials {
    pub fn new(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        membership: Arc<Membership>,
        enabled: bool,
        claim_timeout: Duration,
        sts_longest: Duration,
    ) -> Self {
        Self {
            store,
            metrics,
            membership,
            enabled,
            claim_timeout,
            sts_longest,
        }
    }

    /// The credential for `key` from another replica, or minted here by `mint` (called at
    /// most once). Every round trip and the wait for another replica's row draw from
    /// `deadline`. With `budget` (the app's STS budget), a won claim takes the budget's token
    /// in its own statement and `mint` gets the answer; `mint` gets `None` when no token was
    /// taken that way (the table is off or failed, another replica's mint did not arrive, or
    /// the budget's row was busy) and takes the token itself.
    pub async fn get_or_mint<F>(
        &self,
        key: &CacheKey,
        deadline: &Deadline,
        budget: Option<StsBudget>,
        mint: impl FnOnce(Option<BudgetGrant>) -> F,
    ) -> Result<Arc<CachedCredential>, ApiError>
    where
        F: Future<Output = Result<Arc<CachedCredential>, ApiError>>,
    {
        if !self.enabled {
            return mint(None).await;
        }
        if self.membership.alone() {
            // No other replica to share with: the local cache coalesces this replica's
            // concurrent misses of one key, so the table would only cost round trips.
            self.metrics.shared_credential("alone");
            return mint(None).await;
        }
        let text = key_text(key);
        let shared = SharedKey {
            app_id: key.app_id,
            subject: key.subject(),
            key: &text,
        };
        let waiting_since = Instant::now();
        let mut waited = false;
        loop {
            // A claim whose holder could not mint in time would only keep the others waiting.
            if deadline.below_floor() {
                if !waited {
                    return self.read_only(shared, deadline).await;
                }
                return Err(self.out_of_time("about to claim the mint in"));
            }
            // The claim holds no longer than this mint can take: what is left of the deadline
            // for the database steps, and the STS call.
            let claim_for = self
                .claim_timeout
                .min(deadline.remaining() + self.sts_longest);
            let claim = bounded(
                deadline,
                self.store
                    .claim_shared_credential(shared, self.membership.id(), claim_for, budget),
            )
            .await;
            match claim {
                Ok(Claim::Mine { budget: taken }) => {
                    return self
                        .mint_and_share(shared, deadline, move || mint(taken))
                        .await;
                }
                Ok(Claim::Ready(found)) => {
                    self.metrics
                        .shared_credential(if waited { "waited" } else { "hit" });
                    return Ok(from_shared(found));
                }
                Ok(Claim::Taken) if deadline.remaining() <= POLL => {
                    return Err(self.out_of_time("waiting for another replica's mint in"));
                }
                Ok(Claim::Taken) if waiting_since.elapsed() + POLL < self.claim_timeout => {
                    waited = true;
                    let slept = tokio::time::Instant::now();
                    tokio::time::sleep(POLL).await;
                    deadline.charge(slept.elapsed());
                }
                Ok(Claim::Taken) => {
                    tracing::warn!(
                        waited_ms = waiting_since.elapsed().as_millis() as u64,
                        "another replica's mint did not arrive in time; minting here"
                    );
                    self.metrics.shared_credential("gave_up");
                    return mint(None).await;
                }
                Err(Trouble::Failed(e)) => {
                    tracing::warn!(error = %e, "cannot claim the shared credential; minting here");
                    self.metrics.shared_credential("error");
                    return mint(None).await;
                }
                Err(Trouble::Deadline) => {
                    // The statement may still commit on the server after the answer: release
                    // whatever claim it leaves, so that no replica waits for a mint that
                    // never comes.
                    self.release(shared);
                    return Err(self.out_of_time("claiming"));
                }
            }
        }
    }

    /// A miss with too little of its deadline left to claim: a reusable credential in the
    /// table is still served; without one (or when the table cannot be read) the answer is
    /// 503, with no budget token taken and no STS call.
    async fn read_only(
        &self,
        key: SharedKey<'_>,
        deadline: &Deadline,
    ) -> Result<Arc<CachedCredential>, ApiError> {
        match bounded(deadline, self.store.shared_credential(key)).await {
            Ok(Some(found)) => {
                self.metrics.shared_credential("hit");
                Ok(from_shared(found))
            }
            Ok(None) => Err(self.out_of_time("about to claim the mint in")),
            Err(Trouble::Failed(e)) => {
                tracing::warn!(error = %e, "cannot read the shared credential table");
                self.metrics.shared_credential("error");
                Err(self.out_of_time("about to claim the mint in"))
            }
            Err(Trouble::Deadline) => Err(self.out_of_time("reading")),
        }
    }

    /// The request's database deadline ran out while `doing` the shared credential table.
    fn out_of_time(&self, doing: &str) -> ApiError {
        tracing::warn!(
            "the request's database deadline ran out {doing} the shared credential table"
        );
        self.metrics.shared_credential("deadline");
        ApiError::Unavailable
    }

    /// Releases this replica's claim on a failed mint, so that a waiter takes it over at once.
    /// On a bound of its own, not the request's deadline (which may be what the mint ran out
    /// of), and in the background: the answer does not wait for it.
    fn release(&self, key: SharedKey<'_>) {
        let (store, me) = (self.store.clone(), self.membership.id());
        let (app_id, subject, text) = (key.app_id, key.subject.to_owned(), key.key.to_owned());
        tokio::spawn(async move {
            let key = SharedKey {
                app_id,
                subject: &subject,
                key: &text,
            };
            let release = store.release_shared_claim(key, me);
            match tokio::time::timeout(RELEASE_WITHIN, release).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot release the claim on a failed mint")
                }
                Err(_) => tracing::warn!(
                    within_ms = RELEASE_WITHIN.as_millis() as u64,
                    "cannot release the claim on a failed mint: the database did not answer in time"
                ),
            }
        });
    }

    async fn mint_and_share<F>(
        &self,
        key: SharedKey<'_>,
        deadline: &Deadline,
        mint: impl FnOnce() -> F,
    ) -> Result<Arc<CachedCredential>, ApiError>
    where
        F: Future<Output = Result<Arc<CachedCredential>, ApiError>>,
    {
        self.metrics.shared_credential("minted");
        match mint().await {
            Ok(minted) => {
                let sharing = to_shared(&minted);
                let put = self.store.put_shared_credential(key, &sharing);
                // The others wait out the claim, then mint themselves.
                match bounded(deadline, put).await {
                    Ok(()) => {}
                    Err(Trouble::Failed(e)) => {
                        tracing::warn!(error = %e, "cannot store the credential for the other replicas")
                    }
                    Err(Trouble::Deadline) => tracing::warn!(
                        "cannot store the credential for the other replicas: the request's database deadline ran out"
                    ),
                }
                Ok(minted)
            }
            Err(err) => {
                self.release(key);
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_texts_differ_when_any_part_differs() {
        let k = CacheKey::new(1, 2, 3, "a|b", "h", 600);
        assert_ne!(
            key_text(&k),
            key_text(&CacheKey::new(1, 2, 3, "a|b", "h", 601))
        );
        assert_ne!(
            key_text(&k),
            key_text(&CacheKey::new(1, 2, 3, "a", "h", 600))
        );
        assert_eq!(key_text(&k), "1|2|3|h|600|a|b");
    }
}
