//! JSON bodies and query strings for the API, with errors in the API's shape that name the
//! field at fault where serde says which one it is.

use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest accepted JSON body (templates and PEM keys fit easily).
pub const MAX_JSON: usize = 256 * 1024;

/// The field a serde message names (`missing field `slug``, `unknown field `x``), else `what`.
fn field_of(message: &str, what: &str) -> String {
    message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field `"))
        .unwrap_or(what)
        .to_owned()
}

/// A JSON request body (`Content-Type` is not checked: curl's default must work).
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes
                .await
                .map_err(|_| ApiError::BadRequest(format!("the body is over {MAX_JSON} bytes")))?;
            serde_json::from_slice(&bytes).map(Json).map_err(|e| {
                let message = e.to_string();
                ApiError::invalid(field_of(&message, "body"), message)
            })
        })
    }
}

/// A query string.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            serde_urlencoded::from_str(req.query_string())
                .map(Query)
                .map_err(|e| {
                    let message = e.to_string();
                    ApiError::invalid(field_of(&message, "query"), message)
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn names_the_field_serde_names() {
        assert_eq!(
            field_of("missing field `slug` at line 1 column 2", "body"),
            "slug"
        );
        assert_eq!(
            field_of("unknown field `sluggg`, expected one of `a`", "body"),
            "sluggg"
        );
        assert_eq!(
            field_of("expected value at line 1 column 1", "body"),
            "body"
        );
    }
}
