//! Which bucket and key a request names, and whether it is a COS request at all.
//!
//! Addressing styles, in order:
//! 1. virtual host: `Host: <bucket>.<anything>` where the first label is `<name>-<digits>`
//!    (`<bucket>.cos.<region>.myqcloud.com` also gives the region). Reached through an SDK's
//!    proxy setting (absolute-form request target) or an `/etc/hosts` entry.
//! 2. path style: `/<bucket>/<key>` where `<bucket>` belongs to a configured APPID (any Host,
//!    typically `127.0.0.1:PORT`; `cos.<region>.myqcloud.com` gives the region). Clients that
//!    template the bucket into their endpoint sign `/<key>`; cos-js-sdk-v5's `ForcePathStyle`
//!    signs `/<bucket>/<key>`: both are accepted.
//! 3. the configured default bucket (`--cos-default-bucket`): `/<key>` on any other Host.

use actix_web::HttpRequest;
use actix_web::dev::RequestHead;
use actix_web::http::StatusCode;
use sts_core::encoding::uri_decode;
use sts_core::policy::appid_of_bucket;

use super::{CosError, CosResult};
use crate::server::State;

/// The bucket and key a COS request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub bucket: String,
    pub appid: String,
    /// The region named by the Host, if any; `None` matches every region in a policy.
    pub region: Option<String>,
    /// The decoded key, no leading `/`; empty for the bucket itself.
    pub key: String,
    /// The decoded paths a client may have signed for this request.
    pub sign_paths: Vec<String>,
}

fn host_of(head: &RequestHead) -> Option<&str> {
    head.headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .or_else(|| head.uri.authority().map(|a| a.as_str()))
}

/// The host without its port (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// The bucket a virtual-host `Host` names, and the region when the Host is a COS domain.
fn virtual_host(host: &str) -> Option<(String, Option<String>)> {
    let host = strip_port(host).to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2 || appid_of_bucket(labels[0]).is_none() {
        return None;
    }
    Some((labels[0].to_owned(), region_after(&labels[1..])))
}

/// `cos.<region>.…` (and `cos-internal`, `cos-website`) names a region.
fn region_after(labels: &[&str]) -> Option<String> {
    match labels {
        [service, region, ..]
            if matches!(*service, "cos" | "cos-internal" | "cos-website")
                && region.contains('-') =>
        {
            Some((*region).to_owned())
        }
        _ => None,
    }
}

fn configured_bucket(state: &State, bucket: &str) -> bool {
    appid_of_bucket(bucket)
        .is_some_and(|appid| state.config.accounts.iter().any(|a| a.appid == appid))
}

fn first_segment(path: &str) -> &str {
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
}

fn has_cos_auth(head: &RequestHead) -> bool {
    let in_header = head
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("q-sign-algorithm"));
    in_header
        || head
            .uri
            .query()
            .is_some_and(|q| q.to_ascii_lowercase().contains("q-sign-algorithm"))
}

/// Whether the request is for the COS data plane rather than STS.
pub(crate) fn is_cos_request(head: &RequestHead, state: &State) -> bool {
    if head.uri.path().starts_with("/_emulator/") {
        return false;
    }
    // A bucket-like first label counts on a COS domain or for a configured APPID, so that a
    // host such as `emulator-1.internal` still reaches STS.
    let named_bucket = host_of(head)
        .and_then(virtual_host)
        .is_some_and(|(bucket, region)| region.is_some() || configured_bucket(state, &bucket));
    named_bucket
        || configured_bucket(state, &uri_decode(first_segment(head.uri.path())))
        || has_cos_auth(head)
}

/// Resolves the bucket, key and signed-path candidates of a COS request.
pub(crate) fn resolve(req: &HttpRequest, state: &State) -> CosResult<Target> {
    let head = req.head();
    let host = host_of(head).unwrap_or_default();
    let path = uri_decode(head.uri.path());
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let (bucket, region, key, sign_paths) = if let Some((bucket, region)) = virtual_host(host) {
        let key = path[1..].to_owned();
        (bucket, region, key, vec![path])
    } else if configured_bucket(state, first_segment(&path)) {
        let bucket = first_segment(&path).to_owned();
        let key = path[1 + bucket.len()..]
            .strip_prefix('/')
            .unwrap_or_default()
            .to_owned();
        let lower = strip_port(host).to_ascii_lowercase();
        let labels: Vec<&str> = lower.split('.').collect();
        let region = region_after(&labels);
        let short = format!("/{key}");
        (bucket, region, key, vec![path, short])
    } else if let Some(bucket) = &state.config.cos_default_bucket {
        let key = path[1..].to_owned();
        (bucket.clone(), None, key, vec![path])
    } else {
        return Err(CosError::new(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The request names no bucket: use a `<bucket>.cos.<region>.myqcloud.com` Host, \
             a `/<bucket>/<key>` path, or start the emulator with --cos-default-bucket.",
        ));
    };
    let appid = appid_of_bucket(&bucket)
        .filter(|appid| state.config.accounts.iter().any(|a| &a.appid == appid))
        .ok_or_else(|| {
            CosError::new(
                StatusCode::NOT_FOUND,
                "NoSuchBucket",
                "The specified bucket does not exist.",
            )
        })?
        .to_owned();
    Ok(Target {
        bucket,
        appid,
        region,
        key,
        sign_paths,
    })
}

/// The values a client may have signed as `host`: the header as sent, and without its port
/// (cos-python-sdk-v5 signs the URL's hostname, which has no port).
pub(crate) fn host_candidates(req: &HttpRequest) -> Vec<String> {
    let host = host_of(req.head()).unwrap_or_default();
    let mut out = vec![host.to_owned()];
    let bare = strip_port(host);
    if bare != host {
        out.push(bare.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosts() {
        assert_eq!(
            virtual_host("examplebucket-1250000000.cos.ap-guangzhou.myqcloud.com"),
            Some((
                "examplebucket-1250000000".to_owned(),
                Some("ap-guangzhou".to_owned())
            ))
        );
        assert_eq!(
            virtual_host("examplebucket-1250000000.localhost:9100"),
            Some(("examplebucket-1250000000".to_owned(), None))
        );
        assert_eq!(virtual_host("127.0.0.1:9100"), None);
        assert_eq!(virtual_host("sts.tencentcloudapi.com"), None);
        assert_eq!(virtual_host("localhost"), None);
        assert_eq!(virtual_host("examplebucket-1250000000"), None);
    }

    #[test]
    fn ports() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
