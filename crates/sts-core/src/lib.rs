//! Tencent Cloud building blocks for stsgate.
//!
//! * [`tc3`]: the TC3-HMAC-SHA256 signer used for API 3.0 calls (stsgate's own STS calls).
//! * [`v1`]: the older HmacSHA1/HmacSHA256 signer that the official `qcloud-cos-sts` SDKs speak.
//! * [`cos`]: the COS request signer (`q-sign-algorithm=sha1`).
//! * [`policy`]: the CAM policy model, the COS resource builder and session-policy validation.
//! * [`error_body`]: the error body of both of stsgate's HTTP APIs.
//! * [`client`]: [`StsClient`], GetFederationToken and AssumeRole over reqwest with retries.
//!
//! This crate knows nothing about HTTP servers or databases.

pub mod client;
pub mod cos;
pub mod encoding;
pub mod error_body;
pub mod policy;
pub mod tc3;
pub mod v1;

pub use client::{
    AssumeRole, DecodeError, EndpointError, ErrorClass, GetFederationToken, PermanentKey,
    RetryPolicy, StsClient, StsClientConfig, StsError, TemporaryCredentials,
};
pub use policy::{CosResource, Effect, Policy, PolicyError, Statement};

/// Installs the workspace's one rustls crypto provider (ring) as the process default.
///
/// reqwest is built with `rustls-no-provider`, so every TLS client in the process relies on
/// this. Calling it more than once is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
