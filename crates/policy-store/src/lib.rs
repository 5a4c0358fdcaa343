//! stsgate's data layer: the Postgres repository behind the [`Store`] traits, refinery
//! migrations, policy templates and their rendering, and secret encryption at rest.
//!
//! Knows nothing of HTTP, and is the only crate that talks to PostgreSQL: no sqlx type is part
//! of its API (database failures are [`DatabaseError`]s; changes arrive as [`Change`]s).

pub mod bootstrap;
pub mod crypto;
mod error;
pub mod jwt;
pub mod migrate;
pub mod model;
pub mod origin;
mod pg;
pub mod redact;
pub mod repo;
pub mod spec;
pub mod template;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod validate;

pub use crypto::{Cipher, CryptoError, MasterKey};
pub use error::{DatabaseError, DbErrorKind};
pub use jwt::{JWT_ALGORITHMS, MIN_HS_SECRET_BYTES};
pub use model::*;
pub use origin::{MAX_ALLOWED_ORIGINS, OriginError, normalize_origin, normalize_origins};
pub use pg::{
    ADMIN_NOTIFY_PAYLOAD, ArchiveFiles, CHANGES_CHANNEL, Change, ChangeFeed, DroppedPartition,
    MonthlyPartition, PgStore, PoolOptions, RETENTION_LOCK_KEY, RetentionError, RetentionPolicy,
    RetentionReport, RollupRefresh,
};
pub use redact::mask_secret_id;
pub use repo::{
    AdminPrefsStore, AdminUserStore, ApiTokenStore, AppStore, AppsAsCodeStore, ChangeLogStore,
    ClusterStore, FieldError, HealthStore, IssuanceStore, IssuanceTailStore, RollupStore, Store,
    StoreError, SubjectStore, TemplateStore,
};
pub use spec::{
    AppPlan, AppSpec, ApplyOptions, BlockSpec, ChangeOp, FieldChange, JwtSpec,
    MAX_BLOCKED_SUBJECTS, Plan, PlanAction,
};
pub use template::{
    NarrowError, Reach, RenderContext, RenderError, RenderedPolicy, Shared, TemplateDocument,
    TemplateStatement, sub_hash,
};
pub use validate::{
    MAX_DURATION_SECONDS, MAX_STS_CALLS_PER_SECOND, valid_claim_name, valid_ip_or_cidr, valid_slug,
    validate_app,
};
