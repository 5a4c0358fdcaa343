//! Policy templates and their rendering (DESIGN §4 "Rendering", "Least privilege").
//!
//! A template is a list of statements whose resources are object-key patterns inside the app's
//! bucket (`users/${sub}/*`). Rendering substitutes the variables for one user and builds the
//! CAM session policy; [`RenderedPolicy::narrow`] intersects it with what a request asked for.
//!
//! Variables: `${sub}` (the user claim), `${claim.NAME}`, `${sub_hash}` (first 32 hex chars of
//! SHA-256 of the user claim) and `${app}` (the app slug). A substituted user-controlled value
//! must match `[A-Za-z0-9._@=+|-]{1,128}` and must not be `.` or `..`, and every variable in a
//! key pattern must be followed by `/`, so one user's prefix can never contain another's.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sts_core::policy::{Conditions, MAX_POLICY_CHARS, PolicyError, non_space_len};
use sts_core::{CosResource, Effect, Policy, Statement};

use crate::error::FieldError;
use crate::validate::valid_claim_name;

mod narrow;
mod scope;

#[cfg(test)]
use narrow::grants;
pub use scope::{MAX_SHARED_REASON_CHARS, Reach, Shared};

/// Longest value substituted for `${sub}` or `${claim.*}`.
pub const MAX_VALUE_LEN: usize = 128;
/// Longest `prefix` request option (after normalisation).
pub const MAX_SUB_PREFIX_LEN: usize = 512;

/// A policy template as stored (JSONB `policy_templates.document`) and edited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateDocument {
    /// The user's home prefix, e.g. `users/${sub}/`. Empty: derived from the first allow
    /// resource ending in `/*` (see [`TemplateDocument::home_prefix_template`]).
    #[serde(default)]
    pub prefix: String,
    pub statements: Vec<TemplateStatement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateStatement {
    pub effect: Effect,
    /// `name/cos:PutObject`, `cos:GetObject`, `name/cos:*`, …
    pub actions: Vec<String>,
    /// Object-key patterns inside the bucket (`users/${sub}/*`); `/` is the bucket itself.
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: Conditions,
    /// Set when the statement may reach beyond the user's home prefix (see [`Reach`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<Shared>,
}

/// Who a policy is rendered for.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    /// The app slug.
    pub app: &'a str,
    /// The user claim's value.
    pub subject: &'a str,
    /// All claims of the verified token.
    pub claims: &'a serde_json::Map<String, serde_json::Value>,
}

/// A session policy for one user, ready for STS.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedPolicy {
    pub policy: Policy,
    /// The user's home prefix (rendered), e.g. `users/alice/`; returned to the client.
    pub prefix: String,
    /// Hex SHA-256 of `policy.to_json()` (credential cache key, audit log).
    pub policy_hash: String,
    /// Sorted, de-duplicated actions of the allow statements.
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A user-controlled value cannot be substituted (the gateway answers 403).
    #[error(
        "the value of ${{{variable}}} cannot be used in a storage path: {reason}; values must be 1 to 128 characters of A-Z a-z 0-9 . _ @ = + | - (and not `.` or `..`); an admin can use ${{sub_hash}} in the policy template instead"
    )]
    ForbiddenValue { variable: String, reason: String },
    /// The template uses `${claim.NAME}` and the token has no such claim.
    #[error("the token has no claim {0:?}, which the policy template uses")]
    MissingClaim(String),
    #[error(
        "the rendered policy is {0} characters long without spaces; the limit is {MAX_POLICY_CHARS}"
    )]
    TooLong(usize),
    /// The template itself is broken (it should have been refused when saved).
    #[error("invalid policy template: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarrowError {
    #[error("action {0:?} is not granted by this app's policy")]
    ActionNotGranted(String),
    #[error("invalid prefix: {0}")]
    BadPrefix(String),
    #[error("the requested actions and prefix leave nothing the policy allows")]
    NothingLeft,
}

// ---------------------------------------------------------------------------------------------
// Variables

