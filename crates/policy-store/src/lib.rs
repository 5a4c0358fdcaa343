//! stsgate's data layer: the Postgres repository behind the [`Store`] trait, refinery
//! migrations, policy templates and their rendering, and secret encryption at rest.
//!
//! Knows nothing of HTTP.

pub mod crypto;
pub mod jwt;
pub mod migrate;
pub mod model;
mod pg;
pub mod repo;
pub mod template;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use crypto::{Cipher, CryptoError, MasterKey};
pub use model::*;
pub use pg::{
    ADMIN_NOTIFY_PAYLOAD, CHANGES_CHANNEL, JWT_ALGORITHMS, MAX_DURATION_SECONDS,
    MIN_HS_SECRET_BYTES, PgStore, mask_secret_id,
};
pub use repo::{FieldError, Store, StoreError};
pub use template::{
    NarrowError, RenderContext, RenderError, RenderedPolicy, TemplateDocument, TemplateStatement,
};
