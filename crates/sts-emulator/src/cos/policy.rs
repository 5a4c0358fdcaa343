//! CAM session-policy evaluation for COS requests (reference §3).
//!
//! * Actions: `*`, `cos:X`, `name/cos:X`, and `*` wildcards anywhere (`cos:*`, `name/cos:Get*`).
//!   Case-sensitive, as CAM's are.
//! * Resources: `*`, exact, or a trailing `*` prefix match; `<bucket>/*` never matches the
//!   bucket-level resource `<bucket>/`. The legacy `…:prefix//<appid>/<short>/<key>` form is read
//!   as `…:<short>-<appid>/<key>`. A request without a region (path style on a plain host)
//!   matches any region in the policy.
//! * Deny overrides allow; nothing allowing the request means deny.
//! * Conditions: operators AND'ed, keys AND'ed, values under one key OR'ed (for a negated
//!   operator: the value must differ from every listed value). A key the request lacks fails the
//!   condition unless the operator ends in `_if_exist`. An unknown operator or key fails.

use std::net::IpAddr;

use serde_json::Value;

/// What a condition can look at.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestContext {
    pub peer_ip: Option<IpAddr>,
    pub content_length: Option<u64>,
    pub content_type: Option<String>,
    /// GetBucket's `prefix` parameter, when given.
    pub prefix: Option<String>,
}

impl RequestContext {
    fn value(&self, key: &str) -> Option<KeyValue> {
        match key {
            "qcs:ip" => self.peer_ip.map(KeyValue::Ip),
            "cos:content-length" => self.content_length.map(|n| KeyValue::Number(n as f64)),
            "cos:content-type" => self.content_type.clone().map(KeyValue::Text),
            "cos:prefix" => self.prefix.clone().map(KeyValue::Text),
            // The emulator only speaks plain HTTP.
            "cos:secure-transport" => Some(KeyValue::Text("false".to_owned())),
            _ => None,
        }
    }

    fn knows(key: &str) -> bool {
        matches!(
            key,
            "qcs:ip"
                | "cos:content-length"
                | "cos:content-type"
                | "cos:prefix"
                | "cos:secure-transport"
        )
    }
}

enum KeyValue {
    Ip(IpAddr),
    Number(f64),
    Text(String),
}

impl KeyValue {
    fn text(&self) -> String {
        match self {
            KeyValue::Ip(ip) => ip.to_string(),
            KeyValue::Number(n) => n.to_string(),
            KeyValue::Text(s) => s.clone(),
        }
    }
}

/// The outcome of evaluating a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    /// An explicit deny statement matched.
    ExplicitDeny,
    /// No statement allowed the request.
    NotAllowed,
}

/// One request to authorize: action name without prefix (`GetObject`) and resource.
pub(crate) struct Check<'a> {
    pub action: &'a str,
    /// `qcs::cos:{region}:uid/{appid}:{bucket}/{key}` with the region left out when unknown:
    /// the parts are kept apart so a region-less request can match any region.
    pub region: Option<&'a str>,
    pub appid: &'a str,
    pub bucket: &'a str,
    pub key: &'a str,
    pub context: &'a RequestContext,
}

