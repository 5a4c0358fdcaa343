//! The policy editor: statements with actions (the COS action list plus custom ones),
//! resource patterns and conditions; save-time validation whose errors point at the field;
//! a preview for a pasted JWT or claims; version history with diffs, and rollback.
//!
//! Everything works as plain form posts (`op` = save, add, remove:N, preview); `admin.js`
//! only refreshes the preview as you type.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use base64::Engine as _;
use policy_store::{
    App, FieldError, PolicyTemplateVersion, RenderContext, StoreError, TemplateDocument,
    TemplateStatement,
};
use sts_core::policy::{MAX_POLICY_CHARS, non_space_len};
use sts_core::{CosResource, Effect};

use super::{State, app_or_404, page, page_with, see_other};
use crate::diff::{DiffLine, diff_lines};
use crate::error::AdminError;
use crate::forms::{FormData, lines};
use crate::session::CurrentUser;
use crate::view::{Layout, fmt_time};

/// A group of COS actions offered as checkboxes (reference tencent-sts.md §3.2).
pub struct ActionGroup {
    pub name: &'static str,
    pub actions: &'static [&'static str],
}

pub const COS_ACTIONS: &[ActionGroup] = &[
    ActionGroup {
        name: "Upload",
        actions: &["PutObject", "PostObject", "AppendObject"],
    },
    ActionGroup {
        name: "Multipart upload",
        actions: &[
            "InitiateMultipartUpload",
            "UploadPart",
            "CompleteMultipartUpload",
            "AbortMultipartUpload",
            "ListParts",
            "ListMultipartUploads",
        ],
    },
    ActionGroup {
        name: "Read",
        actions: &["GetObject", "HeadObject", "OptionsObject", "GetObjectACL"],
    },
    ActionGroup {
        name: "Delete, ACL, restore",
        actions: &["DeleteObject", "PutObjectACL", "PostObjectRestore"],
    },
    ActionGroup {
        name: "Bucket (resource /)",
        actions: &[
            "GetBucket",
            "HeadBucket",
            "GetService",
            "PutBucket",
            "DeleteBucket",
            "GetBucketACL",
            "PutBucketACL",
            "GetBucketCORS",
            "PutBucketCORS",
            "DeleteBucketCORS",
            "GetBucketLifecycle",
            "PutBucketLifecycle",
            "DeleteBucketLifecycle",
        ],
    },
];

/// `name/cos:X` or `cos:X` → `X` when `X` is in the offered list.
fn catalogue_name(action: &str) -> Option<&'static str> {
    let name = action
        .strip_prefix("name/cos:")
        .or_else(|| action.strip_prefix("cos:"))?;
    COS_ACTIONS
        .iter()
        .flat_map(|g| g.actions.iter())
        .find(|a| **a == name)
        .copied()
}

/// Most statements the editor takes.
const MAX_STATEMENTS: usize = 50;

#[derive(Default)]
pub struct StatementErrors {
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub conditions: Vec<String>,
    pub general: Vec<String>,
}

impl StatementErrors {
    pub fn any(&self) -> bool {
        !(self.actions.is_empty()
            && self.resources.is_empty()
            && self.conditions.is_empty()
            && self.general.is_empty())
    }
}

pub struct StatementForm {
    pub index: usize,
    pub deny: bool,
    /// Checked catalogue actions, by API name (`PutObject`).
    pub checked: BTreeSet<&'static str>,
    pub custom_actions: String,
    pub resources: String,
    pub conditions: String,
    pub errors: StatementErrors,
}

impl StatementForm {
    pub fn has(&self, action: &&str) -> bool {
        self.checked.contains(*action)
    }

    fn blank(index: usize) -> Self {
        Self {
            index,
            deny: false,
            checked: BTreeSet::new(),
            custom_actions: String::new(),
            resources: String::new(),
            conditions: String::new(),
            errors: StatementErrors::default(),
        }
    }

