//! The editor's form: the statements as typed, read into a template document, and the
//! validation errors put back next to the fields they name.

use std::collections::BTreeSet;

use policy_store::{FieldError, Shared, TemplateDocument, TemplateStatement};
use sts_core::Effect;

use crate::forms::{FormData, lines};

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
pub fn catalogue_name(action: &str) -> Option<&'static str> {
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
    pub shared: Vec<String>,
    pub general: Vec<String>,
}

impl StatementErrors {
    pub fn any(&self) -> bool {
        !(self.actions.is_empty()
            && self.resources.is_empty()
            && self.conditions.is_empty()
            && self.shared.is_empty()
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
    /// Marked "shared by every user" (see `policy_store::Reach`), and why.
    pub shared: bool,
    pub shared_reason: String,
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
            shared: false,
            shared_reason: String::new(),
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
            shared: st.shared.is_some(),
            shared_reason: st
                .shared
                .as_ref()
                .map(|s| s.reason.clone())
                .unwrap_or_default(),
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
    pub fn from_document(doc: &TemplateDocument) -> Self {
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
    pub fn read(form: &FormData, op: &str) -> (Self, Option<TemplateDocument>) {
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
            st.shared = form.checked(&key("shared"));
            st.shared_reason = form.text(&key("shared_reason"));
            let conditions = if st.conditions.trim().is_empty() {
                Default::default()
            } else {
                match serde_json::from_str(&st.conditions) {
                    Ok(c) => c,
                    Err(e) => {
                        readable = false;
                        st.errors.conditions.push(format!(
                            "this is not valid JSON ({e}): write an object such as {{\"string_like\": {{\"cos:prefix\": \"users/${{sub}}/*\"}}}}"
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
                shared: st.shared.then(|| Shared {
                    reason: st.shared_reason.clone(),
                }),
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
    pub fn apply(&mut self, doc: &TemplateDocument, errors: &[FieldError]) {
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
            } else if rest == ".shared" {
                st.errors.shared.push(e.message.clone());
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

impl EditorForm {
    /// Every error as `(form field name, message)`, for `admin.js` to mark the fields while
    /// the preview refreshes (the page marks them itself after a submit).
    pub fn live_errors(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .prefix_errors
            .iter()
            .map(|m| ("prefix".to_owned(), m.clone()))
            .collect();
        for st in &self.statements {
            let i = st.index;
            let e = &st.errors;
            for (field, messages) in [
                ("custom_actions", &e.actions),
                ("resources", &e.resources),
                ("conditions", &e.conditions),
                ("shared_reason", &e.shared),
                ("statement", &e.general),
            ] {
                for m in messages {
                    out.push((format!("st{i}_{field}"), m.clone()));
                }
            }
        }
        out
    }
}

/// `statements[3].resources[1]` → `(3, ".resources[1]")`.
pub fn statement_path(field: &str) -> Option<(usize, &str)> {
    let rest = field.strip_prefix("statements[")?;
    let end = rest.find(']')?;
    Some((rest[..end].parse().ok()?, &rest[end + 1..]))
}

/// `[2]` → 2.
pub fn index_of(s: &str) -> Option<usize> {
    s.strip_prefix('[')?.split(']').next()?.parse().ok()
}
