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
use sts_core::policy::{
    Conditions, MAX_POLICY_CHARS, PolicyError, non_space_len, parse_cos_resource,
};
use sts_core::{CosResource, Effect, Policy, Statement};

use crate::error::FieldError;
use crate::validate::valid_claim_name;

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
                "a `$` must start a variable such as ${sub}, ${sub_hash}, ${app} or ${claim.NAME}"
                    .into(),
            );
        };
        let Some(end) = body_start.find('}') else {
            return Err("a `${` is not closed with `}`".into());
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
                        "a claim name in ${claim.NAME} must be 1 to 64 characters of A-Z a-z 0-9 _ . : -"
                            .into(),
                    );
                }
                None => {
                    return Err(format!(
                        "unknown variable ${{{}}}; use ${{sub}}, ${{sub_hash}}, ${{app}} or ${{claim.NAME}}",
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
            "a bare `*` grants every action of every service; use `name/cos:*` or list the COS actions"
                .into(),
        );
    }
    match action_name(action) {
        Some(name) if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic() || c == '*') => {
            Ok(())
        }
        _ => Err(
            "an action must be `name/cos:<Api>` (e.g. `name/cos:PutObject`) or `cos:<Api>`; the API name is letters and `*`"
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
                    "${{{}}} must be followed by `/`: otherwise `users/${{sub}}*` would let user `user1` reach `user10/`",
                    var.name()
                ));
            }
        }
    }
    if s.chars().any(char::is_control) {
        return Err("control characters are not allowed".into());
    }
    if matches!(kind, PatternKind::Condition { .. }) {
        return Ok(());
    }

    // Key patterns (resources and the home prefix).
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.starts_with("qcs:") {
        return Err(
            "write only the key pattern inside the bucket (e.g. `users/${sub}/*`); stsgate adds `qcs::cos:<region>:uid/<appid>:<bucket>/`"
                .into(),
        );
    }
    if s.starts_with('/') {
        return Err(
            "must not start with `/` (write `users/${sub}/*`; a lone `/` means the bucket itself)"
                .into(),
        );
    }
    match kind {
        PatternKind::Prefix => {
            if s.contains('*') {
                return Err("the prefix must not contain `*`".into());
            }
            if !s.ends_with('/') {
                return Err("the prefix must end with `/`".into());
            }
        }
        _ => {
            if let Some(pos) = s.find('*')
                && pos != s.len() - 1
            {
                return Err("`*` is only allowed as the last character".into());
            }
        }
    }
    let segments: Vec<&str> = s.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() && i != last {
            return Err("empty path segments (`//`) are not allowed".into());
        }
        if *seg == "." || *seg == ".." {
            return Err("`.` and `..` path segments are not allowed".into());
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
                errors.push(FieldError::new(field, "a value list must not be empty"));
            }
            for (i, item) in items.iter().enumerate() {
                check_condition_value(item, like, &format!("{field}[{i}]"), errors, true);
            }
        }
        _ => errors.push(FieldError::new(
            field,
            "a condition value must be a string, a number, a boolean or a list of those",
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
                "at least one statement must allow something",
            ));
        }
        for (i, st) in self.statements.iter().enumerate() {
            let base = format!("statements[{i}]");
            if st.actions.is_empty() {
                errors.push(FieldError::new(
                    format!("{base}.actions"),
                    "list at least one action",
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
                    "list at least one resource",
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
                        "unknown condition operator (e.g. string_equal, string_like, ip_equal, numeric_less_than_equal, bool_equal, each optionally with _if_exist and for_any_value:/for_all_value:)",
                    ));
                    continue;
                };
                if entries.is_empty() {
                    errors.push(FieldError::new(op_field.clone(), "name at least one key"));
                }
                for (key, value) in entries {
                    let field = format!("{op_field}.{key}");
                    if key.is_empty() || key.chars().any(|c| c.is_control() || c == ' ') {
                        errors.push(FieldError::new(
                            field.clone(),
                            "a condition key must be a non-empty name such as `cos:content-type`",
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
                        "for a {MAX_VALUE_LEN}-character user name the policy would be {n} characters long without spaces; CAM's limit is {MAX_POLICY_CHARS}"
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
// Narrowing

/// Does the granted action (`name/cos:X`, possibly with a trailing `*`) cover `requested`?
fn grants(granted: &str, requested: &str) -> bool {
    let granted = normalize_action(granted);
    if granted == requested {
        return true;
    }
    match granted.strip_suffix('*') {
        // Only a trailing `*` widens; a `*` elsewhere matches only itself.
        Some(head) if !head.contains('*') => requested.starts_with(head),
        _ => false,
    }
}

/// `PutObject`, `cos:PutObject`, `name/cos:PutObject` → `name/cos:PutObject`.
fn normalize_requested_action(a: &str) -> Result<String, NarrowError> {
    let name = action_name(a).unwrap_or(a);
    let star = name.find('*');
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphabetic() || c == '*')
        && star.is_none_or(|p| p == name.len() - 1);
    if ok {
        Ok(format!("name/cos:{name}"))
    } else {
        Err(NarrowError::ActionNotGranted(sanitize(a)))
    }
}

fn sub_prefix_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '=' | '+' | '|' | '!' | '-')
}

/// Normalises a requested sub-prefix to `a/b/` (empty: the home itself).
fn normalize_sub_prefix(home: &str, requested: &str) -> Result<String, NarrowError> {
    let bad = |m: &str| NarrowError::BadPrefix(m.to_owned());
    if let Some(c) = requested.chars().find(|c| c.is_control() || !c.is_ascii()) {
        return Err(bad(if c.is_control() {
            "it contains a control character"
        } else {
            "it contains a non-ASCII character"
        }));
    }
    if requested.contains('*') || requested.contains('?') {
        return Err(bad("wildcards (`*`, `?`) are not allowed"));
    }
    let trimmed = requested.trim_start_matches('/');
    let relative = if !home.is_empty() && trimmed.starts_with(home) {
        &trimmed[home.len()..]
    } else if !home.is_empty() && format!("{trimmed}/") == home {
        ""
    } else {
        trimmed
    };
    if relative.is_empty() {
        return Ok(String::new());
    }
    let relative = relative.strip_suffix('/').unwrap_or(relative);
    let mut out = String::with_capacity(relative.len() + 1);
    for seg in relative.split('/') {
        if seg.is_empty() {
            return Err(bad("empty path segments (`//`) are not allowed"));
        }
        if seg == "." || seg == ".." {
            return Err(bad("`.` and `..` path segments are not allowed"));
        }
        if let Some(c) = seg.chars().find(|c| !sub_prefix_char_ok(*c)) {
            return Err(NarrowError::BadPrefix(format!(
                "the character `{c}` is not allowed; use A-Z a-z 0-9 . _ @ = + | ! - and `/`"
            )));
        }
        out.push_str(seg);
        out.push('/');
    }
    if out.len() > MAX_SUB_PREFIX_LEN {
        return Err(NarrowError::BadPrefix(format!(
            "it is {} characters long (at most {MAX_SUB_PREFIX_LEN})",
            out.len()
        )));
    }
    Ok(out)
}

impl RenderedPolicy {
    /// Intersects the policy with the request's options; it can narrow, never widen.
    ///
    /// `actions`: each requested action must be granted by an allow statement; allow
    /// statements keep only the requested actions they grant. An empty list means no
    /// narrowing. `sub_prefix`: a path inside the user's home (relative, or absolute starting
    /// with the home); object resources are cut down to `home + sub_prefix`.
    pub fn narrow(
        &self,
        actions: Option<&[String]>,
        sub_prefix: Option<&str>,
        bucket: &CosResource,
    ) -> Result<RenderedPolicy, NarrowError> {
        let mut statements = self.policy.statement.clone();

        if let Some(requested) = actions.filter(|a| !a.is_empty()) {
            let mut wanted: Vec<String> = Vec::with_capacity(requested.len());
            for a in requested {
                let a = normalize_requested_action(a)?;
                if !wanted.contains(&a) {
                    wanted.push(a);
                }
            }
            for a in &wanted {
                let granted = statements
                    .iter()
                    .filter(|s| s.effect == Effect::Allow)
                    .any(|s| s.action.iter().any(|g| grants(g, a)));
                if !granted {
                    return Err(NarrowError::ActionNotGranted(a.clone()));
                }
            }
            statements.retain_mut(|s| {
                if s.effect != Effect::Allow {
                    return true;
                }
                let kept: Vec<String> = wanted
                    .iter()
                    .filter(|a| s.action.iter().any(|g| grants(g, a)))
                    .cloned()
                    .collect();
                s.action = kept;
                !s.action.is_empty()
            });
        }

        let mut prefix = self.prefix.clone();
        if let Some(requested) = sub_prefix {
            let sub = normalize_sub_prefix(&self.prefix, requested)?;
            let new_home = format!("{}{sub}", self.prefix);
            statements.retain_mut(|s| {
                if s.effect != Effect::Allow {
                    return true;
                }
                let mut kept: Vec<String> = Vec::with_capacity(s.resource.len());
                for r in &s.resource {
                    let Some(parsed) = parse_cos_resource(r) else {
                        continue;
                    };
                    let key = parsed.key;
                    let narrowed = if key.is_empty() {
                        Some(r.clone())
                    } else if let Some(base) = key.strip_suffix('*') {
                        if new_home.starts_with(base) {
                            Some(bucket.object(&format!("{new_home}*")))
                        } else if base.starts_with(&new_home) {
                            Some(r.clone())
                        } else {
                            None
                        }
                    } else if key.starts_with(&new_home) {
                        Some(r.clone())
                    } else {
                        None
                    };
                    if let Some(n) = narrowed
                        && !kept.contains(&n)
                    {
                        kept.push(n);
                    }
                }
                s.resource = kept;
                !s.resource.is_empty()
            });
            prefix = new_home;
        }

        if !statements.iter().any(|s| s.effect == Effect::Allow) {
            return Err(NarrowError::NothingLeft);
        }
        let policy = Policy::new(statements);
        // Narrowing only removes statements, actions and resources, except that a longer
        // prefix lengthens resources, which can push the policy over CAM's limit.
        finish(policy, prefix).map_err(|e| match e {
            PolicyError::TooLong(n) => NarrowError::BadPrefix(format!(
                "it makes the policy {n} characters long; the limit is {MAX_POLICY_CHARS}"
            )),
            _ => NarrowError::NothingLeft,
        })
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn bucket() -> CosResource {
        CosResource::new("ap-guangzhou", "examplebucket-1250000000").unwrap()
    }

    const BASE: &str = "qcs::cos:ap-guangzhou:uid/1250000000:examplebucket-1250000000/";

    fn claims(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    fn render_for(doc: &TemplateDocument, sub: &str) -> Result<RenderedPolicy, RenderError> {
        let c = serde_json::Map::new();
        doc.render(
            &RenderContext {
                app: "demo",
                subject: sub,
                claims: &c,
            },
            &bucket(),
        )
    }

    fn doc(statements: serde_json::Value) -> TemplateDocument {
        serde_json::from_value(json!({ "statements": statements })).unwrap()
    }

    fn field_errors(d: &TemplateDocument) -> Vec<String> {
        d.validate()
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    fn one_resource(r: &str) -> TemplateDocument {
        doc(json!([{ "effect": "allow", "actions": ["name/cos:GetObject"], "resources": [r] }]))
    }

    fn resource_error(r: &str) -> String {
        one_resource(r)
            .validate()
            .unwrap_err()
            .into_iter()
            .find(|e| e.field == "statements[0].resources[0]")
            .map(|e| e.message)
            .unwrap_or_else(|| panic!("{r} was not refused"))
    }

    #[test]
    fn default_template_renders_the_users_prefix() {
        let d = TemplateDocument::default_for_users();
        d.validate().unwrap();
        assert_eq!(d.home_prefix_template(), "users/${sub}/");
        let r = render_for(&d, "alice").unwrap();
        assert_eq!(r.prefix, "users/alice/");
        assert_eq!(
            r.policy.statement[0].resource,
            [format!("{BASE}users/alice/*")]
        );
        assert!(r.policy.statement[0].principal.is_none());
        assert_eq!(r.actions.len(), 9);
        assert!(r.actions.windows(2).all(|w| w[0] < w[1]));
        assert!(r.actions.contains(&"name/cos:PutObject".to_owned()));
        assert_eq!(
            r.policy_hash,
            hex::encode(Sha256::digest(r.policy.to_json().as_bytes()))
        );
        // Deterministic.
        assert_eq!(r.policy_hash, render_for(&d, "alice").unwrap().policy_hash);
        assert_ne!(r.policy_hash, render_for(&d, "bob").unwrap().policy_hash);
    }

    #[test]
    fn serde_shape() {
        let d = TemplateDocument::default_for_users();
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["prefix"], "users/${sub}/");
        assert_eq!(v["statements"][0]["effect"], "allow");
        assert!(v["statements"][0].get("conditions").is_none());
        let back: TemplateDocument = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
        let no_prefix: TemplateDocument =
            serde_json::from_value(json!({"statements": []})).unwrap();
        assert_eq!(no_prefix.prefix, "");
    }

    #[test]
    fn variables_render() {
        let d = doc(json!([{
            "effect": "allow",
            "actions": ["cos:GetObject", "name/cos:GetObject"],
            "resources": ["t/${claim.tenant}/${sub}/*", "h/${sub_hash}/*", "a/${app}/x", "/"],
            "conditions": {"string_equal": {"cos:x-cos-acl": ["private", "${claim.tenant}"]}}
        }]));
        d.validate().unwrap();
        let c = claims(json!({"tenant": 42}));
        let r = d
            .render(
                &RenderContext {
                    app: "demo",
                    subject: "alice",
                    claims: &c,
                },
                &bucket(),
            )
            .unwrap();
        let st = &r.policy.statement[0];
        assert_eq!(st.action, ["name/cos:GetObject"]);
        let h = &hex::encode(Sha256::digest(b"alice"))[..32];
        assert_eq!(
            st.resource,
            [
                format!("{BASE}t/42/alice/*"),
                format!("{BASE}h/{h}/*"),
                format!("{BASE}a/demo/x"),
                BASE.to_owned(),
            ]
        );
        assert_eq!(
            st.condition["string_equal"]["cos:x-cos-acl"],
            json!(["private", "42"])
        );
        assert_eq!(r.prefix, "t/42/alice/");
    }

    #[test]
    fn claims_must_exist_and_be_scalars() {
        let d = one_resource("t/${claim.org.id}/*");
        d.validate().unwrap();
        let render = |c: serde_json::Value| {
            let c = claims(c);
            d.render(
                &RenderContext {
                    app: "demo",
                    subject: "alice",
                    claims: &c,
                },
                &bucket(),
            )
        };
        assert_eq!(
            render(json!({})).unwrap_err(),
            RenderError::MissingClaim("org.id".into())
        );
        assert_eq!(
            render(json!({"org.id": null})).unwrap_err(),
            RenderError::MissingClaim("org.id".into())
        );
        assert!(render(json!({"org": {"id": "x1"}})).is_ok());
        assert!(render(json!({"org.id": "x1"})).is_ok());
        for bad in [
            json!(1.5),
            json!(true),
            json!(["a"]),
            json!({"a": 1}),
            json!("a/b"),
        ] {
            assert!(
                matches!(
                    render(json!({ "org.id": bad })),
                    Err(RenderError::ForbiddenValue { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn forbidden_value_message_names_sub_hash_and_hides_the_value() {
        let d = TemplateDocument::default_for_users();
        let hostile = "../../<script>alert(1)</script>";
        let err = render_for(&d, hostile).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("${sub_hash}"), "{msg}");
        assert!(msg.contains("${sub}"), "{msg}");
        assert!(!msg.contains("script"), "{msg}");
        let msg = render_for(&d, &"a".repeat(200)).unwrap_err().to_string();
        assert!(msg.contains("200 characters"), "{msg}");
        assert!(!msg.contains(&"a".repeat(20)));
        // Only variables that are used are checked.
        let hashed = one_resource("h/${sub_hash}/*");
        let r = render_for(&hashed, "any thing/../é*").unwrap();
        assert!(r.policy.statement[0].resource[0].starts_with(&format!("{BASE}h/")));
    }

    #[test]
    fn refused_resources() {
        assert!(resource_error("qcs::cos:ap-guangzhou:uid/1:b-1/x").contains("key pattern"));
        assert!(resource_error("/users/*").contains("must not start with `/`"));
        assert!(resource_error("users/*/x").contains("last character"));
        assert!(resource_error("users/../x/*").contains("`..`"));
        assert!(resource_error("users/./x/*").contains("`.`"));
        assert!(resource_error("users//x/*").contains("`//`"));
        assert!(resource_error("users/${nope}/*").contains("unknown variable"));
        assert!(resource_error("users/${sub/*").contains("not closed"));
        assert!(resource_error("users/$sub/*").contains("variable"));
        assert!(resource_error("users/${claim.}/*").contains("claim name"));
        let m = resource_error("users/${sub}*");
        assert!(m.contains("user10/"), "{m}");
        assert!(resource_error("users/${sub}").contains("followed by `/`"));
        assert!(resource_error("users/${sub}-x/*").contains("followed by `/`"));
        assert!(resource_error("").contains("empty"));
        // Accepted forms.
        for ok in [
            "/",
            "*",
            "users/${sub}/*",
            "shared/readme.txt",
            "u/${sub}/${claim.d}/",
            "x/",
        ] {
            one_resource(ok)
                .validate()
                .unwrap_or_else(|e| panic!("{ok}: {e:?}"));
        }
    }

    #[test]
    fn refused_prefix_actions_statements_conditions() {
        let mut d = TemplateDocument::default_for_users();
        for (p, needle) in [
            ("users/${sub}/x", "end with `/`"),
            ("users/*/", "`*`"),
            ("/users/${sub}/", "start with `/`"),
            ("users/${sub}x/", "followed by `/`"),
        ] {
            d.prefix = p.into();
            let errs = d.validate().unwrap_err();
            assert_eq!(errs[0].field, "prefix", "{p}");
            assert!(errs[0].message.contains(needle), "{p}: {}", errs[0].message);
        }

        let d = doc(
            json!([{ "effect": "allow", "actions": ["*", "s3:GetObject", "name/cos:Get_Object", "cos:*"], "resources": ["x/*"] }]),
        );
        let errs = d.validate().unwrap_err();
        assert_eq!(
            errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            [
                "statements[0].actions[0]",
                "statements[0].actions[1]",
                "statements[0].actions[2]"
            ]
        );
        assert!(errs[0].message.contains("name/cos:*"));

        assert_eq!(field_errors(&doc(json!([]))), ["statements"]);
        assert_eq!(
            field_errors(&doc(
                json!([{ "effect": "deny", "actions": ["name/cos:GetObject"], "resources": ["x/*"] }])
            )),
            ["statements"]
        );
        assert_eq!(
            field_errors(&doc(
                json!([{ "effect": "allow", "actions": [], "resources": [] }])
            )),
            ["statements[0].actions", "statements[0].resources"]
        );

        let d = doc(json!([
            { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["x/*"] },
            { "effect": "deny", "actions": ["name/cos:PutObject"], "resources": ["x/*"], "conditions": {
                "string_like": { "cos:prefix": "users/${sub}*" },
                "string_equal": { "cos:x": "${sub}", "cos:y": [{"a": 1}], "cos:z": [["a"]] },
                "weird_op": { "k": "v" },
                "for_any_value:string_equal_if_exist": { "k": ["a", 1, true] },
                "numeric_less_than_equal": { "cos:content-length": 5242880 },
                "string_like_if_exist": { "cos:content-type": "image/*" }
            }}
        ]));
        assert_eq!(
            field_errors(&d),
            [
                "statements[1].conditions.string_equal.cos:y[0]",
                "statements[1].conditions.string_equal.cos:z[0]",
                "statements[1].conditions.string_like.cos:prefix",
                "statements[1].conditions.weird_op",
            ]
        );
    }

    #[test]
    fn length_is_checked_for_the_worst_case_user() {
        // Fits for "alice" but not for a 128-character user name.
        let resources: Vec<String> = (0..30).map(|i| format!("r{i}/${{sub}}/*")).collect();
        let d = doc(
            json!([{ "effect": "allow", "actions": ["name/cos:GetObject"], "resources": resources }]),
        );
        assert!(render_for(&d, "alice").is_ok());
        let errs = d.validate().unwrap_err();
        assert_eq!(errs[0].field, "statements");
        assert!(errs[0].message.contains("4096"), "{}", errs[0].message);
        assert!(matches!(
            render_for(&d, &"a".repeat(128)),
            Err(RenderError::TooLong(_))
        ));
    }

    fn upload_and_list() -> RenderedPolicy {
        let d = doc(json!([
            { "effect": "allow", "actions": ["name/cos:PutObject", "name/cos:GetObject", "name/cos:List*"], "resources": ["users/${sub}/*"] },
            { "effect": "allow", "actions": ["name/cos:GetBucket"], "resources": ["/"] },
            { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["shared/*", "users/${sub}/profile.json"] },
            { "effect": "deny", "actions": ["name/cos:DeleteObject"], "resources": ["users/${sub}/locked/*"] }
        ]));
        d.validate().unwrap();
        render_for(&d, "alice").unwrap()
    }

    #[test]
    fn narrow_actions() {
        let r = upload_and_list();
        let n = r
            .narrow(
                Some(&["PutObject".into(), "cos:ListParts".into()]),
                None,
                &bucket(),
            )
            .unwrap();
        assert_eq!(n.actions, ["name/cos:ListParts", "name/cos:PutObject"]);
        assert_eq!(n.policy.statement.len(), 2); // first allow + deny
        assert_eq!(
            n.policy.statement[0].action,
            ["name/cos:PutObject", "name/cos:ListParts"]
        );
        assert_eq!(n.policy.statement[1].effect, Effect::Deny);
        assert_ne!(n.policy_hash, r.policy_hash);
        assert_eq!(n.prefix, r.prefix);

        assert_eq!(
            r.narrow(Some(&["name/cos:DeleteObject".into()]), None, &bucket())
                .unwrap_err(),
            NarrowError::ActionNotGranted("name/cos:DeleteObject".into())
        );
        assert!(matches!(
            r.narrow(Some(&["name/cos:*".into()]), None, &bucket()),
            Err(NarrowError::ActionNotGranted(_))
        ));
        assert!(matches!(
            r.narrow(Some(&["name/cos:Put/../x".into()]), None, &bucket()),
            Err(NarrowError::ActionNotGranted(_))
        ));
        // GetObject is granted by two statements; both keep it.
        let n = r
            .narrow(Some(&["name/cos:GetObject".into()]), None, &bucket())
            .unwrap();
        assert_eq!(n.policy.statement.len(), 3);
        // No narrowing.
        assert_eq!(r.narrow(None, None, &bucket()).unwrap(), r);
        assert_eq!(r.narrow(Some(&[]), None, &bucket()).unwrap(), r);
    }

    #[test]
    fn narrow_prefix() {
        let r = upload_and_list();
        for requested in [
            "photos/2024",
            "photos/2024/",
            "/photos/2024/",
            "users/alice/photos/2024/",
        ] {
            let n = r.narrow(None, Some(requested), &bucket()).unwrap();
            assert_eq!(n.prefix, "users/alice/photos/2024/", "{requested}");
            assert_eq!(
                n.policy.statement[0].resource,
                [format!("{BASE}users/alice/photos/2024/*")]
            );
            // Bucket-level kept.
            assert_eq!(n.policy.statement[1].resource, [BASE.to_owned()]);
            // shared/* and the exact profile key are outside the new home: statement dropped.
            assert_eq!(n.policy.statement.len(), 3);
            // The deny statement is untouched.
            assert_eq!(n.policy.statement[2], r.policy.statement[3]);
        }
        // A narrower template resource inside the new home is kept as is.
        let n = r.narrow(None, Some("locked"), &bucket()).unwrap();
        assert_eq!(n.prefix, "users/alice/locked/");
        let home = r.narrow(None, Some("users/alice/"), &bucket()).unwrap();
        assert_eq!(home.prefix, "users/alice/");
        assert_eq!(
            home.policy.statement[2].resource,
            [format!("{BASE}users/alice/profile.json")]
        );

        for bad in [
            "a/../b",
            "a/./b",
            "a//b",
            "a/*",
            "a?",
            "é",
            "a\nb",
            "a b",
            "a/%2e%2e/",
            "a/${sub}/",
        ] {
            assert!(
                matches!(
                    r.narrow(None, Some(bad), &bucket()),
                    Err(NarrowError::BadPrefix(_))
                ),
                "{bad:?}"
            );
        }
        let long = "a/".repeat(300);
        assert!(matches!(
            r.narrow(None, Some(&long), &bucket()),
            Err(NarrowError::BadPrefix(_))
        ));
        // Other users' prefixes are only reachable as sub-paths of one's own.
        let n = r.narrow(None, Some("users/bob/"), &bucket()).unwrap();
        assert_eq!(n.prefix, "users/alice/users/bob/");
    }

    #[test]
    fn narrow_with_a_derived_or_no_home() {
        // The home is derived from the first `/*` resource.
        let r = render_for(&one_resource("shared/*"), "alice").unwrap();
        assert_eq!(r.prefix, "shared/");
        let n = r.narrow(None, Some("docs"), &bucket()).unwrap();
        assert_eq!(n.prefix, "shared/docs/");
        assert_eq!(
            n.policy.statement[0].resource,
            [format!("{BASE}shared/docs/*")]
        );
        // No home at all: the sub-prefix starts at the bucket root.
        let r = render_for(&one_resource("shared/readme.txt"), "alice").unwrap();
        assert_eq!(r.prefix, "");
        let n = r.narrow(None, Some("shared"), &bucket()).unwrap();
        assert_eq!(
            n.policy.statement[0].resource,
            [format!("{BASE}shared/readme.txt")]
        );
        assert_eq!(
            r.narrow(None, Some("private"), &bucket()).unwrap_err(),
            NarrowError::NothingLeft
        );
    }

    // -----------------------------------------------------------------------------------------
    // Properties

    fn forbidden_char() -> impl Strategy<Value = char> {
        prop_oneof![
            Just('/'),
            Just('*'),
            Just('$'),
            Just('{'),
            Just('}'),
            Just('?'),
            Just(' '),
            Just('\\'),
            Just('%'),
            Just('#'),
            (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
            Just('\u{7f}'),
            any::<char>().prop_filter("non-ASCII", |c| !c.is_ascii()),
        ]
    }

    /// What `narrow_never_widens`' template must do with these options: `Some(true)` succeed,
    /// `Some(false)` refuse, `None` either (only GetObject asked for, under a prefix that may
    /// leave none of its statements).
    fn narrow_must_succeed(actions: &[String], sub: Option<&str>) -> Option<bool> {
        let granted = |a: &str| {
            matches!(
                a,
                "PutObject" | "name/cos:GetObject" | "cos:ListParts" | "name/cos:List*"
            )
        };
        if !actions.iter().all(|a| granted(a)) {
            return Some(false);
        }
        let relative = sub.map(|s| {
            let s = s.trim_start_matches('/');
            s.strip_suffix('/').unwrap_or(s)
        });
        if let Some(r) = relative
            && !r.is_empty()
            && !r
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains('*'))
        {
            return Some(false);
        }
        // The first statement (PutObject, List*) covers the whole home; GetObject's do not.
        let whole_home = actions.is_empty() || actions.iter().any(|a| a != "name/cos:GetObject");
        (whole_home || relative.is_none_or(str::is_empty)).then_some(true)
    }

    fn valid_subject() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._@=+|-]{1,128}".prop_filter("not . or ..", |s| s != "." && s != "..")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn subjects_with_forbidden_characters_are_refused(
            head in "[A-Za-z0-9._-]{0,20}",
            bad in forbidden_char(),
            tail in "[A-Za-z0-9._-]{0,20}",
        ) {
            let subject = format!("{head}{bad}{tail}");
            let d = TemplateDocument::default_for_users();
            let is_forbidden = matches!(
                render_for(&d, &subject),
                Err(RenderError::ForbiddenValue { .. })
            );
            prop_assert!(is_forbidden);
        }

        #[test]
        fn dot_subjects_are_refused(dots in prop_oneof![Just("."), Just("..")]) {
            let d = TemplateDocument::default_for_users();
            let is_forbidden = matches!(render_for(&d, dots), Err(RenderError::ForbiddenValue { .. }));
            prop_assert!(is_forbidden);
        }

        #[test]
        fn valid_subjects_stay_in_their_prefix(subject in valid_subject()) {
            let d = doc(json!([
                { "effect": "allow", "actions": ["name/cos:PutObject"], "resources": ["users/${sub}/*", "users/${sub}/a/b.txt"] },
                { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/in/*"] }
            ]));
            let r = render_for(&d, &subject).unwrap();
            let home = format!("{BASE}users/{subject}/");
            for st in &r.policy.statement {
                for res in &st.resource {
                    prop_assert!(res.starts_with(&home), "{} outside {}", res, home);
                }
            }
            prop_assert_eq!(r.prefix, format!("users/{subject}/"));
        }

        #[test]
        fn narrow_never_widens(
            subject in valid_subject(),
            actions in proptest::collection::vec(
                prop_oneof![
                    Just("PutObject".to_owned()),
                    Just("name/cos:GetObject".to_owned()),
                    Just("cos:ListParts".to_owned()),
                    Just("DeleteObject".to_owned()),
                    Just("name/cos:List*".to_owned()),
                    Just("*".to_owned()),
                ],
                0..4,
            ),
            sub in proptest::option::of("[A-Za-z0-9./*_-]{0,30}"),
        ) {
            let d = doc(json!([
                { "effect": "allow", "actions": ["name/cos:PutObject", "name/cos:List*"], "resources": ["users/${sub}/*", "/"] },
                { "effect": "allow", "actions": ["name/cos:GetObject"], "resources": ["users/${sub}/pub/*", "shared/*"] },
                { "effect": "deny", "actions": ["name/cos:PutObject"], "resources": ["users/${sub}/ro/*"] }
            ]));
            let r = render_for(&d, &subject).unwrap();
            let original_prefixes: Vec<String> = r.policy.statement.iter()
                .flat_map(|s| s.resource.iter())
                .map(|res| res.trim_end_matches('*').to_owned())
                .collect();
            let acts = (!actions.is_empty()).then_some(actions.as_slice());
            let narrowed = r.narrow(acts, sub.as_deref(), &bucket());
            match narrow_must_succeed(&actions, sub.as_deref()) {
                Some(true) => prop_assert!(narrowed.is_ok(), "refused: {:?}", narrowed.err()),
                Some(false) => prop_assert!(narrowed.is_err(), "accepted {:?} {:?}", actions, sub),
                None => {}
            }
            if let Ok(n) = narrowed {
                for a in &n.actions {
                    prop_assert!(r.actions.iter().any(|g| grants(g, a)), "{} added", a);
                }
                for st in n.policy.statement.iter().filter(|s| s.effect == Effect::Allow) {
                    for a in &st.action {
                        prop_assert!(r.actions.iter().any(|g| grants(g, a)), "{} added", a);
                    }
                    for res in &st.resource {
                        let inside = original_prefixes.iter().any(|p| res.trim_end_matches('*').starts_with(p.as_str()));
                        prop_assert!(inside, "{} outside {:?}", res, original_prefixes);
                    }
                }
                if sub.is_some() {
                    prop_assert!(n.prefix.starts_with(&r.prefix));
                }
            }
        }
    }
}
