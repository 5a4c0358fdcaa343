//! The STS endpoint: authentication (TC3 and v1), limits, and the two actions.

use std::collections::BTreeMap;

use actix_web::HttpRequest;
use actix_web::http::Method;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sts_core::encoding::{constant_time_eq, uri_decode};
use sts_core::policy::{appid_of_bucket, non_space_len, parse_cos_resource};
use sts_core::tc3::{self, Tc3Authorization, Tc3Request};
use sts_core::v1;

use crate::account::Account;
use crate::server::State;
use crate::store::IssuedCredential;

pub(crate) const VERSION: &str = "2018-08-13";
/// Server-clock tolerance for `X-TC-Timestamp` / `Timestamp`.
const MAX_SKEW_SECS: i64 = 300;
const POLICY_LIMIT: usize = 4096;
const FEDERATION_DEFAULT: u64 = 1800;
/// GetFederationToken's ceiling with a sub-account key (reference §2.2).
const FEDERATION_MAX: u64 = 129_600;
const ROLE_DEFAULT: u64 = 7200;
const ROLE_MAX: u64 = 43_200;

/// An STS error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StsFault {
    pub code: String,
    pub message: String,
}

impl StsFault {
    pub(crate) fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

type StsResult<T> = Result<T, StsFault>;

/// What every action sees once the caller is authenticated.
struct Call {
    account: Account,
    action: String,
    params: BTreeMap<String, Value>,
    now: i64,
}

impl Call {
    fn string(&self, name: &str) -> Option<String> {
        match self.params.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    fn required(&self, name: &str) -> StsResult<String> {
        self.string(name).filter(|s| !s.is_empty()).ok_or_else(|| {
            StsFault::new(
                "MissingParameter",
                format!("The request is missing a required parameter `{name}`."),
            )
        })
    }

    fn duration(&self, default: u64, max: u64) -> StsResult<u64> {
        let Some(raw) = self.string("DurationSeconds").filter(|s| !s.is_empty()) else {
            return Ok(default);
        };
        let secs: u64 = raw.parse().map_err(|_| {
            StsFault::new(
                "InvalidParameter.ParamError",
                format!("DurationSeconds must be a positive integer, got {raw:?}."),
            )
        })?;
        if secs == 0 {
            return Err(StsFault::new(
                "InvalidParameter.ParamError",
                "DurationSeconds must be a positive integer.",
            ));
        }
        if secs > max {
            return Err(StsFault::new(
                "InvalidParameter.OverTimeError",
                format!("DurationSeconds {secs} is over the limit of {max} seconds."),
            ));
        }
        Ok(secs)
    }
}

/// Handles one STS request end to end; returns the `Response` object's content.
pub(crate) fn handle(
    state: &State,
    req: &HttpRequest,
    body: &[u8],
    now: i64,
    request_id: &str,
) -> StsResult<Value> {
    let call = authenticate(state, req, body, now)?;
    if !state
        .store
        .admit(&call.account.secret_id, now, state.config.rate_limit)
    {
        return Err(StsFault::new(
            "RequestLimitExceeded",
            "Your current request times equals to `limit`, please retry later.",
        ));
    }
    match call.action.as_str() {
        "GetFederationToken" => get_federation_token(state, &call, request_id),
        "AssumeRole" => assume_role(state, &call, request_id),
        other => Err(StsFault::new(
            "InvalidAction",
            format!("The action `{other}` is not supported by STS version {VERSION}."),
        )),
    }
}

/// The SecretId a request names (TC3 `Credential=` or the v1 `SecretId` parameter), read
/// without checking anything: faults scoped to one account and the call log use it.
pub(crate) fn caller_secret_id(req: &HttpRequest, body: &[u8]) -> Option<String> {
    if let Some(auth) = header(req, "authorization") {
        return Tc3Authorization::parse(auth).map(|a| a.secret_id);
    }
    let raw = if req.method() == Method::POST {
        std::str::from_utf8(body).ok()?
    } else {
        req.query_string()
    };
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw)
        .ok()?
        .into_iter()
        .find_map(|(k, v)| (k == "SecretId").then_some(v))
}

fn authenticate(state: &State, req: &HttpRequest, body: &[u8], now: i64) -> StsResult<Call> {
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    match authorization {
        Some(auth) if auth.starts_with(tc3::ALGORITHM) => {
            authenticate_tc3(state, req, auth, body, now)
        }
        Some(_) => Err(StsFault::new(
            "AuthFailure.InvalidAuthorization",
            "The `Authorization` header is not a TC3-HMAC-SHA256 authorization.",
        )),
        None => authenticate_v1(state, req, body, now),
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn check_timestamp(raw: Option<&str>, now: i64) -> StsResult<i64> {
    let ts: i64 = raw
        .ok_or_else(|| {
            StsFault::new(
                "MissingParameter",
                "The request is missing a required parameter `Timestamp`.",
            )
        })?
        .trim()
        .parse()
        .map_err(|_| {
            StsFault::new(
                "InvalidParameter",
                "Timestamp must be an integer of Unix seconds.",
            )
        })?;
    if (now - ts).abs() > MAX_SKEW_SECS {
        return Err(StsFault::new(
            "AuthFailure.SignatureExpire",
            format!(
                "Signature expired. Timestamp {ts} is more than {MAX_SKEW_SECS} seconds away from server time {now}."
            ),
        ));
    }
    Ok(ts)
}

fn find_account(state: &State, secret_id: &str) -> StsResult<Account> {
    state
        .config
        .accounts
        .iter()
        .find(|a| a.secret_id == secret_id)
        .cloned()
        .ok_or_else(|| {
            StsFault::new(
                "AuthFailure.SecretIdNotFound",
                "The SecretId is not found, please ensure that your SecretId is correct.",
            )
        })
}

fn signature_failure() -> StsFault {
    StsFault::new(
        "AuthFailure.SignatureFailure",
        "The provided credentials could not be validated. Please check your signature is correct.",
    )
}

fn authenticate_tc3(
    state: &State,
    req: &HttpRequest,
    authorization: &str,
    body: &[u8],
    now: i64,
) -> StsResult<Call> {
    let auth = Tc3Authorization::parse(authorization).ok_or_else(|| {
        StsFault::new(
            "AuthFailure.InvalidAuthorization",
            "The `Authorization` header is malformed.",
        )
    })?;
    let ts = check_timestamp(header(req, "x-tc-timestamp"), now)?;
    let account = find_account(state, &auth.secret_id)?;
    if !auth.signed_headers.iter().any(|h| h == "content-type")
        || !auth.signed_headers.iter().any(|h| h == "host")
    {
        return Err(StsFault::new(
            "AuthFailure.InvalidAuthorization",
            "SignedHeaders must include content-type and host.",
        ));
    }
    let mut headers = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let value = header(req, name).ok_or_else(signature_failure)?;
        headers.push((name.as_str(), value));
    }
    let is_get = req.method() == Method::GET;
    let signed = tc3::sign(
        &account.secret_key,
        &Tc3Request {
            method: req.method().as_str(),
            canonical_query: if is_get { req.query_string() } else { "" },
            headers: &headers,
            payload: body,
            service: &auth.service,
            timestamp: ts,
        },
    );
    if auth.service != "sts"
        || auth.date != tc3::utc_date(ts)
        || !constant_time_eq(&signed.signature, &auth.signature)
    {
        return Err(signature_failure());
    }
    if header(req, "x-tc-version") != Some(VERSION) {
        return Err(StsFault::new(
            "NoSuchVersion",
            format!("The requested version does not exist; STS is version {VERSION}."),
        ));
    }
    let action = header(req, "x-tc-action")
        .ok_or_else(|| StsFault::new("MissingParameter", "The request is missing `X-TC-Action`."))?
        .to_owned();
    let params = if is_get {
        query_params(req.query_string())?
    } else {
        let content_type = header(req, "content-type").unwrap_or_default();
        if !content_type.starts_with("application/json") {
            return Err(StsFault::new(
                "InvalidParameter",
                "A TC3 POST must carry an application/json body.",
            ));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => map.into_iter().collect(),
            Ok(_) | Err(_) if body.is_empty() => BTreeMap::new(),
            _ => {
                return Err(StsFault::new(
                    "InvalidParameter",
                    "The request body is not a JSON object.",
                ));
            }
        }
    };
    Ok(Call {
        account,
        action,
        params,
        now,
    })
}

fn query_params(raw: &str) -> StsResult<BTreeMap<String, Value>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|_| StsFault::new("InvalidParameter", "The query string is malformed."))?;
    Ok(pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect())
}

