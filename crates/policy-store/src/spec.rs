//! Apps as code (`stsgate apply` / `stsgate export`, `POST /api/v1/apply`): an app with
//! everything the store keeps for it, and the plan that converges the store to a list of them.
//!
//! The spec is the desired state; [`crate::AppsAsCodeStore::apply_specs`] compares it with
//! the stored state, validates everything with the store's own checks, and writes the
//! differences in one transaction. Secrets are write-only: they are never serialized, and a
//! secret left out keeps the stored one.

use std::collections::{HashMap, HashSet};

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{App, AppAuth, AppAuthInput, AppInput, StsMode};
use crate::origin::normalize_origins;
use crate::redact::mask_secret_id;
use crate::template::TemplateDocument;
use crate::validate::non_empty;

/// The most subjects one app's spec may list in `blocked_subjects`: an apply plans and writes
/// in one transaction, and a longer list belongs to the pages or the API.
pub const MAX_BLOCKED_SUBJECTS: usize = 10_000;

fn federation_token() -> StsMode {
    StsMode::FederationToken
}
fn default_duration() -> i32 {
    1800
}
fn default_duration_max() -> i32 {
    7200
}
fn default_rate_subject() -> i32 {
    60
}
fn default_rate_app() -> i32 {
    100
}
fn default_user_claim() -> String {
    "sub".into()
}
fn default_leeway() -> i32 {
    60
}

/// One app and all its settings. A field left out takes the new-app form's default, except
/// `enabled`, `jwt` and `template` (left out: kept as stored; a new app is enabled) and the
/// secrets (left out: kept).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub slug: String,
    pub name: String,
    /// Left out: kept as stored (an app an admin disabled stays disabled); a new app is
    /// enabled. Export always writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    pub region: String,
    /// Full bucket name, `<name>-<appid>`.
    pub bucket: String,
    #[serde(default = "federation_token")]
    #[schema(value_type = String, example = "federation_token")]
    pub mode: StsMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub secret_id: String,
    /// Write-only. Required for a new app; left out, the stored key is kept.
    #[serde(default, skip_serializing)]
    #[schema(value_type = Option<String>, format = Password)]
    pub secret_key: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sts_endpoint: Option<String>,
    #[serde(default = "default_duration")]
    pub duration_default: i32,
    #[serde(default = "default_duration_max")]
    pub duration_max: i32,
    /// Left out: half of each credential's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_remaining: Option<i32>,
    #[serde(default = "default_rate_subject")]
    pub rate_subject_per_minute: i32,
    #[serde(default = "default_rate_app")]
    pub rate_app_per_second: i32,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Subjects to keep blocked. Subjects blocked outside the spec are kept (and reported)
    /// unless the apply prunes.
    #[serde(default)]
    pub blocked_subjects: Vec<BlockSpec>,
    /// Left out: the stored JWT settings are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
    /// The policy template. Left out: the active version is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub template: Option<TemplateDocument>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockSpec {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An app's JWT settings (see [`AppAuthInput`]).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    /// Write-only; left out, the stored secret is kept.
    #[serde(default, skip_serializing)]
    #[schema(value_type = Option<String>, format = Password)]
    pub hs_secret: Option<SecretString>,
    #[serde(default)]
    pub public_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    #[serde(default = "default_leeway")]
    pub leeway_seconds: i32,
}

impl AppSpec {
    /// The store's input for this app (`stored`: the app as it is, None for a new one),
    /// cleaned as the pages clean a form.
    pub fn app_input(&self, stored: Option<&App>) -> AppInput {
        let opt = |v: &Option<String>| non_empty(v).map(|s| s.trim().to_owned());
        AppInput {
            slug: self.slug.trim().to_owned(),
            name: self.name.trim().to_owned(),
            enabled: self.enabled.unwrap_or(stored.is_none_or(|a| a.enabled)),
            region: self.region.trim().to_owned(),
            bucket: self.bucket.trim().to_owned(),
            mode: self.mode,
            role_arn: opt(&self.role_arn),
            external_id: opt(&self.external_id),
            secret_id: self.secret_id.trim().to_owned(),
            secret_key: self.secret_key.clone(),
            sts_endpoint: opt(&self.sts_endpoint),
            duration_default: self.duration_default,
            duration_max: self.duration_max,
            min_remaining: self.min_remaining,
            rate_subject_per_minute: self.rate_subject_per_minute,
            rate_app_per_second: self.rate_app_per_second,
            allowed_origins: self.allowed_origins.clone(),
        }
    }