#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    Sub,
    SubHash,
    App,
    Claim(String),
}

impl Var {
    fn name(&self) -> String {
        match self {
            Var::Sub => "sub".into(),
            Var::SubHash => "sub_hash".into(),
            Var::App => "app".into(),
            Var::Claim(n) => format!("claim.{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

/// Splits `users/${sub}/*` into literal and variable pieces. Also reports, per variable,
/// the character that follows it (`None` at the end).
fn parse_pattern(s: &str) -> Result<Vec<(Piece, Option<char>)>, String> {
    let mut out: Vec<(Piece, Option<char>)> = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        lit.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let Some(body_start) = after.strip_prefix('{') else {
            return Err(
                "a $ must start a variable: write ${sub}, ${sub_hash}, ${app} or ${claim.NAME}"
                    .into(),
            );
        };
        let Some(end) = body_start.find('}') else {
            return Err("close the variable with }, as in ${sub}".into());
        };
        let body = &body_start[..end];
        let var = match body {
            "sub" => Var::Sub,
            "sub_hash" => Var::SubHash,
            "app" => Var::App,
            _ => match body.strip_prefix("claim.") {
                Some(name) if valid_claim_name(name) => Var::Claim(name.to_owned()),
                Some(_) => {
                    return Err(
                        "shorten the claim name in ${claim.NAME} to 1 to 64 characters of A-Z a-z 0-9 _ . : -"
                            .into(),
                    );
                }
                None => {
                    return Err(format!(
                        "there is no variable ${{{}}}: use ${{sub}}, ${{sub_hash}}, ${{app}} or ${{claim.NAME}}",
                        sanitize(body)
                    ));
                }
            },
        };
        if !lit.is_empty() {
            out.push((Piece::Lit(std::mem::take(&mut lit)), None));
        }
        rest = &body_start[end + 1..];
        out.push((Piece::Var(var), rest.chars().next()));
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push((Piece::Lit(lit), None));
    }
    Ok(out)
}

/// A short, printable description of untrusted text for error messages.
fn sanitize(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().count() > 40 {
        format!("{cleaned}…")
    } else {
        cleaned
    }
}

fn value_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '=' | '+' | '|' | '-')
}

/// Checks a user-controlled value; the reason never repeats the value itself.
fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("it is empty".into());
    }
    let len = value.chars().count();
    if len > MAX_VALUE_LEN {
        return Err(format!(
            "it is {len} characters long (at most {MAX_VALUE_LEN})"
        ));
    }
    if value == "." || value == ".." {
        return Err("it is `.` or `..`".into());
    }
    if let Some(c) = value.chars().find(|c| !value_char_ok(*c)) {
        return Err(describe_char(c));
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    if c.is_control() {
        "it contains a control character".into()
    } else if !c.is_ascii() {
        "it contains a non-ASCII character".into()
    } else if c == ' ' {
        "it contains a space".into()
    } else {
        format!("it contains the character `{c}`")
    }
}

/// `${sub_hash}`: the first 32 hex characters of the SHA-256 of the user claim. Safe in a
/// storage path and in an STS session name whatever the claim holds.
pub fn sub_hash(subject: &str) -> String {
    hex::encode(Sha256::digest(subject.as_bytes()))[..32].to_owned()
}

/// Substitutes the variables of `pattern` for `ctx`.
fn substitute(pattern: &str, ctx: &RenderContext<'_>) -> Result<String, RenderError> {
    let pieces = parse_pattern(pattern).map_err(RenderError::Invalid)?;
    let mut out = String::with_capacity(pattern.len() + 32);
    for (piece, _) in pieces {
        match piece {
            Piece::Lit(l) => out.push_str(&l),
            Piece::Var(var) => out.push_str(&resolve(&var, ctx)?),
        }
    }
    Ok(out)
}

