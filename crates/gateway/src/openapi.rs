//! The credential API's OpenAPI 3.1 document, generated from the handler's annotation and
//! its own types ([`crate::response`], the options, the shared error body).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The bearer scheme of the credential API: the app's users' JWTs.
pub const SECURITY_SCHEME: &str = "jwt";

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        // One handler answers GET and POST: each operation gets an id of its own.
        for item in doc.paths.paths.values_mut() {
            if let Some(op) = item.get.as_mut() {
                op.operation_id = Some("credentials_get".into());
            }
            if let Some(op) = item.post.as_mut() {
                op.operation_id = Some("credentials_post".into());
            }
        }
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                SECURITY_SCHEME,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some(
                            "The user's JWT from the app's identity provider, checked against \
                             the app's JWT settings.",
                        ))
                        .build(),
                ),
            );
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(crate::http::credentials),
    modifiers(&Security),
    tags((name = "credentials", description = "The public credential API"))
)]
struct CredentialApiDoc;

/// The credential API's document.
pub fn credential_api() -> utoipa::openapi::OpenApi {
    CredentialApiDoc::openapi()
}