    /// The spec of a stored app (secrets left out).
    pub fn from_stored(
        app: &App,
        auth: Option<&AppAuth>,
        template: Option<TemplateDocument>,
        blocked: Vec<BlockSpec>,
    ) -> Self {
        Self {
            slug: app.slug.clone(),
            name: app.name.clone(),
            enabled: Some(app.enabled),
            region: app.region.clone(),
            bucket: app.bucket.clone(),
            mode: app.mode,
            role_arn: app.role_arn.clone(),
            external_id: app.external_id.clone(),
            secret_id: app.secret_id.clone(),
            secret_key: None,
            sts_endpoint: app.sts_endpoint.clone(),
            duration_default: app.duration_default,
            duration_max: app.duration_max,
            min_remaining: app.min_remaining,
            rate_subject_per_minute: app.rate_subject_per_minute,
            rate_app_per_second: app.rate_app_per_second,
            allowed_origins: app.allowed_origins.clone(),
            blocked_subjects: blocked,
            jwt: auth.map(JwtSpec::from_stored),
            template,
        }
    }
}

impl JwtSpec {
    pub fn auth_input(&self) -> AppAuthInput {
        let mut algorithms: Vec<String> = Vec::with_capacity(self.algorithms.len());
        for a in &self.algorithms {
            let a = a.trim().to_owned();
            if !algorithms.contains(&a) {
                algorithms.push(a);
            }
        }
        AppAuthInput {
            issuer: non_empty(&self.issuer).map(|s| s.trim().to_owned()),
            audiences: self.audiences.iter().map(|a| a.trim().to_owned()).collect(),
            algorithms,
            hs_secret: self.hs_secret.clone(),
            public_keys: self.public_keys.clone(),
            jwks_url: non_empty(&self.jwks_url).map(|s| s.trim().to_owned()),
            user_claim: self.user_claim.trim().to_owned(),
            leeway_seconds: self.leeway_seconds,
        }
    }

    pub fn from_stored(a: &AppAuth) -> Self {
        Self {
            issuer: a.issuer.clone(),
            audiences: a.audiences.clone(),
            algorithms: a.algorithms.clone(),
            hs_secret: None,
            public_keys: a.public_keys.clone(),
            jwks_url: a.jwks_url.clone(),
            user_claim: a.user_claim.clone(),
            leeway_seconds: a.leeway_seconds,
        }
    }

    /// True when an HS algorithm is allowed (the settings then need an HS secret).
    pub fn uses_hs(&self) -> bool {
        self.algorithms.iter().any(|a| a.trim().starts_with("HS"))
    }
}

/// What to do with the state the specs do not mention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOptions {
    /// Compute and return the plan, change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Disable the apps the specs do not list (apps are never deleted: the issuance log
    /// names them), and unblock the subjects an app's spec does not list.
    #[serde(default)]
    pub prune: bool,
}

/// The changes an apply makes (or, dry, would make), app by app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    /// Every app of the specs, and the apps a prune disables, by slug.
    pub apps: Vec<AppPlan>,
    /// Stored apps the specs do not list, left as they are (without prune).
    pub unmanaged: Vec<String>,
    /// True when the changes were written (false for a dry run or when there was nothing to
    /// change).
    pub applied: bool,
}

impl Plan {
    /// How many apps change.
    pub fn changed_apps(&self) -> usize {
        self.apps
            .iter()
            .filter(|a| a.action != PlanAction::Unchanged)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.changed_apps() == 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppPlan {
    pub slug: String,
    pub action: PlanAction,
    /// Field by field; empty when unchanged.
    pub changes: Vec<FieldChange>,
    /// Notes that are not changes: subjects blocked outside the spec and kept, settings the
    /// spec leaves unmanaged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanAction {
    Create,
    Update,
    /// A prune disables an app the specs do not list.
    Disable,
    Unchanged,
}

/// One field's change. Secrets never appear: their values read `(set)` / `(changed)`; the
/// SecretId and ExternalId are masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldChange {
    /// e.g. `duration_max`, `jwt.audiences`, `template`, `blocked_subjects["mallory"]`.
    pub field: String,
    pub op: ChangeOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// `+`
    Add,
    /// `-`
    Remove,
    /// `~`
    Change,
}

impl ChangeOp {
    pub fn marker(self) -> char {
        match self {
            ChangeOp::Add => '+',
            ChangeOp::Remove => '-',
            ChangeOp::Change => '~',
        }
    }
}

const SECRET_SET: &str = "(set)";
const SECRET_CHANGED: &str = "(changed)";
const SECRET_STORED: &str = "(stored)";

fn change(field: &str, before: Option<Value>, after: Option<Value>) -> Option<FieldChange> {
    let norm = |v: Option<Value>| v.filter(|v| !v.is_null());
    let (before, after) = (norm(before), norm(after));
    if before == after {
        return None;
    }
    let op = match (&before, &after) {
        (None, _) => ChangeOp::Add,
        (_, None) => ChangeOp::Remove,
        _ => ChangeOp::Change,
    };
    Some(FieldChange {
        field: field.to_owned(),
        op,
        before,
        after,
    })
}

fn secret_change(
    field: &str,
    stored: Option<&SecretString>,
    given: Option<&SecretString>,
) -> Option<FieldChange> {
    let given = given?;
    match stored {
        Some(s) if secrets_equal(s, given) => None,
        Some(_) => Some(FieldChange {
            field: field.to_owned(),
            op: ChangeOp::Change,
            before: Some(SECRET_STORED.into()),
            after: Some(SECRET_CHANGED.into()),
        }),
        None => Some(FieldChange {
            field: field.to_owned(),
            op: ChangeOp::Add,
            before: None,
            after: Some(SECRET_SET.into()),
        }),
    }
}

/// True when two secrets are equal, compared in constant time (STYLE.md §8).
pub(crate) fn secrets_equal(a: &SecretString, b: &SecretString) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(
        a.expose_secret()
            .as_bytes()
            .ct_eq(b.expose_secret().as_bytes()),
    )
}