fn resolve(var: &Var, ctx: &RenderContext<'_>) -> Result<String, RenderError> {
    let forbidden = |reason: String| RenderError::ForbiddenValue {
        variable: var.name(),
        reason,
    };
    match var {
        Var::SubHash => Ok(sub_hash(ctx.subject)),
        Var::Sub => {
            check_value(ctx.subject).map_err(forbidden)?;
            Ok(ctx.subject.to_owned())
        }
        Var::App => {
            check_value(ctx.app).map_err(forbidden)?;
            Ok(ctx.app.to_owned())
        }
        Var::Claim(name) => {
            let value = lookup_claim(ctx.claims, name)
                .ok_or_else(|| RenderError::MissingClaim(name.clone()))?;
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                serde_json::Value::Number(_) => {
                    return Err(forbidden(
                        "it is a fractional number; only strings and integers can be used".into(),
                    ));
                }
                serde_json::Value::Bool(_) => {
                    return Err(forbidden(
                        "it is a boolean; only strings and integers can be used".into(),
                    ));
                }
                serde_json::Value::Array(_) => {
                    return Err(forbidden(
                        "it is a list; only strings and integers can be used".into(),
                    ));
                }
                serde_json::Value::Object(_) => {
                    return Err(forbidden(
                        "it is an object; only strings and integers can be used".into(),
                    ));
                }
                serde_json::Value::Null => return Err(RenderError::MissingClaim(name.clone())),
            };
            check_value(&text).map_err(forbidden)?;
            Ok(text)
        }
    }
}

/// A top-level claim named `name`; failing that, a dotted path into nested objects.
fn lookup_claim<'a>(
    claims: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

// ---------------------------------------------------------------------------------------------
// Actions and condition operators

const DEFAULT_USER_ACTIONS: [&str; 9] = [
    "PutObject",
    "PostObject",
    "GetObject",
    "HeadObject",
    "InitiateMultipartUpload",
    "ListParts",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
];

/// `name/cos:X` or `cos:X` → `X` (the COS API name pattern), if the form is right.
fn action_name(action: &str) -> Option<&str> {
    action
        .strip_prefix("name/cos:")
        .or_else(|| action.strip_prefix("cos:"))
}

fn check_action(action: &str) -> Result<(), String> {
    if action == "*" {
        return Err(
            "a bare * grants every action of every cloud service: write name/cos:* for every COS action, or list the COS actions you need"
                .into(),
        );
    }
    match action_name(action) {
        Some(name) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic() || c == '*') => {
            Ok(())
        }
        _ => Err(
            "write a COS action as name/cos: followed by the API name, e.g. name/cos:PutObject (letters only, * allowed)"
                .into(),
        ),
    }
}

/// The form stsgate renders: `name/cos:X`.
fn normalize_action(action: &str) -> String {
    match action_name(action) {
        Some(name) => format!("name/cos:{name}"),
        None => action.to_owned(),
    }
}

const BASE_OPERATORS: [&str; 22] = [
    "string_equal",
    "string_not_equal",
    "string_equal_ignore_case",
    "string_not_equal_ignore_case",
    "string_like",
    "string_not_like",
    "ip_equal",
    "ip_not_equal",
    "numeric_equal",
    "numeric_not_equal",
    "numeric_greater_than",
    "numeric_greater_than_equal",
    "numeric_less_than",
    "numeric_less_than_equal",
    "date_equal",
    "date_not_equal",
    "date_greater_than",
    "date_greater_than_equal",
    "date_less_than",
    "date_less_than_equal",
    "bool_equal",
    "null_equal",
];

/// The base operator (qualifier and `_if_exist` removed), if the operator is known.
fn base_operator(op: &str) -> Option<&str> {
    let op = op
        .strip_prefix("for_any_value:")
        .or_else(|| op.strip_prefix("for_all_value:"))
        .unwrap_or(op);
    let op = op.strip_suffix("_if_exist").unwrap_or(op);
    BASE_OPERATORS.contains(&op).then_some(op)
}

fn is_like_operator(base: &str) -> bool {
    base == "string_like" || base == "string_not_like"
}

// ---------------------------------------------------------------------------------------------
// Save-time checks