    fn from_statement(index: usize, st: &TemplateStatement) -> Self {
        let mut checked = BTreeSet::new();
        let mut custom = Vec::new();
        for a in &st.actions {
            match catalogue_name(a) {
                Some(name) => {
                    checked.insert(name);
                }
                None => custom.push(a.clone()),
            }
        }
        Self {
            index,
            deny: st.effect == Effect::Deny,
            checked,
            custom_actions: custom.join("\n"),
            resources: st.resources.join("\n"),
            conditions: if st.conditions.is_empty() {
                String::new()
            } else {
                serde_json::to_string_pretty(&st.conditions).unwrap_or_default()
            },
            errors: StatementErrors::default(),
        }
    }
}

/// The editor's state: what is in the form, and the errors to show next to each field.
pub struct EditorForm {
    pub prefix: String,
    pub note: String,
    pub statements: Vec<StatementForm>,
    pub prefix_errors: Vec<String>,
    pub general_errors: Vec<String>,
    pub preview_input: String,
}

impl EditorForm {
    fn from_document(doc: &TemplateDocument) -> Self {
        Self {
            prefix: doc.prefix.clone(),
            note: String::new(),
            statements: doc
                .statements
                .iter()
                .enumerate()
                .map(|(i, st)| StatementForm::from_statement(i, st))
                .collect(),
            prefix_errors: Vec::new(),
            general_errors: Vec::new(),
            preview_input: String::new(),
        }
    }

    pub fn has_errors(&self) -> bool {
        !self.prefix_errors.is_empty()
            || !self.general_errors.is_empty()
            || self.statements.iter().any(|s| s.errors.any())
    }

    /// Reads the posted editor, applying `op` (add or remove a statement). Returns the
    /// document when every statement could be read (conditions are JSON).
    fn read(form: &FormData, op: &str) -> (Self, Option<TemplateDocument>) {
        let count = form
            .text("statement_count")
            .parse::<usize>()
            .unwrap_or(0)
            .min(MAX_STATEMENTS);
        let remove = op
            .strip_prefix("remove:")
            .and_then(|i| i.parse::<usize>().ok());
        let mut statements = Vec::new();
        let mut doc_statements = Vec::new();
        let mut readable = true;
        for i in (0..count).filter(|i| Some(*i) != remove) {
            let key = |f: &str| format!("st{i}_{f}");
            let index = statements.len();
            let mut st = StatementForm::blank(index);
            st.deny = form.get(&key("effect")) == Some("deny");
            let mut actions = Vec::new();
            for a in form.all(&key("actions")) {
                if let Some(name) = catalogue_name(a)
                    && st.checked.insert(name)
                {
                    actions.push(format!("name/cos:{name}"));
                }
            }
            st.custom_actions = form.get(&key("custom_actions")).unwrap_or("").to_owned();
            actions.extend(lines(&st.custom_actions));
            st.resources = form.get(&key("resources")).unwrap_or("").to_owned();
            st.conditions = form.get(&key("conditions")).unwrap_or("").to_owned();
            let conditions = if st.conditions.trim().is_empty() {
                Default::default()
            } else {
                match serde_json::from_str(&st.conditions) {
                    Ok(c) => c,
                    Err(e) => {
                        readable = false;
                        st.errors.conditions.push(format!(
                            "not a condition object ({e}); write JSON such as {{\"string_like\": {{\"cos:prefix\": \"users/${{sub}}/*\"}}}}"
                        ));
                        Default::default()
                    }
                }
            };
            doc_statements.push(TemplateStatement {
                effect: if st.deny { Effect::Deny } else { Effect::Allow },
                actions,
                resources: lines(&st.resources),
                conditions,
            });
            statements.push(st);
        }
        if op == "add" && statements.len() < MAX_STATEMENTS {
            statements.push(StatementForm::blank(statements.len()));
        }
        let editor = Self {
            prefix: form.text("prefix"),
            note: form.text("note"),
            statements,
            prefix_errors: Vec::new(),
            general_errors: Vec::new(),
            preview_input: form.get("preview_input").unwrap_or("").to_owned(),
        };
        let doc = TemplateDocument {
            prefix: editor.prefix.clone(),
            statements: doc_statements,
        };
        (editor, readable.then_some(doc))
    }