fn masked(v: &Option<String>) -> Option<Value> {
    v.as_deref().map(|s| Value::String(mask_secret_id(s)))
}

/// The app fields that differ between `stored` (None: a new app) and `input`.
pub(crate) fn app_changes(stored: Option<&App>, input: &AppInput) -> Vec<FieldChange> {
    use serde_json::json;
    let s = stored;
    let origins = normalize_origins(&input.allowed_origins);
    let pairs: Vec<(&str, Option<Value>, Option<Value>)> = vec![
        ("name", s.map(|a| json!(a.name)), Some(json!(input.name))),
        (
            "enabled",
            s.map(|a| json!(a.enabled)),
            Some(json!(input.enabled)),
        ),
        (
            "region",
            s.map(|a| json!(a.region)),
            Some(json!(input.region)),
        ),
        (
            "bucket",
            s.map(|a| json!(a.bucket)),
            Some(json!(input.bucket)),
        ),
        (
            "mode",
            s.map(|a| json!(a.mode.as_str())),
            Some(json!(input.mode.as_str())),
        ),
        (
            "role_arn",
            s.and_then(|a| a.role_arn.clone()).map(Value::from),
            input.role_arn.clone().map(Value::from),
        ),
        (
            "secret_id",
            s.and_then(|a| masked(&Some(a.secret_id.clone()))),
            masked(&Some(input.secret_id.clone())),
        ),
        (
            "sts_endpoint",
            s.and_then(|a| a.sts_endpoint.clone()).map(Value::from),
            input.sts_endpoint.clone().map(Value::from),
        ),
        (
            "duration_default",
            s.map(|a| json!(a.duration_default)),
            Some(json!(input.duration_default)),
        ),
        (
            "duration_max",
            s.map(|a| json!(a.duration_max)),
            Some(json!(input.duration_max)),
        ),
        (
            "min_remaining",
            s.and_then(|a| a.min_remaining).map(Value::from),
            input.min_remaining.map(Value::from),
        ),
        (
            "rate_subject_per_minute",
            s.map(|a| json!(a.rate_subject_per_minute)),
            Some(json!(input.rate_subject_per_minute)),
        ),
        (
            "rate_app_per_second",
            s.map(|a| json!(a.rate_app_per_second)),
            Some(json!(input.rate_app_per_second)),
        ),
        (
            "allowed_origins",
            s.map(|a| json!(a.allowed_origins))
                .filter(|v| v != &json!([])),
            Some(json!(origins)).filter(|v| v != &json!([])),
        ),
    ];
    let mut out: Vec<FieldChange> = pairs
        .into_iter()
        .filter_map(|(f, b, a)| change(f, b, a))
        .collect();
    // The SecretId is masked in the plan; a change hidden by the mask still shows.
    if let Some(a) = s
        && a.secret_id != input.secret_id
        && !out.iter().any(|c| c.field == "secret_id")
    {
        out.push(FieldChange {
            field: "secret_id".into(),
            op: ChangeOp::Change,
            before: masked(&Some(a.secret_id.clone())),
            after: masked(&Some(input.secret_id.clone())),
        });
    }
    let ext_before = s.and_then(|a| a.external_id.clone());
    if ext_before != input.external_id {
        let op = match (&ext_before, &input.external_id) {
            (None, _) => ChangeOp::Add,
            (_, None) => ChangeOp::Remove,
            _ => ChangeOp::Change,
        };
        out.push(FieldChange {
            field: "external_id".into(),
            op,
            before: masked(&ext_before),
            after: masked(&input.external_id),
        });
    }
    if let Some(c) = secret_change(
        "secret_key",
        s.map(|a| &a.secret_key),
        input.secret_key.as_ref(),
    ) {
        out.push(c);
    }
    out
}

