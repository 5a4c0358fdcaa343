//! The OpenAPI 3.1 document of the admin API, generated from the handlers' own annotations
//! and types (utoipa). The binary merges in the public credential API's
//! (`gateway::openapi`) and serves the result at `/api/v1/openapi.json`; the repository
//! keeps a copy in `openapi.json` that a test compares with the generated one.

use actix_web::HttpResponse;
use actix_web::http::header::ContentType;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::State;
use super::{apply, apps, blocks, changes, log, policy, tokens, users};

/// The bearer scheme every API route but this document uses. The requirement's list names
/// the role a route needs (`admin` or `auditor`, as in the admin route table).
pub const SECURITY_SCHEME: &str = "api_token";

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECURITY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("stsg_ API token")
                    .description(Some(
                        "An API token (`stsgate admin create-token`, or the Tokens page). The \
                         security requirement lists the role the route needs.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "stsgate admin API",
        description = "The admin API on the admin listener: apps, JWT settings, policy templates, blocked subjects, the issuance and change logs, admin users and API tokens. Errors: `{\"error\":{\"code\",\"message\"[,\"fields\"]},\"requestId\"}`."
    ),
    paths(
        apps::list, apps::show, apps::create, apps::update, apps::enable, apps::disable,
        apps::jwt, apps::set_jwt, apply::apply, apply::export,
        policy::versions, policy::version, policy::active, policy::save, policy::activate,
        policy::preview,
        blocks::list, blocks::add, blocks::remove,
        log::search, log::export,
        changes::list,
        users::list, users::create, users::update,
        tokens::list, tokens::create, tokens::revoke,
        document,
    ),
    modifiers(&Security),
    tags(
        (name = "apps", description = "Apps and their JWT settings"),
        (name = "policy", description = "Policy templates"),
        (name = "blocks", description = "Blocked subjects"),
        (name = "log", description = "The issuance log"),
        (name = "changes", description = "The admin change log"),
        (name = "users", description = "Admin users (admin tokens only)"),
        (name = "tokens", description = "API tokens (admin tokens only)"),
        (name = "meta", description = "This document"),
    )
)]
pub struct AdminApiDoc;

/// The admin API's document.
pub fn admin_api() -> utoipa::openapi::OpenApi {
    AdminApiDoc::openapi()
}

/// This OpenAPI document (the admin API and the public credential API).
#[utoipa::path(get, operation_id = "openapi_document", path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json")),
    security(()))]
pub async fn document(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(state.openapi_json.as_ref().clone())
}
