//! The CAM policy model for STS session policies (reference §3).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::encoding::uri_encode;

/// The one policy grammar version CAM accepts.
pub const POLICY_VERSION: &str = "2.0";

/// CAM's documented limit: 4096 characters, not counting spaces.
pub const MAX_POLICY_CHARS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy version must be \"2.0\", got {0:?}")]
    Version(String),
    #[error("policy has no statements")]
    NoStatements,
    #[error("statement {0} has no actions")]
    NoActions(usize),
    #[error("statement {0} has no resources")]
    NoResources(usize),
    #[error("statement {0} contains `principal`, which STS session policies must not carry")]
    Principal(usize),
    #[error("policy is {0} characters long without spaces; the limit is {MAX_POLICY_CHARS}")]
    TooLong(usize),
    #[error("bucket {0:?} must be `<name>-<appid>` with a numeric APPID")]
    Bucket(String),
    #[error("region {0:?} must be a long region name such as ap-guangzhou")]
    Region(String),
    #[error("policy is not valid JSON: {0}")]
    Json(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    #[serde(alias = "Allow")]
    Allow,
    #[serde(alias = "Deny")]
    Deny,
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        })
    }
}

/// Condition blocks: `{operator: {key: value or [values]}}`.
pub type Conditions = BTreeMap<String, BTreeMap<String, serde_json::Value>>;

/// One policy statement. `action` and `resource` accept a string or a list on input and are
/// always written as lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(alias = "Effect")]
    pub effect: Effect,
    #[serde(alias = "Action", deserialize_with = "one_or_many")]
    pub action: Vec<String>,
    #[serde(alias = "Resource", deserialize_with = "one_or_many")]
    pub resource: Vec<String>,
    #[serde(
        alias = "Condition",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub condition: Conditions,
    /// Parsed only so that [`Policy::validate`] can refuse it; stsgate never writes one.
    #[serde(alias = "Principal", default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<serde_json::Value>,
}

impl Statement {
    pub fn new(effect: Effect, action: Vec<String>, resource: Vec<String>) -> Self {
        Self {
            effect,
            action,
            resource,
            condition: Conditions::new(),
            principal: None,
        }
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// A CAM policy document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(alias = "Version")]
    pub version: String,
    #[serde(alias = "Statement")]
    pub statement: Vec<Statement>,
}

impl Policy {
    pub fn new(statement: Vec<Statement>) -> Self {
        Self {
            version: POLICY_VERSION.to_owned(),
            statement,
        }
    }

    /// Parses a JSON document (no validation beyond the grammar; call [`Policy::validate`]).
    pub fn from_json(json: &str) -> Result<Self, PolicyError> {
        serde_json::from_str(json).map_err(|e| PolicyError::Json(e.to_string()))
    }

    /// Compact JSON, the form sent to STS and hashed for the credential cache.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a policy always serializes")
    }

    /// The `Policy` parameter as STS wants it: the JSON, percent-encoded (reference §2.9).
    pub fn to_url_encoded(&self) -> String {
        uri_encode(&self.to_json())
    }

    /// Checks what STS would refuse: version, empty statements, `principal`, and length.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.version != POLICY_VERSION {
            return Err(PolicyError::Version(self.version.clone()));
        }
        if self.statement.is_empty() {
            return Err(PolicyError::NoStatements);
        }
        for (i, st) in self.statement.iter().enumerate() {
            if st.principal.is_some() {
                return Err(PolicyError::Principal(i));
            }
            if st.action.is_empty() {
                return Err(PolicyError::NoActions(i));
            }
            if st.resource.is_empty() {
                return Err(PolicyError::NoResources(i));
            }
        }
        let len = non_space_len(&self.to_json());
        if len > MAX_POLICY_CHARS {
            return Err(PolicyError::TooLong(len));
        }
        Ok(())
    }
}

