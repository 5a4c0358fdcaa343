//! The credential endpoint's three response bodies (DESIGN §3; reference §2.11, §4.4, §4.7),
//! as types: the handler serializes these, and the OpenAPI document is generated from them.
//! They borrow the secrets for the time of serialization only.

use serde::Serialize;
use utoipa::ToSchema;

use crate::service::Issued;

/// The temporary key triple.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TmpCredentials<'a> {
    pub tmp_secret_id: &'a str,
    pub tmp_secret_key: &'a str,
    pub session_token: &'a str,
}

/// `format=sdk` (the default): the official STS SDKs' shape, which the Android/iOS samples
/// parse as is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SdkCredentials<'a> {
    pub credentials: TmpCredentials<'a>,
    /// Unix seconds.
    pub expired_time: i64,
    /// ISO 8601 UTC.
    pub expiration: &'a str,
    /// The gateway's clock when the credential was minted (unix seconds).
    pub start_time: i64,
    /// STS's RequestId.
    pub request_id: &'a str,
    pub bucket: &'a str,
    pub region: &'a str,
    /// The user's own prefix (with the requested sub-path).
    pub prefix: &'a str,
}

/// `format=legacy`: the old `qcloud-cos-sts` servers' envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct LegacyCredentials<'a> {
    /// Always 0.
    pub code: i32,
    pub message: &'a str,
    #[serde(rename = "codeDesc")]
    pub code_desc: &'a str,
    pub data: SdkCredentials<'a>,
}

/// `format=cos-js`: ready for cos-js-sdk-v5's `getAuthorization` callback.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct CosJsCredentials<'a> {
    pub tmp_secret_id: &'a str,
    pub tmp_secret_key: &'a str,
    pub security_token: &'a str,
    pub start_time: i64,
    pub expired_time: i64,
    pub expiration: &'a str,
    pub bucket: &'a str,
    pub region: &'a str,
    pub prefix: &'a str,
}

/// One of the three shapes, as `format` asks.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum CredentialsResponse<'a> {
    Sdk(SdkCredentials<'a>),
    Legacy(LegacyCredentials<'a>),
    CosJs(CosJsCredentials<'a>),
}

/// How the client asked for the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sdk,
    Legacy,
    CosJs,
}

impl<'a> CredentialsResponse<'a> {
    pub fn new(issued: &'a Issued, format: Format) -> Self {
        let c = &*issued.credential;
        let sdk = || SdkCredentials {
            credentials: TmpCredentials {
                tmp_secret_id: c.tmp_secret_id(),
                tmp_secret_key: c.expose_tmp_secret_key(),
                session_token: c.expose_session_token(),
            },
            expired_time: c.expired_time,
            expiration: c.expiration(),
            start_time: c.start_time,
            request_id: c.request_id(),
            bucket: &issued.bucket,
            region: &issued.region,
            prefix: &issued.prefix,
        };
        match format {
            Format::Sdk => Self::Sdk(sdk()),
            Format::Legacy => Self::Legacy(LegacyCredentials {
                code: 0,
                message: "",
                code_desc: "Success",
                data: sdk(),
            }),
            Format::CosJs => Self::CosJs(CosJsCredentials {
                tmp_secret_id: c.tmp_secret_id(),
                tmp_secret_key: c.expose_tmp_secret_key(),
                security_token: c.expose_session_token(),
                start_time: c.start_time,
                expired_time: c.expired_time,
                expiration: c.expiration(),
                bucket: &issued.bucket,
                region: &issued.region,
                prefix: &issued.prefix,
            }),
        }
    }
}