/// Where a pattern appears; decides which rules apply.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PatternKind {
    Resource,
    Prefix,
    /// A string condition value; `like` says whether `*` is a wildcard there.
    Condition {
        like: bool,
    },
}

fn check_pattern(s: &str, kind: PatternKind) -> Result<(), String> {
    if kind == PatternKind::Resource && s == "/" {
        return Ok(());
    }
    let pieces = parse_pattern(s)?;
    for (piece, next) in &pieces {
        if let Piece::Var(var) = piece {
            let ok = match (kind, next) {
                (_, Some('/')) => true,
                // An exact comparison cannot match a longer value, so a variable may end it.
                (PatternKind::Condition { like: false }, None) => true,
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "put a / right after ${{{}}}: otherwise users/${{sub}}* would let user “user1” reach “user10/”",
                    var.name()
                ));
            }
        }
    }
    if s.chars().any(char::is_control) {
        return Err("remove the control characters (tabs, line breaks and the like)".into());
    }
    if matches!(kind, PatternKind::Condition { .. }) {
        return Ok(());
    }

    // Key patterns (resources and the home prefix).
    if s.is_empty() {
        return Err("write a pattern, e.g. users/${sub}/*".into());
    }
    if s.starts_with("qcs:") {
        return Err(
            "write only the object key pattern inside the bucket, e.g. users/${sub}/*: stsgate adds the qcs::cos:… part itself"
                .into(),
        );
    }
    if s.starts_with('/') {
        return Err(
            "remove the leading /: write users/${sub}/* (a lone / means the bucket itself)".into(),
        );
    }
    match kind {
        PatternKind::Prefix => {
            if s.contains('*') {
                return Err(
                    "remove the *: the home prefix is a folder such as users/${sub}/".into(),
                );
            }
            if !s.ends_with('/') {
                return Err("end the home prefix with /, e.g. users/${sub}/".into());
            }
        }
        _ => {
            if let Some(pos) = s.find('*')
                && pos != s.len() - 1
            {
                return Err("a * may only be the last character, as in users/${sub}/*".into());
            }
        }
    }
    let segments: Vec<&str> = s.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() && i != last {
            return Err("remove the double slash //".into());
        }
        if *seg == "." || *seg == ".." {
            return Err("remove the . or .. folder: write the path without it".into());
        }
    }
    Ok(())
}

fn check_condition_value(
    value: &serde_json::Value,
    like: bool,
    field: &str,
    errors: &mut Vec<FieldError>,
    in_array: bool,
) {
    match value {
        serde_json::Value::String(s) => {
            if let Err(e) = check_pattern(s, PatternKind::Condition { like }) {
                errors.push(FieldError::new(field, e));
            }
        }
        serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {}
        serde_json::Value::Array(items) if !in_array => {
            if items.is_empty() {
                errors.push(FieldError::new(field, "put at least one value in the list"));
            }
            for (i, item) in items.iter().enumerate() {
                check_condition_value(item, like, &format!("{field}[{i}]"), errors, true);
            }
        }
        _ => errors.push(FieldError::new(
            field,
            "give a text, a number, true or false, or a list of those",
        )),
    }
}

/// A context with the longest values the rules allow, for the save-time length check.
struct WorstCase {
    claims: serde_json::Map<String, serde_json::Value>,
    subject: String,
    app: String,
    bucket: CosResource,
}

impl WorstCase {
    fn new(doc: &TemplateDocument) -> Self {
        let long = "a".repeat(MAX_VALUE_LEN);
        let mut claims = serde_json::Map::new();
        for name in doc.claim_names() {
            claims.insert(name, serde_json::Value::String(long.clone()));
        }
        // COS: a bucket name (with its APPID) is at most 50 characters; the longest region
        // names are under 20.
        let bucket = format!("{}-1250000000", "b".repeat(39));
        Self {
            claims,
            subject: long,
            app: "a".repeat(63),
            bucket: CosResource::new("ap-southeast-xxxxxx", &bucket)
                .expect("a valid placeholder bucket"),
        }
    }
}