/// Reads a field in either CAM spelling (`effect` / `Effect`).
fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn evaluate(policy: &Value, check: &Check<'_>) -> Decision {
    let statements = match field(policy, "statement") {
        Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => return Decision::NotAllowed,
    };
    let mut allowed = false;
    for st in statements {
        let effect = field(st, "effect")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        let applies = strings(field(st, "action"))
            .iter()
            .any(|a| action_matches(a, check.action))
            && strings(field(st, "resource"))
                .iter()
                .any(|r| resource_matches(r, check))
            && conditions_hold(field(st, "condition"), check.context);
        if !applies {
            continue;
        }
        match effect.as_deref() {
            Some("deny") => return Decision::ExplicitDeny,
            Some("allow") => allowed = true,
            _ => {}
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::NotAllowed
    }
}

/// `*` matches any run of characters (including none).
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text.ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

fn action_matches(pattern: &str, action: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let pattern = pattern.strip_prefix("name/").unwrap_or(pattern);
    glob(pattern, &format!("cos:{action}"))
}

/// `qcs::cos:<region>:uid/<appid>:prefix//<appid>/<short>/<key>` → the current form.
fn modernise(resource: &str) -> Option<String> {
    let rest = resource.strip_prefix("qcs::cos:")?;
    let (region, rest) = rest.split_once(':')?;
    let (uid, rest) = rest.strip_prefix("uid/")?.split_once(':')?;
    let rest = rest.strip_prefix("prefix//")?;
    let (owner, rest) = rest.split_once('/')?;
    let (short, key) = rest.split_once('/').unwrap_or((rest, ""));
    (owner == uid).then(|| format!("qcs::cos:{region}:uid/{uid}:{short}-{owner}/{key}"))
}

fn resource_matches(pattern: &str, check: &Check<'_>) -> bool {
    if pattern == "*" {
        return true;
    }
    let pattern = modernise(pattern).unwrap_or_else(|| pattern.to_owned());
    // The request's region, or (when the request names none) the pattern's own.
    let region = match check.region {
        Some(r) => r,
        None => pattern
            .strip_prefix("qcs::cos:")
            .and_then(|rest| rest.split_once(':'))
            .map_or("", |(r, _)| r),
    };
    let resource = format!(
        "qcs::cos:{region}:uid/{}:{}/{}",
        check.appid, check.bucket, check.key
    );
    match pattern.strip_suffix('*') {
        None => pattern == resource,
        Some(prefix) => {
            let bucket_level = check.key.is_empty() && prefix == resource;
            resource.starts_with(prefix) && !bucket_level
        }
    }
}

fn conditions_hold(conditions: Option<&Value>, context: &RequestContext) -> bool {
    let Some(conditions) = conditions else {
        return true;
    };
    let Some(blocks) = conditions.as_object() else {
        return false;
    };
    blocks.iter().all(|(operator, keys)| {
        let Some(keys) = keys.as_object() else {
            return false;
        };
        keys.iter()
            .all(|(key, values)| condition_holds(operator, key, values, context))
    })
}

fn condition_holds(operator: &str, key: &str, values: &Value, context: &RequestContext) -> bool {
    // Single-valued keys only: the set qualifiers change nothing here.
    let operator = operator
        .strip_prefix("for_any_value:")
        .or_else(|| operator.strip_prefix("for_all_value:"))
        .unwrap_or(operator);
    let (operator, if_exist) = match operator.strip_suffix("_if_exist") {
        Some(op) => (op, true),
        None => (operator, false),
    };
    let key = key.to_ascii_lowercase();
    if !RequestContext::knows(&key) {
        return false;
    }
    let Some(actual) = context.value(&key) else {
        return if_exist;
    };
    let listed: Vec<&Value> = match values {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let as_text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let as_number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let any = |f: &dyn Fn(&Value) -> bool| listed.iter().any(|v| f(v));
    match operator {
        "string_equal" => any(&|v| as_text(v).is_some_and(|t| t == actual.text())),
        "string_not_equal" => !any(&|v| as_text(v).is_some_and(|t| t == actual.text())),
        "string_equal_ignore_case" => {
            any(&|v| as_text(v).is_some_and(|t| t.eq_ignore_ascii_case(&actual.text())))
        }
        "string_not_equal_ignore_case" => {
            !any(&|v| as_text(v).is_some_and(|t| t.eq_ignore_ascii_case(&actual.text())))
        }
        "string_like" => any(&|v| as_text(v).is_some_and(|t| glob(&t, &actual.text()))),
        "string_not_like" => !any(&|v| as_text(v).is_some_and(|t| glob(&t, &actual.text()))),
        "bool_equal" => any(&|v| as_text(v).is_some_and(|t| t == actual.text())),
        "ip_equal" | "ip_not_equal" => {
            let KeyValue::Ip(ip) = actual else {
                return false;
            };
            let hit = any(&|v| as_text(v).is_some_and(|cidr| cidr_contains(&cidr, ip)));
            if operator == "ip_equal" { hit } else { !hit }
        }
        numeric if numeric.starts_with("numeric_") => {
            let KeyValue::Number(n) = actual else {
                return false;
            };
            let cmp = |limit: f64| match numeric {
                "numeric_equal" => Some(n == limit),
                "numeric_not_equal" => Some(n != limit),
                "numeric_greater_than" => Some(n > limit),
                "numeric_greater_than_equal" => Some(n >= limit),
                "numeric_less_than" => Some(n < limit),
                "numeric_less_than_equal" => Some(n <= limit),
                _ => None,
            };
            if numeric == "numeric_not_equal" {
                !any(&|v| as_number(v).is_some_and(|l| n == l))
            } else {
                any(&|v| as_number(v).and_then(cmp).unwrap_or(false))
            }
        }
        _ => false,
    }
}

/// `a.b.c.d`, `a.b.c.d/n`, or an IPv6 address with an optional prefix length.
fn cidr_contains(cidr: &str, ip: IpAddr) -> bool {
    let (addr, len) = match cidr.trim().split_once('/') {
        Some((a, l)) => match l.parse::<u32>() {
            Ok(l) => (a, Some(l)),
            Err(_) => return false,
        },
        None => (cidr.trim(), None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    // An IPv4 client seen over an IPv6 socket.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let len = len.unwrap_or(32);
            if len > 32 {
                return false;
            }
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let len = len.unwrap_or(128);
            if len > 128 {
                return false;
            }
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const BUCKET: &str = "examplebucket-1250000000";

    fn check<'a>(action: &'a str, key: &'a str, ctx: &'a RequestContext) -> Check<'a> {
        Check {
            action,
            region: Some("ap-guangzhou"),
            appid: "1250000000",
            bucket: BUCKET,
            key,
            context: ctx,
        }
    }

    fn res(key: &str) -> String {
        format!("qcs::cos:ap-guangzhou:uid/1250000000:{BUCKET}/{key}")
    }

    fn allow(action: &str, resource: &str) -> Value {
        json!({"version":"2.0","statement":[{"effect":"allow","action":[action],"resource":[resource]}]})
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("a*", "abc"));
        assert!(glob("*c", "abc"));
        assert!(glob("a*c", "abc"));
        assert!(glob("cos:*Bucket*", "cos:GetBucketACL"));
        assert!(!glob("a*c", "ab"));
        assert!(!glob("abc", "abcd"));
        assert!(glob("image/*", "image/png"));
    }

    #[test]
    fn actions() {
        let ctx = RequestContext::default();
        for pattern in [
            "name/cos:GetObject",
            "cos:GetObject",
            "name/cos:*",
            "cos:*",
            "*",
            "name/cos:Get*",
        ] {
            assert_eq!(
                evaluate(&allow(pattern, "*"), &check("GetObject", "k", &ctx)),
                Decision::Allow,
                "{pattern}"
            );
        }
        for pattern in [
            "name/cos:getobject",
            "name/cos:PutObject",
            "cam:*",
            "cos:Get",
        ] {
            assert_eq!(
                evaluate(&allow(pattern, "*"), &check("GetObject", "k", &ctx)),
                Decision::NotAllowed,
                "{pattern}"
            );
        }
    }

    #[test]
    fn resources() {
        let ctx = RequestContext::default();
        let c = |key| check("GetObject", key, &ctx);
        let p = allow("cos:*", &res("users/alice/*"));
        assert_eq!(evaluate(&p, &c("users/alice/a.jpg")), Decision::Allow);
        assert_eq!(evaluate(&p, &c("users/alice/")), Decision::Allow);
        assert_eq!(evaluate(&p, &c("users/alice")), Decision::NotAllowed);
        assert_eq!(evaluate(&p, &c("users/bob/a.jpg")), Decision::NotAllowed);
        let all = allow("cos:*", &res("*"));
        assert_eq!(evaluate(&all, &c("x")), Decision::Allow);
        assert_eq!(evaluate(&all, &c("")), Decision::NotAllowed);
        let bucket = allow("cos:*", &res(""));
        assert_eq!(evaluate(&bucket, &c("")), Decision::Allow);
        assert_eq!(evaluate(&bucket, &c("x")), Decision::NotAllowed);
        let exact = allow("cos:*", &res("a.txt"));
        assert_eq!(evaluate(&exact, &c("a.txt")), Decision::Allow);
        assert_eq!(evaluate(&exact, &c("a.txt2")), Decision::NotAllowed);
        let legacy = allow(
            "cos:*",
            "qcs::cos:ap-guangzhou:uid/1250000000:prefix//1250000000/examplebucket/users/*",
        );
        assert_eq!(evaluate(&legacy, &c("users/x")), Decision::Allow);
        assert_eq!(evaluate(&legacy, &c("other")), Decision::NotAllowed);
        let other_region = allow(
            "cos:*",
            &format!("qcs::cos:ap-beijing:uid/1250000000:{BUCKET}/*"),
        );
        assert_eq!(evaluate(&other_region, &c("x")), Decision::NotAllowed);
        let mut no_region = c("x");
        no_region.region = None;
        assert_eq!(evaluate(&other_region, &no_region), Decision::Allow);
    }

    #[test]
    fn deny_wins() {
        let ctx = RequestContext::default();
        let p = json!({"version":"2.0","statement":[
            {"effect":"allow","action":"*","resource":"*"},
            {"effect":"deny","action":["name/cos:GetObject"],"resource":[res("secret/*")]}]});
        assert_eq!(
            evaluate(&p, &check("GetObject", "secret/x", &ctx)),
            Decision::ExplicitDeny
        );
        assert_eq!(
            evaluate(&p, &check("GetObject", "public/x", &ctx)),
            Decision::Allow
        );
    }

    fn with_condition(condition: Value) -> Value {
        json!({"version":"2.0","statement":[{"effect":"allow","action":"*","resource":"*","condition":condition}]})
    }

    #[test]
    fn conditions() {
        let ctx = RequestContext {
            peer_ip: Some("10.1.2.3".parse().unwrap()),
            content_length: Some(100),
            content_type: Some("image/png".to_owned()),
            prefix: None,
        };
        let ok = |cond: Value| evaluate(&with_condition(cond), &check("PutObject", "k", &ctx));
        assert_eq!(
            ok(json!({"ip_equal":{"qcs:ip":["10.1.0.0/16"]}})),
            Decision::Allow
        );
        assert_eq!(
            ok(json!({"ip_equal":{"qcs:ip":"10.2.0.0/16"}})),
            Decision::NotAllowed
        );
        assert_eq!(
            ok(json!({"ip_not_equal":{"qcs:ip":"10.2.0.0/16"}})),
            Decision::Allow
        );
        assert_eq!(
            ok(json!({"numeric_less_than_equal":{"cos:content-length":100}})),
            Decision::Allow
        );
        assert_eq!(
            ok(json!({"numeric_less_than_equal":{"cos:content-length":"99"}})),
            Decision::NotAllowed
        );
        assert_eq!(
            ok(json!({"string_like":{"cos:content-type":"image/*"}})),
            Decision::Allow
        );
        assert_eq!(
            ok(json!({"string_equal":{"cos:content-type":["text/plain","image/png"]}})),
            Decision::Allow
        );
        assert_eq!(
            ok(json!({"string_equal":{"cos:prefix":"a/"}})),
            Decision::NotAllowed
        );
        assert_eq!(
            ok(json!({"string_equal_if_exist":{"cos:prefix":"a/"}})),
            Decision::Allow
        );
        assert_eq!(
            ok(json!({"string_equal":{"cos:unknown":"a/"}})),
            Decision::NotAllowed
        );
        assert_eq!(
            ok(json!({"no_such_operator":{"cos:content-type":"image/png"}})),
            Decision::NotAllowed
        );
        // Keys and operators are AND'ed.
        assert_eq!(
            ok(
                json!({"ip_equal":{"qcs:ip":"10.0.0.0/8"},"string_equal":{"cos:content-type":"text/plain"}})
            ),
            Decision::NotAllowed
        );
    }

    #[test]
    fn cidrs() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(cidr_contains("127.0.0.1", ip("127.0.0.1")));
        assert!(cidr_contains("0.0.0.0/0", ip("8.8.8.8")));
        assert!(cidr_contains("127.0.0.0/8", ip("::ffff:127.0.0.1")));
        assert!(!cidr_contains("127.0.0.0/33", ip("127.0.0.1")));
        assert!(cidr_contains("::1/128", ip("::1")));
        assert!(!cidr_contains("bogus", ip("::1")));
    }
}