/// Characters that count against the CAM limit: everything but whitespace.
pub fn non_space_len(s: &str) -> usize {
    s.chars().filter(|c| !c.is_whitespace()).count()
}

/// Builds `qcs::cos:{region}:uid/{appid}:{bucket}/{key}` resources for one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosResource {
    region: String,
    bucket: String,
    appid: String,
}

impl CosResource {
    /// `bucket` is the full name, `<name>-<appid>`; the APPID is what follows the last `-`.
    pub fn new(region: &str, bucket: &str) -> Result<Self, PolicyError> {
        let valid_region = region.contains('-')
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_region {
            return Err(PolicyError::Region(region.to_owned()));
        }
        let appid =
            appid_of_bucket(bucket).ok_or_else(|| PolicyError::Bucket(bucket.to_owned()))?;
        Ok(Self {
            region: region.to_owned(),
            bucket: bucket.to_owned(),
            appid: appid.to_owned(),
        })
    }

    pub fn appid(&self) -> &str {
        &self.appid
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// An object (or object-pattern) resource: `key` has no leading `/`.
    pub fn object(&self, key: &str) -> String {
        format!(
            "qcs::cos:{}:uid/{}:{}/{}",
            self.region,
            self.appid,
            self.bucket,
            key.trim_start_matches('/')
        )
    }

    /// The bucket itself, for bucket-level actions such as GetBucket: note the trailing `/`.
    pub fn bucket_level(&self) -> String {
        self.object("")
    }
}

/// The APPID of a full bucket name, if it has one.
pub fn appid_of_bucket(bucket: &str) -> Option<&str> {
    let (name, appid) = bucket.rsplit_once('-')?;
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let appid_ok = !appid.is_empty() && appid.bytes().all(|b| b.is_ascii_digit());
    (name_ok && appid_ok).then_some(appid)
}

/// A COS resource string split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCosResource<'a> {
    pub region: &'a str,
    pub appid: &'a str,
    pub bucket: &'a str,
    /// The key pattern after `{bucket}/`, possibly empty (bucket-level).
    pub key: &'a str,
}