    /// Puts validation errors next to the fields they name (`statements[1].resources[0]`).
    fn apply(&mut self, doc: &TemplateDocument, errors: &[FieldError]) {
        for e in errors {
            if e.field == "prefix" {
                self.prefix_errors.push(e.message.clone());
                continue;
            }
            let Some((i, rest)) = statement_path(&e.field) else {
                self.general_errors.push(if e.field == "statements" {
                    e.message.clone()
                } else {
                    format!("{}: {}", e.field, e.message)
                });
                continue;
            };
            let (Some(st), Some(src)) = (self.statements.get_mut(i), doc.statements.get(i)) else {
                self.general_errors
                    .push(format!("{}: {}", e.field, e.message));
                continue;
            };
            if let Some(sub) = rest.strip_prefix(".actions") {
                let msg = match index_of(sub).and_then(|j| src.actions.get(j)) {
                    Some(a) => format!("“{a}”: {}", e.message),
                    None => e.message.clone(),
                };
                st.errors.actions.push(msg);
            } else if let Some(sub) = rest.strip_prefix(".resources") {
                let msg = match index_of(sub).map(|j| (j, src.resources.get(j))) {
                    Some((j, Some(r))) => format!("line {} “{r}”: {}", j + 1, e.message),
                    _ => e.message.clone(),
                };
                st.errors.resources.push(msg);
            } else if let Some(sub) = rest.strip_prefix(".conditions") {
                let at = sub.trim_start_matches('.');
                st.errors.conditions.push(if at.is_empty() {
                    e.message.clone()
                } else {
                    format!("{at}: {}", e.message)
                });
            } else {
                st.errors.general.push(e.message.clone());
            }
        }
    }
}

/// `statements[3].resources[1]` → `(3, ".resources[1]")`.
fn statement_path(field: &str) -> Option<(usize, &str)> {
    let rest = field.strip_prefix("statements[")?;
    let end = rest.find(']')?;
    Some((rest[..end].parse().ok()?, &rest[end + 1..]))
}

/// `[2]` → 2.
fn index_of(s: &str) -> Option<usize> {
    s.strip_prefix('[')?.split(']').next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Preview

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
    pub resources: Vec<String>,
    pub actions: Vec<String>,
    pub prefix: String,
    pub chars: usize,
    pub max_chars: usize,
    pub hash: String,
    pub template_errors: Vec<String>,
}