/// The JWT fields that differ between the stored settings and `input`.
pub(crate) fn auth_changes(stored: Option<&AppAuth>, input: &AppAuthInput) -> Vec<FieldChange> {
    use serde_json::json;
    let s = stored;
    let pairs: Vec<(&str, Option<Value>, Option<Value>)> = vec![
        (
            "jwt.issuer",
            s.and_then(|a| a.issuer.clone()).map(Value::from),
            input.issuer.clone().map(Value::from),
        ),
        (
            "jwt.audiences",
            s.map(|a| json!(a.audiences)).filter(|v| v != &json!([])),
            Some(json!(input.audiences)).filter(|v| v != &json!([])),
        ),
        (
            "jwt.algorithms",
            s.map(|a| json!(a.algorithms)),
            Some(json!(input.algorithms)),
        ),
        (
            "jwt.public_keys",
            s.map(|a| json!(a.public_keys)).filter(|v| v != &json!([])),
            Some(json!(input.public_keys)).filter(|v| v != &json!([])),
        ),
        (
            "jwt.jwks_url",
            s.and_then(|a| a.jwks_url.clone()).map(Value::from),
            input.jwks_url.clone().map(Value::from),
        ),
        (
            "jwt.user_claim",
            s.map(|a| json!(a.user_claim)),
            Some(json!(input.user_claim)),
        ),
        (
            "jwt.leeway_seconds",
            s.map(|a| json!(a.leeway_seconds)),
            Some(json!(input.leeway_seconds)),
        ),
    ];
    let mut out: Vec<FieldChange> = pairs
        .into_iter()
        .filter_map(|(f, b, a)| change(f, b, a))
        .collect();
    if let Some(c) = secret_change(
        "jwt.hs_secret",
        s.and_then(|a| a.hs_secret.as_ref()),
        input.hs_secret.as_ref(),
    ) {
        out.push(c);
    }
    out
}

/// The template change, if the document differs from the active one.
pub(crate) fn template_change(
    active: Option<&TemplateDocument>,
    desired: &TemplateDocument,
) -> Option<FieldChange> {
    if active == Some(desired) {
        return None;
    }
    let json = |d: &TemplateDocument| serde_json::to_value(d).unwrap_or(Value::Null);
    change("template", active.map(json), Some(json(desired)))
}

/// Block-list changes: subjects to block (or whose reason changes), and, with `prune`, those
/// to unblock; the rest of the stored ones are returned as kept.
pub(crate) struct BlockChanges {
    pub block: Vec<BlockSpec>,
    pub unblock: Vec<String>,
    pub kept: Vec<String>,
    pub changes: Vec<FieldChange>,
}

pub(crate) fn block_changes(
    stored: &[(String, Option<String>)],
    desired: &[BlockSpec],
    prune: bool,
) -> BlockChanges {
    let reason = |r: &Option<String>| {
        r.as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
    };
    let mut out = BlockChanges {
        block: Vec::new(),
        unblock: Vec::new(),
        kept: Vec::new(),
        changes: Vec::new(),
    };
    let field = |s: &str| format!("blocked_subjects[{}]", Value::from(s));
    let shown = |r: Option<String>| Some(serde_json::json!({ "reason": r }));
    let stored_by_subject: HashMap<&str, &Option<String>> =
        stored.iter().map(|(s, r)| (s.as_str(), r)).collect();
    let wanted: HashSet<&str> = desired.iter().map(|d| d.subject.as_str()).collect();
    for d in desired {
        let want = reason(&d.reason);
        match stored_by_subject
            .get(d.subject.as_str())
            .map(|r| (&d.subject, *r))
        {
            None => {
                out.block.push(d.clone());
                out.changes.push(FieldChange {
                    field: field(&d.subject),
                    op: ChangeOp::Add,
                    before: None,
                    after: shown(want),
                });
            }
            // A reason left out keeps the stored one (as blocking again does on the pages).
            Some((_, have)) if want.is_some() && want != *have => {
                out.block.push(d.clone());
                out.changes.push(FieldChange {
                    field: field(&d.subject),
                    op: ChangeOp::Change,
                    before: shown(have.clone()),
                    after: shown(want),
                });
            }
            Some(_) => {}
        }
    }
    for (s, r) in stored {
        if wanted.contains(s.as_str()) {
            continue;
        }
        if prune {
            out.unblock.push(s.clone());
            out.changes.push(FieldChange {
                field: field(s),
                op: ChangeOp::Remove,
                before: shown(r.clone()),
                after: None,
            });
        } else {
            out.kept.push(s.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_value() {
        let s = |v: &str| SecretString::from(v.to_owned());
        assert!(secrets_equal(&s("same-secret"), &s("same-secret")));
        assert!(!secrets_equal(&s("same-secret"), &s("same-secreT")));
        assert!(!secrets_equal(&s("same-secret"), &s("same-secret-longer")));
        assert!(!secrets_equal(&s(""), &s("x")));
    }
}