/// Parses `qcs::cos:{region}:uid/{appid}:{bucket}/{key}`. Other forms return `None`.
pub fn parse_cos_resource(resource: &str) -> Option<ParsedCosResource<'_>> {
    let rest = resource.strip_prefix("qcs::cos:")?;
    let (region, rest) = rest.split_once(':')?;
    let rest = rest.strip_prefix("uid/")?;
    let (appid, rest) = rest.split_once(':')?;
    let (bucket, key) = rest.split_once('/')?;
    Some(ParsedCosResource {
        region,
        appid,
        bucket,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload_policy() -> Policy {
        let res = CosResource::new("ap-guangzhou", "examplebucket-1250000000").unwrap();
        Policy::new(vec![Statement::new(
            Effect::Allow,
            vec!["name/cos:PutObject".into()],
            vec![res.object("users/42/*")],
        )])
    }

    #[test]
    fn resource_builder_takes_appid_from_bucket() {
        let res = CosResource::new("ap-beijing", "examplebucket-1250000000").unwrap();
        assert_eq!(res.appid(), "1250000000");
        assert_eq!(
            res.object("doc/audio.mp3"),
            "qcs::cos:ap-beijing:uid/1250000000:examplebucket-1250000000/doc/audio.mp3"
        );
        assert_eq!(
            res.bucket_level(),
            "qcs::cos:ap-beijing:uid/1250000000:examplebucket-1250000000/"
        );
        assert_eq!(
            CosResource::new("ap-beijing", "examplebucket"),
            Err(PolicyError::Bucket("examplebucket".into()))
        );
        assert!(CosResource::new("gz", "a-1").is_err());
        assert!(CosResource::new("ap-beijing", "Bad_Bucket-12").is_err());
    }

    #[test]
    fn parse_resource_roundtrip() {
        let p = parse_cos_resource(
            "qcs::cos:ap-beijing:uid/1250000000:examplebucket-1250000000/users/a/*",
        )
        .unwrap();
        assert_eq!(p.region, "ap-beijing");
        assert_eq!(p.appid, "1250000000");
        assert_eq!(p.bucket, "examplebucket-1250000000");
        assert_eq!(p.key, "users/a/*");
        assert!(parse_cos_resource("*").is_none());
        assert!(parse_cos_resource("qcs::cos:ap-beijing:uin/1:b-1/x").is_none());
    }

    #[test]
    fn serializes_to_the_vector_e_policy() {
        // Reference §1.9 vector E carries exactly this policy, URL-encoded.
        assert_eq!(
            upload_policy().to_url_encoded(),
            "%7B%22version%22%3A%222.0%22%2C%22statement%22%3A%5B%7B%22effect%22%3A%22allow%22%2C%22action%22%3A%5B%22name%2Fcos%3APutObject%22%5D%2C%22resource%22%3A%5B%22qcs%3A%3Acos%3Aap-guangzhou%3Auid%2F1250000000%3Aexamplebucket-1250000000%2Fusers%2F42%2F%2A%22%5D%7D%5D%7D"
        );
    }

    #[test]
    fn parses_strings_lists_and_capitalised_keys() {
        let p = Policy::from_json(
            r#"{"Version":"2.0","Statement":[{"Effect":"Allow","Action":"name/cos:GetObject","Resource":"*",
                "Condition":{"numeric_less_than_equal":{"cos:content-length":5242880}}}]}"#,
        )
        .unwrap();
        assert_eq!(p.statement[0].effect, Effect::Allow);
        assert_eq!(p.statement[0].action, ["name/cos:GetObject"]);
        assert_eq!(p.statement[0].resource, ["*"]);
        assert_eq!(
            p.statement[0].condition["numeric_less_than_equal"]["cos:content-length"],
            5242880
        );
        p.validate().unwrap();
    }

    #[test]
    fn validation_refuses_what_sts_refuses() {
        upload_policy().validate().unwrap();

        let mut p = upload_policy();
        p.version = "1.0".into();
        assert_eq!(p.validate(), Err(PolicyError::Version("1.0".into())));

        let p = Policy::from_json(
            r#"{"version":"2.0","statement":[{"effect":"allow","action":["*"],"resource":["*"],"principal":{"qcs":["*"]}}]}"#,
        )
        .unwrap();
        assert_eq!(p.validate(), Err(PolicyError::Principal(0)));

        assert_eq!(
            Policy::new(vec![]).validate(),
            Err(PolicyError::NoStatements)
        );

        let mut p = upload_policy();
        p.statement[0].action.clear();
        assert_eq!(p.validate(), Err(PolicyError::NoActions(0)));
    }

    #[test]
    fn length_limit_ignores_spaces() {
        let res = CosResource::new("ap-guangzhou", "examplebucket-1250000000").unwrap();
        let base = upload_policy().to_json().len();
        // Grow one resource until the document is exactly at the limit, then one past it.
        let pad = MAX_POLICY_CHARS - base;
        let mut p = upload_policy();
        p.statement[0].resource[0] = res.object(&format!("users/42/{}*", "a".repeat(pad)));
        assert_eq!(non_space_len(&p.to_json()), MAX_POLICY_CHARS);
        p.validate().unwrap();
        p.statement[0].resource[0] = res.object(&format!("users/42/{}*", "a".repeat(pad + 1)));
        assert_eq!(
            p.validate(),
            Err(PolicyError::TooLong(MAX_POLICY_CHARS + 1))
        );
        // Spaces do not count.
        p.statement[0].resource[0] =
            res.object(&format!("users/42/{} {}*", "a".repeat(pad - 1), "a"));
        assert_eq!(non_space_len(&p.to_json()), MAX_POLICY_CHARS);
        assert!(p.validate().is_ok());
    }
}
