//! The OpenAPI 3.1 document of both APIs: the admin API (`admin::api::openapi`) and the public
//! credential API (`gateway::openapi`), each generated from its handlers' own types. The admin
//! listener serves it at `/api/v1/openapi.json`; `openapi.json` at the repository's root is a
//! copy that the tests below keep current.

use utoipa::openapi::OpenApi;

/// Both APIs in one document.
pub fn document() -> OpenApi {
    let mut doc = admin::api::openapi::admin_api();
    doc.merge(gateway::openapi::credential_api());
    doc.info.title = "stsgate".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(
        "Tencent Cloud COS temporary-credential gateway. The credential API \
         (`/v1/apps/{app}/credentials`, the public listener) takes the users' JWTs; the admin \
         API (`/api/v1/…`, the admin listener) takes `stsg_` API tokens, and each route's \
         security requirement names the role it needs. Errors of both: \
         `{\"error\":{\"code\",\"message\"[,\"fields\"][,\"stsCode\"]},\"requestId\"}`."
            .into(),
    );
    doc
}

#[cfg(test)]
mod tests {
    use admin::{Access, ROUTES};
    use serde_json::Value;

    use super::document;

    const COMMITTED: &str = include_str!("../openapi.json");

    /// `STSGATE_UPDATE_OPENAPI=1 cargo test --bin stsgate openapi` rewrites the file.
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let generated = admin::openapi_json(&document());
        if std::env::var_os("STSGATE_UPDATE_OPENAPI").is_some() {
            std::fs::write(
                concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"),
                &generated,
            )
            .unwrap();
            return;
        }
        assert!(
            COMMITTED == generated,
            "openapi.json is stale: run STSGATE_UPDATE_OPENAPI=1 cargo test --bin stsgate openapi"
        );
    }

    #[test]
    fn every_route_of_the_table_is_documented_with_its_auth() {
        let doc: Value = serde_json::from_str(&admin::openapi_json(&document())).unwrap();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
        let mut documented = 0;
        for route in ROUTES.iter().filter(|r| r.is_api()) {
            let op = &doc["paths"][route.path][route.method.as_str()];
            assert!(
                op.is_object(),
                "{} {} is not in the document",
                route.method.as_str(),
                route.path
            );
            let security = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{} has no security", route.path));
            match route.access {
                Access::Public => assert!(
                    security
                        .iter()
                        .all(|s| s.as_object().is_some_and(|o| o.is_empty())),
                    "{} is public: {security:?}",
                    route.path
                ),
                access => {
                    let role = if access == Access::Admin {
                        "admin"
                    } else {
                        "auditor"
                    };
                    assert_eq!(
                        security,
                        &vec![serde_json::json!({ "api_token": [role] })],
                        "{} {} needs {role}",
                        route.method.as_str(),
                        route.path
                    );
                }
            }
            documented += 1;
        }
        // And nothing the table does not have (apart from the credential API).
        let mut in_doc = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if path.starts_with("/api/") {
                    assert!(
                        ROUTES
                            .iter()
                            .any(|r| r.path == path && r.method.as_str() == method),
                        "{method} {path} is documented but not routed"
                    );
                    in_doc += 1;
                }
            }
        }
        assert_eq!(in_doc, documented);
        // The public credential API, with the JWT bearer scheme.
        for m in ["get", "post"] {
            let op = &doc["paths"]["/v1/apps/{app}/credentials"][m];
            assert_eq!(op["security"], serde_json::json!([{ "jwt": [] }]), "{m}");
        }
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["api_token"]["scheme"], "bearer");
        assert_eq!(schemes["jwt"]["scheme"], "bearer");
    }
}
