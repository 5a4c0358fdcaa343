//! argon2id password hashing, run off the async workers on a bounded number of blocking
//! threads (each hash takes 19 MiB), with a dummy hash for unknown users so a missing account
//! takes as long to refuse as a wrong password.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OnceCell, Semaphore};

/// argon2 computations running at once; the rest wait their turn.
static HASH_SLOTS: Semaphore = Semaphore::const_new(2);

/// A hash of a random password nobody knows, made with the same parameters.
static DUMMY_HASH: OnceCell<String> = OnceCell::const_new();

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("passwords must be at least {MIN_PASSWORD_LEN} characters")]
    TooShort,
    #[error("password hashing failed")]
    Hash,
}

pub const MIN_PASSWORD_LEN: usize = 12;

/// Hashes a password into an argon2id PHC string (default parameters: m=19 MiB, t=2, p=1).
pub async fn hash_password(password: SecretString) -> Result<String, PasswordError> {
    if password.expose_secret().chars().count() < MIN_PASSWORD_LEN {
        return Err(PasswordError::TooShort);
    }
    hash_unchecked(password).await
}

async fn hash_unchecked(password: SecretString) -> Result<String, PasswordError> {
    let _slot = HASH_SLOTS
        .acquire()
        .await
        .map_err(|_| PasswordError::Hash)?;
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.expose_secret().as_bytes())
            .map(|h| h.to_string())
            .map_err(|_| PasswordError::Hash)
    })
    .await
    .map_err(|_| PasswordError::Hash)?
}

/// Checks a password against a PHC string. A malformed hash verifies nothing.
pub async fn verify_password(password: SecretString, phc: String) -> bool {
    let Ok(_slot) = HASH_SLOTS.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.expose_secret().as_bytes(), phc.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

/// Spends the time of one verification against a hash that matches nothing: for unknown,
/// disabled or locked accounts. Always false.
pub async fn verify_dummy(password: SecretString) -> bool {
    let dummy = DUMMY_HASH
        .get_or_init(|| async {
            let mut random = [0u8; 24];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
            hash_unchecked(SecretString::from(hex::encode(random)))
                .await
                .unwrap_or_default()
        })
        .await;
    let _ = verify_password(password, dummy.clone()).await;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_refuse() {
        let phc = hash_password(SecretString::from("correct horse battery"))
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password(SecretString::from("correct horse battery"), phc.clone()).await);
        assert!(!verify_password(SecretString::from("wrong horse battery"), phc).await);
        assert!(!verify_password(SecretString::from("x"), "not a hash".into()).await);
        assert!(matches!(
            hash_password(SecretString::from("short")).await,
            Err(PasswordError::TooShort)
        ));
        assert!(!verify_dummy(SecretString::from("correct horse battery")).await);
        assert!(
            DUMMY_HASH
                .get()
                .unwrap()
                .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
        );
    }
}
