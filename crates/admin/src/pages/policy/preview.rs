//! The policy preview: what a pasted JWT's claims (decoded, not verified) or a claims object
//! would get from a draft or the active template, or why the gateway would refuse them.

use base64::Engine as _;
use policy_store::{App, FieldError, Reach, RenderContext, TemplateDocument};
use sts_core::CosResource;
use sts_core::policy::{MAX_POLICY_CHARS, non_space_len};

use super::form::{index_of, statement_path};

/// One rendered statement: its effect and resources, and whether every user shares them.
pub struct ResourceLine {
    pub text: String,
    pub shared: bool,
}

/// `Statement 2 is shared by every user: <reason>` for each statement beyond the home prefix.
pub fn shared_lines(reach: &[Reach]) -> Vec<String> {
    reach
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Reach::Shared { reason, .. } => Some(format!(
                "Statement {} is shared by every user: {reason}",
                i + 1
            )),
            Reach::Unmarked { .. } => Some(format!(
                "Statement {} reaches beyond the home prefix without a shared mark (saved before this was checked)",
                i + 1
            )),
            Reach::Home | Reach::Deny => None,
        })
        .collect()
}

/// A validation error with its field in words: `Statement 2, resource 1: …`.
pub fn readable(e: &FieldError) -> String {
    let Some((i, rest)) = statement_path(&e.field) else {
        return match e.field.as_str() {
            "prefix" => format!("Home prefix: {}", e.message),
            _ => e.message.clone(),
        };
    };
    let n = i + 1;
    let part = |what: &str, sub: &str| match index_of(sub) {
        Some(j) => format!("Statement {n}, {what} {}", j + 1),
        None => format!("Statement {n}, {what}s"),
    };
    let place = if let Some(sub) = rest.strip_prefix(".resources") {
        part("resource", sub)
    } else if let Some(sub) = rest.strip_prefix(".actions") {
        part("action", sub)
    } else if let Some(sub) = rest.strip_prefix(".conditions") {
        format!("Statement {n}, condition {}", sub.trim_start_matches('.'))
    } else if rest == ".shared" {
        format!("Statement {n}, shared reason")
    } else {
        format!("Statement {n}")
    };
    format!("{place}: {}", e.message)
}

/// The preview of a draft for pasted claims.
#[derive(Default)]
pub struct PreviewView {
    /// `empty`, `input`, `template`, `refused` or `ok`.
    pub state: &'static str,
    pub message: String,
    pub source: String,
    pub user_claim: String,
    pub subject: String,
    pub policy: Option<serde_json::Value>,
    pub resources: Vec<ResourceLine>,
    /// The statements shared by every user: `Statement 2: <reason>`.
    pub shared: Vec<String>,
    pub actions: Vec<String>,
    pub prefix: String,
    pub chars: usize,
    pub max_chars: usize,
    pub hash: String,
    pub template_errors: Vec<String>,
}

/// Claims from a pasted JWT (payload decoded, signature NOT verified) or a JSON object.
pub fn parse_claims(
    input: &str,
) -> Result<(serde_json::Map<String, serde_json::Value>, String), String> {
    let input = input.trim();
    let input = input
        .strip_prefix("Bearer ")
        .or_else(|| input.strip_prefix("bearer "))
        .unwrap_or(input)
        .trim();
    if input.starts_with('{') {
        return match serde_json::from_str::<serde_json::Value>(input) {
            Ok(serde_json::Value::Object(m)) => Ok((m, "claims JSON".into())),
            Ok(_) => Err("the claims must be a JSON object".into()),
            Err(e) => Err(format!("not valid JSON: {e}")),
        };
    }
    let parts: Vec<&str> = input.split('.').collect();
    if parts.len() != 3 {
        return Err(
            "paste a JWT (three base64url parts separated by dots) or a JSON object of claims"
                .into(),
        );
    }
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    };
    let alg = decode(parts[0])
        .and_then(|h| h.get("alg").and_then(|a| a.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    match decode(parts[1]) {
        Some(serde_json::Value::Object(m)) => Ok((
            m,
            format!("JWT payload (alg {alg}); the signature was NOT verified"),
        )),
        _ => Err("the JWT's payload is not a base64url-encoded JSON object".into()),
    }
}

pub fn preview(
    app: &App,
    user_claim: &str,
    doc: Option<&TemplateDocument>,
    input: &str,
) -> PreviewView {
    let mut view = PreviewView {
        user_claim: user_claim.to_owned(),
        max_chars: MAX_POLICY_CHARS,
        ..PreviewView::default()
    };
    let Some(doc) = doc else {
        view.state = "template";
        view.message =
            "The draft cannot be read: fix the fields marked in red, then the preview comes back."
                .into();
        return view;
    };
    if let Err(errs) = doc.validate() {
        view.state = "template";
        view.message =
            "The draft would be refused when saved (the fields are marked in red):".into();
        view.template_errors = errs.iter().map(readable).collect();
        return view;
    }
    render_preview(view, app, doc, input)
}

/// The preview of a saved version (the active one) for pasted claims: rendered as the gateway
/// renders it, without the save-time checks (a version saved before a check was added still
/// serves requests).
pub fn preview_saved(
    app: &App,
    user_claim: &str,
    doc: &TemplateDocument,
    input: &str,
) -> PreviewView {
    let view = PreviewView {
        user_claim: user_claim.to_owned(),
        max_chars: MAX_POLICY_CHARS,
        ..PreviewView::default()
    };
    render_preview(view, app, doc, input)
}

fn render_preview(
    mut view: PreviewView,
    app: &App,
    doc: &TemplateDocument,
    input: &str,
) -> PreviewView {
    let user_claim = view.user_claim.clone();
    let user_claim = user_claim.as_str();
    if input.trim().is_empty() {
        view.state = "empty";
        view.message = "Paste a JWT or a claims JSON object to see the policy it gets.".into();
        return view;
    }
    let (claims, source) = match parse_claims(input) {
        Ok(c) => c,
        Err(e) => {
            view.state = "input";
            view.message = e;
            return view;
        }
    };
    view.source = source;
    let subject = match claims.get(user_claim) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        _ => {
            view.state = "refused";
            view.message = format!(
                "the claims have no string or integer “{user_claim}” (this app's user claim): the gateway answers 401 invalid_token"
            );
            return view;
        }
    };
    view.subject = subject.clone();
    let bucket = match CosResource::new(&app.region, &app.bucket) {
        Ok(b) => b,
        Err(e) => {
            view.state = "template";
            view.message = format!("the app's region or bucket is not usable: {e}");
            return view;
        }
    };
    let ctx = RenderContext {
        app: &app.slug,
        subject: &subject,
        claims: &claims,
    };
    match doc.render(&ctx, &bucket) {
        Ok(rendered) => {
            let json = rendered.policy.to_json();
            view.state = "ok";
            view.chars = non_space_len(&json);
            view.policy = serde_json::from_str(&json).ok();
            // One rendered statement per template statement, in order.
            let reach = doc.reach();
            view.resources = rendered
                .policy
                .statement
                .iter()
                .zip(&reach)
                .map(|(s, r)| ResourceLine {
                    text: format!("{} {}", s.effect, s.resource.join(", ")),
                    shared: r.is_beyond_home(),
                })
                .collect();
            view.shared = shared_lines(&reach);
            view.actions = rendered.actions;
            view.prefix = rendered.prefix;
            view.hash = rendered.policy_hash;
        }
        Err(e) => {
            view.state = "refused";
            view.message = format!("refused with 403: {e}");
        }
    }
    view
}