fn authenticate_v1(state: &State, req: &HttpRequest, body: &[u8], now: i64) -> StsResult<Call> {
    let raw = if req.method() == Method::POST {
        std::str::from_utf8(body)
            .map_err(|_| StsFault::new("InvalidParameter", "The form body is not UTF-8."))?
    } else {
        req.query_string()
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|_| StsFault::new("InvalidParameter", "The request parameters are malformed."))?;
    let params: BTreeMap<String, String> = pairs.into_iter().collect();
    for required in ["Action", "SecretId", "Signature", "Timestamp", "Nonce"] {
        if params.get(required).is_none_or(|v| v.is_empty()) {
            return Err(StsFault::new(
                "MissingParameter",
                format!("The request is missing a required parameter `{required}`."),
            ));
        }
    }
    check_timestamp(params.get("Timestamp").map(String::as_str), now)?;
    let account = find_account(state, &params["SecretId"])?;
    let method: v1::SignatureMethod = params
        .get("SignatureMethod")
        .map(|m| m.parse())
        .transpose()
        .map_err(|e: String| StsFault::new("InvalidParameter", e))?
        .unwrap_or_default();
    // The SDKs sign with their configured domain, which may differ from the Host they connect to.
    let host_header = header(req, "host").unwrap_or_default();
    let candidates =
        std::iter::once(host_header).chain(state.config.signed_hosts.iter().map(String::as_str));
    let path = req.path();
    let verified = candidates.into_iter().any(|host| {
        let expected = v1::sign_string(
            &account.secret_key,
            method,
            &v1::string_to_sign(req.method().as_str(), host, path, &params),
        );
        constant_time_eq(&expected, &params["Signature"])
    });
    if !verified {
        return Err(signature_failure());
    }
    if params.get("Version").map(String::as_str) != Some(VERSION) {
        return Err(StsFault::new(
            "NoSuchVersion",
            format!("The requested version does not exist; STS is version {VERSION}."),
        ));
    }
    Ok(Call {
        account,
        action: params["Action"].clone(),
        params: params
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
        now,
    })
}