/// Claims from a pasted JWT (payload decoded, signature NOT verified) or a JSON object.
fn parse_claims(
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

fn preview(
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
        view.message = "The draft has errors (see the fields marked above).".into();
        return view;
    };
    if let Err(errs) = doc.validate() {
        view.state = "template";
        view.message = "The draft would be refused when saved:".into();
        view.template_errors = errs
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        return view;
    }
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
                "the claims have no string or integer `{user_claim}` (this app's user claim): the gateway answers 401 invalid_token"
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
            view.resources = rendered
                .policy
                .statement
                .iter()
                .map(|s| format!("{} {}", s.effect, s.resource.join(", ")))
                .collect();
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

async fn user_claim(state: &State, app: &App) -> Result<String, AdminError> {
    Ok(state
        .store
        .app_auth(app.id)
        .await?
        .map(|a| a.user_claim)
        .unwrap_or_else(|| "sub".into()))
}

// ---------------------------------------------------------------------------------------------
// Pages

#[derive(Template)]
#[template(path = "admin/policy.html")]
struct EditorPage {
    layout: Layout,
    slug: String,
    active_version: Option<i32>,
    loaded_from: Option<i32>,
    editor: EditorForm,
    groups: &'static [ActionGroup],
    preview: PreviewView,
}

#[derive(Template)]
#[template(path = "partials/_preview.html")]
struct PreviewFragment {
    preview: PreviewView,
}

#[derive(serde::Deserialize)]
pub struct EditorQuery {
    version: Option<i32>,
}

pub async fn editor(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    slug: web::Path<String>,
    query: web::Query<EditorQuery>,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let (doc, loaded_from) = match query.version {
        Some(v) => (
            state
                .store
                .template_version(app.id, v)
                .await?
                .ok_or(AdminError::NotFound)?
                .document,
            Some(v),
        ),
        None => match state.store.active_template(app.id).await? {
            Some(t) => (t.document, None),
            None => (TemplateDocument::default_for_users(), None),
        },
    };
    let claim = user_claim(&state, &app).await?;
    let editor = EditorForm::from_document(&doc);
    let preview = preview(&app, &claim, Some(&doc), "");
    page(&EditorPage {
        layout: Layout::new(&user, "apps", format!("Policy of {}", app.slug)).with_notice(&req),
        slug: app.slug.clone(),
        active_version: app.active_template_version,
        loaded_from,
        editor,
        groups: COS_ACTIONS,
        preview,
    })
}

pub async fn submit(
    state: State,
    user: CurrentUser,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let op = form.text("op");
    let (mut editor, doc) = EditorForm::read(&form, &op);
    let claim = user_claim(&state, &app).await?;
    let mut status = StatusCode::OK;
    if op == "save" {
        // An unreadable draft (conditions that are not JSON) already carries its errors.
        if let Some(doc) = &doc {
            let note = editor.note.clone();
            match state
                .store
                .save_template(&user.username, app.id, doc, Some(&note))
                .await
            {
                Ok(_) => {
                    return Ok(see_other(format!(
                        "/apps/{}/policy?notice=policy_saved",
                        app.slug
                    )));
                }
                Err(StoreError::Invalid(errs)) => editor.apply(doc, &errs),
                Err(e) => return Err(e.into()),
            }
        }
        status = StatusCode::UNPROCESSABLE_ENTITY;
    } else if op == "preview"
        && let Some(doc) = &doc
        && let Err(errs) = doc.validate()
    {
        editor.apply(doc, &errs);
    }
    let preview = preview(&app, &claim, doc.as_ref(), &editor.preview_input);
    page_with(
        status,
        &EditorPage {
            layout: Layout::new(&user, "apps", format!("Policy of {}", app.slug)),
            slug: app.slug.clone(),
            active_version: app.active_template_version,
            loaded_from: None,
            editor,
            groups: COS_ACTIONS,
            preview,
        },
    )
}

/// The preview alone, for `admin.js` to swap in while typing.
pub async fn preview_fragment(
    state: State,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let (editor, doc) = EditorForm::read(&form, "preview");
    let claim = user_claim(&state, &app).await?;
    page(&PreviewFragment {
        preview: preview(&app, &claim, doc.as_ref(), &editor.preview_input),
    })
}

pub struct VersionRow {
    pub version: i32,
    pub author: String,
    pub note: String,
    pub created_at: String,
    pub active: bool,
}

#[derive(Template)]
#[template(path = "admin/policy_versions.html")]
struct VersionsPage {
    layout: Layout,
    slug: String,
    versions: Vec<VersionRow>,
    from_default: i32,
    to_default: i32,
}

pub async fn versions(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    slug: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let versions: Vec<VersionRow> = state
        .store
        .template_versions(app.id)
        .await?
        .into_iter()
        .map(|v| VersionRow {
            active: Some(v.version) == app.active_template_version,
            version: v.version,
            author: v.author,
            note: v.note.unwrap_or_default(),
            created_at: fmt_time(v.created_at),
        })
        .collect();
    let to_default = versions.first().map_or(0, |v| v.version);
    let from_default = versions.get(1).map_or(to_default, |v| v.version);
    page(&VersionsPage {
        layout: Layout::new(&user, "apps", format!("Policy versions of {}", app.slug))
            .with_notice(&req),
        slug: app.slug,
        versions,
        from_default,
        to_default,
    })
}

#[derive(serde::Deserialize)]
pub struct DiffQuery {
    from: i32,
    to: i32,
}

#[derive(Template)]
#[template(path = "admin/policy_diff.html")]
struct DiffPage {
    layout: Layout,
    slug: String,
    from: VersionRow,
    to: VersionRow,
    lines: Vec<DiffLine>,
    changed: bool,
}

fn version_row(v: &PolicyTemplateVersion, active: Option<i32>) -> VersionRow {
    VersionRow {
        version: v.version,
        author: v.author.clone(),
        note: v.note.clone().unwrap_or_default(),
        created_at: fmt_time(v.created_at),
        active: Some(v.version) == active,
    }
}

pub async fn diff(
    state: State,
    user: CurrentUser,
    slug: web::Path<String>,
    query: web::Query<DiffQuery>,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let load = |v: i32| {
        let store = state.store.clone();
        async move {
            store
                .template_version(app.id, v)
                .await?
                .ok_or(AdminError::NotFound)
        }
    };
    let (from, to) = (load(query.from).await?, load(query.to).await?);
    let text = |v: &PolicyTemplateVersion| {
        serde_json::to_string_pretty(&v.document).map_err(AdminError::internal)
    };
    let lines = diff_lines(&text(&from)?, &text(&to)?);
    let changed = lines.iter().any(|l| l.tag != ' ');
    page(&DiffPage {
        layout: Layout::new(&user, "apps", format!("Policy diff of {}", app.slug)),
        slug: app.slug.clone(),
        from: version_row(&from, app.active_template_version),
        to: version_row(&to, app.active_template_version),
        lines,
        changed,
    })
}

pub async fn rollback(
    state: State,
    user: CurrentUser,
    slug: web::Path<String>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let version: i32 = form
        .text("version")
        .parse()
        .map_err(|_| AdminError::BadRequest("version must be a number".into()))?;
    state
        .store
        .activate_template(&user.username, app.id, version)
        .await?;
    Ok(see_other(format!(
        "/apps/{}/policy/versions?notice=rolled_back",
        app.slug
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_claims() {
        assert_eq!(
            statement_path("statements[12].resources[3]"),
            Some((12, ".resources[3]"))
        );
        assert_eq!(statement_path("prefix"), None);
        assert_eq!(index_of("[3]"), Some(3));
        assert_eq!(catalogue_name("cos:PutObject"), Some("PutObject"));
        assert_eq!(catalogue_name("name/cos:*"), None);

        let (claims, source) = parse_claims(r#"{"sub":"alice"}"#).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(source, "claims JSON");
        // header {"alg":"HS256"}, payload {"sub":"bob"}, any signature.
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln";
        let (claims, source) = parse_claims(&format!("Bearer {jwt}")).unwrap();
        assert_eq!(claims["sub"], "bob");
        assert!(source.contains("NOT verified") && source.contains("HS256"));
        assert!(parse_claims("nonsense").is_err());
        assert!(parse_claims("[1]").is_err());
    }

    #[test]
    fn errors_land_on_their_fields() {
        let form = FormData::parse(
            b"statement_count=2&prefix=users%2F%24%7Bsub%7D%2F\
              &st0_actions=name%2Fcos%3APutObject&st0_custom_actions=bogus\
              &st0_resources=users%2F%24%7Bsub%7D%2F*%0Ausers%2F%24%7Bsub%7D*\
              &st1_effect=deny&st1_actions=name%2Fcos%3AGetObject&st1_resources=x%2F*\
              &st1_conditions=%7B%22nope%22%3A%7B%22k%22%3A%22v%22%7D%7D",
        )
        .unwrap();
        let (mut editor, doc) = EditorForm::read(&form, "save");
        let doc = doc.unwrap();
        assert_eq!(doc.statements.len(), 2);
        assert_eq!(doc.statements[0].actions, ["name/cos:PutObject", "bogus"]);
        assert!(editor.statements[1].deny);
        let errs = doc.validate().unwrap_err();
        editor.apply(&doc, &errs);
        let st0 = &editor.statements[0].errors;
        assert!(
            st0.actions.iter().any(|m| m.starts_with("“bogus”")),
            "{:?}",
            st0.actions
        );
        assert!(
            st0.resources
                .iter()
                .any(|m| m.starts_with("line 2 “users/${sub}*”")),
            "{:?}",
            st0.resources
        );
        assert!(editor.statements[1].errors.conditions[0].starts_with("nope"));

        // Unreadable conditions stop the document; remove and add statements.
        let form =
            FormData::parse(b"statement_count=2&st0_conditions=%7Bx&st1_resources=a%2F*").unwrap();
        let (editor, doc) = EditorForm::read(&form, "add");
        assert!(doc.is_none());
        assert_eq!(editor.statements.len(), 3);
        assert!(!editor.statements[0].errors.conditions.is_empty());
        let (editor, doc) = EditorForm::read(&form, "remove:0");
        assert_eq!(editor.statements.len(), 1);
        assert_eq!(doc.unwrap().statements[0].resources, ["a/*"]);
    }
}
