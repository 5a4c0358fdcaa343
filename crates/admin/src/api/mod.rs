//! The admin API on the admin listener, `/api/v1/…`, JSON (issue 11): everything the pages
//! do, for scripts and CI.
//!
//! - Routes are declared in the same table as the pages ([`crate::ROUTES`]), with the same
//!   roles; a route under [`API_PREFIX`] is guarded by [`auth::guard`] (bearer API tokens)
//!   instead of the session guard, so a cookie never authorizes the API and a token never a
//!   page.
//! - Errors have the public API's shape ([`error::ErrorBody`]); validation errors name the
//!   field. Secrets are write-only.
//! - Changes are logged in the change log as `token:<name>`.
//! - [`openapi`] describes it all (and the public credential API, which the binary adds).

use actix_web::web;
use policy_store::App;

use crate::AdminState;

pub mod apply;
pub mod apps;
pub mod auth;
// utoipa's `params(…)` qualifies the IntoParams types it expands.
#[allow(unused_qualifications)]
pub mod blocks;
// utoipa's `params(…)` qualifies the IntoParams types it expands.
#[allow(unused_qualifications)]
pub mod changes;
pub mod error;
pub mod extract;
// utoipa's `params(…)` qualifies the IntoParams types it expands.
#[allow(unused_qualifications)]
pub mod log;
pub mod openapi;
pub mod policy;
pub mod tokens;
pub mod users;

pub use error::ApiError;

/// Every API route starts with this.
pub const API_PREFIX: &str = "/api/";

pub type State = web::Data<AdminState>;

/// The app named in the path, or 404 in the API's shape.
pub async fn app_or_404(state: &State, slug: &str) -> Result<App, ApiError> {
    state
        .store
        .app_by_slug(slug)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no app named {slug:?}")))
}