impl TemplateDocument {
    /// The default for a new app: the user's own prefix, upload and read.
    pub fn default_for_users() -> Self {
        Self {
            prefix: "users/${sub}/".into(),
            statements: vec![TemplateStatement {
                effect: Effect::Allow,
                actions: DEFAULT_USER_ACTIONS
                    .iter()
                    .map(|a| format!("name/cos:{a}"))
                    .collect(),
                resources: vec!["users/${sub}/*".into()],
                conditions: Conditions::new(),
                shared: None,
            }],
        }
    }

    /// Save-time validation. Field paths look like `statements[0].resources[1]`, `prefix`,
    /// `statements[1].conditions.string_like.cos:prefix`.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if !self.prefix.is_empty()
            && let Err(e) = check_pattern(&self.prefix, PatternKind::Prefix)
        {
            errors.push(FieldError::new("prefix", e));
        }
        if self.statements.is_empty() {
            errors.push(FieldError::new("statements", "add at least one statement"));
        } else if !self.statements.iter().any(|s| s.effect == Effect::Allow) {
            errors.push(FieldError::new(
                "statements",
                "add a statement that allows something: deny statements alone grant nothing",
            ));
        }
        for (i, st) in self.statements.iter().enumerate() {
            let base = format!("statements[{i}]");
            if st.actions.is_empty() {
                errors.push(FieldError::new(
                    format!("{base}.actions"),
                    "tick or write at least one action",
                ));
            }
            for (j, a) in st.actions.iter().enumerate() {
                if let Err(e) = check_action(a) {
                    errors.push(FieldError::new(format!("{base}.actions[{j}]"), e));
                }
            }
            if st.resources.is_empty() {
                errors.push(FieldError::new(
                    format!("{base}.resources"),
                    "write at least one resource, e.g. users/${sub}/*",
                ));
            }
            for (j, r) in st.resources.iter().enumerate() {
                if let Err(e) = check_pattern(r, PatternKind::Resource) {
                    errors.push(FieldError::new(format!("{base}.resources[{j}]"), e));
                }
            }
            for (op, entries) in &st.conditions {
                let op_field = format!("{base}.conditions.{op}");
                let Some(base_op) = base_operator(op) else {
                    errors.push(FieldError::new(
                        op_field,
                        "use a known condition operator such as string_equal, string_like, ip_equal, numeric_less_than_equal or bool_equal (each may end in _if_exist, or start with for_any_value: or for_all_value:)",
                    ));
                    continue;
                };
                if entries.is_empty() {
                    errors.push(FieldError::new(
                        op_field.clone(),
                        "name at least one condition key, e.g. cos:content-type",
                    ));
                }
                for (key, value) in entries {
                    let field = format!("{op_field}.{key}");
                    if key.is_empty() || key.chars().any(|c| c.is_control() || c == ' ') {
                        errors.push(FieldError::new(
                            field.clone(),
                            "name the condition key, e.g. cos:content-type (no spaces)",
                        ));
                    }
                    check_condition_value(
                        value,
                        is_like_operator(base_op),
                        &field,
                        &mut errors,
                        false,
                    );
                }
            }
        }
        if !errors.iter().any(|e| e.field == "prefix") {
            let failed: BTreeSet<String> = errors.iter().map(|e| e.field.clone()).collect();
            self.check_reach(&|field| failed.contains(field), &mut errors);
        }
        if errors.is_empty() {
            let wc = WorstCase::new(self);
            let ctx = RenderContext {
                app: &wc.app,
                subject: &wc.subject,
                claims: &wc.claims,
            };
            match self.render(&ctx, &wc.bucket) {
                Ok(_) => {}
                Err(RenderError::TooLong(n)) => errors.push(FieldError::new(
                    "statements",
                    format!(
                        "for a {MAX_VALUE_LEN}-character user name the policy would be {n} characters long without spaces, over CAM's limit of {MAX_POLICY_CHARS}: remove statements, resources or conditions"
                    ),
                )),
                Err(e) => errors.push(FieldError::new("statements", e.to_string())),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The home prefix pattern: `prefix` if set, else the first allow resource ending in
    /// `/*` without its `*`, else empty.
    pub fn home_prefix_template(&self) -> String {
        if !self.prefix.is_empty() {
            return self.prefix.clone();
        }
        self.statements
            .iter()
            .filter(|s| s.effect == Effect::Allow)
            .flat_map(|s| &s.resources)
            .find(|r| r.ends_with("/*"))
            .map(|r| r[..r.len() - 1].to_owned())
            .unwrap_or_default()
    }

    /// The names of the claims the template uses.
    fn claim_names(&self) -> BTreeSet<String> {
        let mut patterns: Vec<&str> = vec![&self.prefix];
        let mut values = Vec::new();
        for st in &self.statements {
            patterns.extend(st.resources.iter().map(String::as_str));
            for entries in st.conditions.values() {
                values.extend(entries.values());
            }
        }
        while let Some(v) = values.pop() {
            match v {
                serde_json::Value::String(s) => patterns.push(s),
                serde_json::Value::Array(items) => values.extend(items),
                _ => {}
            }
        }
        patterns
            .into_iter()
            .filter_map(|p| parse_pattern(p).ok())
            .flatten()
            .filter_map(|(piece, _)| match piece {
                Piece::Var(Var::Claim(n)) => Some(n),
                _ => None,
            })
            .collect()
    }

    /// Renders the session policy for one user.
    pub fn render(
        &self,
        ctx: &RenderContext<'_>,
        bucket: &CosResource,
    ) -> Result<RenderedPolicy, RenderError> {
        let mut statements = Vec::with_capacity(self.statements.len());
        for st in &self.statements {
            let mut actions: Vec<String> = Vec::with_capacity(st.actions.len());
            for a in &st.actions {
                check_action(a).map_err(RenderError::Invalid)?;
                let a = normalize_action(a);
                if !actions.contains(&a) {
                    actions.push(a);
                }
            }
            let mut resources = Vec::with_capacity(st.resources.len());
            for r in &st.resources {
                let rendered = if r == "/" {
                    bucket.bucket_level()
                } else {
                    bucket.object(&substitute(r, ctx)?)
                };
                if !resources.contains(&rendered) {
                    resources.push(rendered);
                }
            }
            let mut condition = Conditions::new();
            for (op, entries) in &st.conditions {
                let mut rendered = BTreeMap::new();
                for (key, value) in entries {
                    rendered.insert(key.clone(), substitute_value(value, ctx)?);
                }
                condition.insert(op.clone(), rendered);
            }
            let mut statement = Statement::new(st.effect, actions, resources);
            statement.condition = condition;
            statements.push(statement);
        }
        let prefix = substitute(&self.home_prefix_template(), ctx)?;
        finish(Policy::new(statements), prefix).map_err(|e| match e {
            PolicyError::TooLong(n) => RenderError::TooLong(n),
            other => RenderError::Invalid(other.to_string()),
        })
    }
}

fn substitute_value(
    value: &serde_json::Value,
    ctx: &RenderContext<'_>,
) -> Result<serde_json::Value, RenderError> {
    Ok(match value {
        serde_json::Value::String(s) => serde_json::Value::String(substitute(s, ctx)?),
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|v| substitute_value(v, ctx))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// Validates the policy and computes its hash and action list.
fn finish(policy: Policy, prefix: String) -> Result<RenderedPolicy, PolicyError> {
    policy.validate()?;
    let json = policy.to_json();
    debug_assert!(non_space_len(&json) <= MAX_POLICY_CHARS);
    let policy_hash = hex::encode(Sha256::digest(json.as_bytes()));
    let actions: BTreeSet<String> = policy
        .statement
        .iter()
        .filter(|s| s.effect == Effect::Allow)
        .flat_map(|s| s.action.iter().cloned())
        .collect();
    Ok(RenderedPolicy {
        policy,
        prefix,
        policy_hash,
        actions: actions.into_iter().collect(),
    })
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests;