/// Decodes and checks a session policy the way STS does. Returns the parsed document.
fn check_policy(raw: &str, account: &Account) -> StsResult<Value> {
    // The parameter is URL-encoded JSON; raw JSON survives the decode unless it has `%`.
    // Go's url.QueryEscape and PHP's urlencode write a space as `+`; a literal `+` is always
    // `%2B` in every SDK's encoding, so `+` can safely mean a space here.
    let decoded = if raw.trim_start().starts_with('{') {
        raw.to_owned()
    } else {
        uri_decode(&raw.replace('+', " "))
    };
    if non_space_len(&decoded) > POLICY_LIMIT {
        return Err(StsFault::new(
            "InvalidParameter.PolicyTooLong",
            format!("The policy is longer than {POLICY_LIMIT} characters."),
        ));
    }
    let format_error = |why: &str| {
        StsFault::new(
            "InvalidParameter.StrategyFormatError",
            format!("[QC_STS] policy format error: {why}"),
        )
    };
    let doc: Value = serde_json::from_str(&decoded).map_err(|_| format_error("not JSON"))?;
    let field = |name: &str| doc.get(name).or_else(|| doc.get(capitalise(name).as_str()));
    if field("version").and_then(Value::as_str) != Some("2.0") {
        return Err(format_error("version must be \"2.0\""));
    }
    let statements = field("statement")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format_error("statement must be a non-empty list"))?;
    for st in statements {
        let get = |name: &str| st.get(name).or_else(|| st.get(capitalise(name).as_str()));
        let effect = get("effect")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        if !matches!(effect.as_deref(), Some("allow" | "deny")) {
            return Err(format_error("effect must be allow or deny"));
        }
        let action = strings(get("action"))
            .ok_or_else(|| format_error("action must be a string or a list of strings"))?;
        if action.is_empty() {
            return Err(format_error("action is empty"));
        }
        let resources = strings(get("resource"))
            .ok_or_else(|| format_error("resource must be a string or a list of strings"))?;
        if resources.is_empty() {
            return Err(format_error("resource is empty"));
        }
        for resource in resources {
            check_resource(resource, account)?;
        }
    }
    Ok(doc)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn strings(v: Option<&Value>) -> Option<Vec<&str>> {
    match v? {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

fn check_resource(resource: &str, account: &Account) -> StsResult<()> {
    if resource == "*" {
        return Ok(());
    }
    let resource_error =
        || StsFault::new("InvalidParameter.ResouceError", "[QC_STS] resource error");
    let grant_other = || {
        StsFault::new(
            "InvalidParameter.GrantOtherResource",
            "[QC_STS] cant grant other resource",
        )
    };
    if let Some(rest) = resource.strip_prefix("qcs::cos:")
        && let Some((region, uid, owner)) = legacy_prefix_resource(rest)
    {
        // The older `qcs::cos:<region>:uid/<appid>:prefix//<appid>/<bucket>/<key>` form that
        // the Node SDK's getPolicy still emits (reference §3.3).
        if region.is_empty() || owner.is_empty() || !owner.bytes().all(|b| b.is_ascii_digit()) {
            return Err(resource_error());
        }
        if uid != account.appid || owner != account.appid {
            return Err(grant_other());
        }
        return Ok(());
    }
    if resource.starts_with("qcs::cos:") {
        let parsed = parse_cos_resource(resource).ok_or_else(resource_error)?;
        let bucket_appid = appid_of_bucket(parsed.bucket).ok_or_else(resource_error)?;
        if parsed.region.is_empty() {
            return Err(resource_error());
        }
        if parsed.appid != account.appid || bucket_appid != account.appid {
            return Err(grant_other());
        }
        return Ok(());
    }
    // Other services: six colon-separated segments, and a uid/ owner that must be the caller's.
    let segments: Vec<&str> = resource.splitn(6, ':').collect();
    if segments.len() != 6 || segments[0] != "qcs" {
        return Err(resource_error());
    }
    if let Some(uid) = segments[4].strip_prefix("uid/")
        && uid != account.appid
    {
        return Err(grant_other());
    }
    Ok(())
}

/// Splits `<region>:uid/<appid>:prefix//<owner>/…` into `(region, appid, owner)`.
fn legacy_prefix_resource(rest: &str) -> Option<(&str, &str, &str)> {
    let (region, rest) = rest.split_once(':')?;
    let (uid, rest) = rest.strip_prefix("uid/")?.split_once(':')?;
    let owner = rest.strip_prefix("prefix//")?.split('/').next()?;
    Some((region, uid, owner))
}

fn get_federation_token(state: &State, call: &Call, request_id: &str) -> StsResult<Value> {
    let name = call.required("Name")?;
    if name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
    {
        return Err(StsFault::new(
            "InvalidParameter.ParamError",
            "Name must be 1 to 128 characters of letters, digits and _+=,.@-.",
        ));
    }
    let policy = check_policy(&call.required("Policy")?, &call.account)?;
    let duration = call.duration(FEDERATION_DEFAULT, FEDERATION_MAX)?;
    Ok(issue(
        state,
        call,
        request_id,
        name,
        None,
        None,
        Some(policy),
        duration,
    ))
}

fn assume_role(state: &State, call: &Call, request_id: &str) -> StsResult<Value> {
    let role_arn = call.required("RoleArn")?;
    let session = call.required("RoleSessionName")?;
    let well_formed_arn = role_arn
        .strip_prefix("qcs::cam::uin/")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(uin, role)| {
            !uin.is_empty()
                && uin.bytes().all(|b| b.is_ascii_digit())
                && (role.starts_with("roleName/") || role.starts_with("role/"))
                && role.split_once('/').is_some_and(|(_, n)| !n.is_empty())
        });
    if !well_formed_arn {
        return Err(StsFault::new(
            "ResourceNotFound.RoleNotFound",
            format!("Role {role_arn:?} does not exist."),
        ));
    }
    let valid = |s: &str, extra: &[u8]| {
        (2..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    };
    if !valid(&session, b"_+=,.@-") {
        return Err(StsFault::new(
            "InvalidParameter.ParamError",
            "RoleSessionName must be 2 to 128 characters of [\\w+=,.@-].",
        ));
    }
    let external_id = call.string("ExternalId").filter(|s| !s.is_empty());
    if let Some(ext) = &external_id
        && !valid(ext, b"_+=,.@:/-")
    {
        return Err(StsFault::new(
            "InvalidParameter.ParamError",
            "ExternalId must be 2 to 128 characters of [\\w+=,.@:/-].",
        ));
    }
    let policy = match call.string("Policy").filter(|s| !s.is_empty()) {
        Some(raw) => Some(check_policy(&raw, &call.account)?),
        None => None,
    };
    let duration = call.duration(ROLE_DEFAULT, ROLE_MAX)?;
    Ok(issue(
        state,
        call,
        request_id,
        session,
        Some(role_arn),
        external_id,
        policy,
        duration,
    ))
}

fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn issue(
    state: &State,
    call: &Call,
    request_id: &str,
    name: String,
    role_arn: Option<String>,
    external_id: Option<String>,
    policy: Option<Value>,
    duration: u64,
) -> Value {
    let mut rng = rand::rng();
    // Real TmpSecretIds look like `AKIDTRPc-oe6c_avPSRwFVsPDyy3IoAr3szMajlOGuoEXY1232YLy6j4f-xZ5zL-NBMG`.
    let tmp_secret_id = format!("AKID{}", random_string(64));
    let mut key_bytes = [0u8; 32];
    rng.fill(&mut key_bytes);
    let tmp_secret_key = STANDARD.encode(key_bytes);
    // Tokens grow with the attached policy, up to STS's 4096-byte maximum (reference §2.6).
    let policy_len = policy.as_ref().map_or(0, |p| p.to_string().len());
    let token_len = (480 + policy_len / 2).min(4096);
    let mut seed = vec![0u8; token_len];
    rng.fill(&mut seed[..]);
    let digest = Sha256::digest(&seed);
    let token = format!(
        "{}{}",
        hex::encode(&digest[..8]),
        URL_SAFE_NO_PAD.encode(&seed)
    )[..token_len]
        .to_owned();
    let expired_time = call.now + duration as i64;
    let expiration = sts_core::client::iso8601(expired_time);
    state.store.insert(IssuedCredential {
        tmp_secret_id: tmp_secret_id.clone(),
        tmp_secret_key: tmp_secret_key.clone(),
        token: token.clone(),
        secret_id: call.account.secret_id.clone(),
        appid: call.account.appid.clone(),
        action: call.action.clone(),
        name,
        role_arn,
        external_id,
        policy,
        duration_seconds: duration,
        issued_at: call.now,
        expired_time,
        request_id: request_id.to_owned(),
    });
    json!({
        "Credentials": {"Token": token, "TmpSecretId": tmp_secret_id, "TmpSecretKey": tmp_secret_key},
        "ExpiredTime": expired_time,
        "Expiration": expiration,
    })
}
