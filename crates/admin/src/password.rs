//! argon2id password hashing, run off the async workers.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};

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
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.expose_secret().as_bytes(), phc.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
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
    }
}
