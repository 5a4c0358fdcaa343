//! The admin change log: who changed what and when, with before and after. Secrets are
//! redacted by the store before they are ever written there; the AssumeRole ExternalId the
//! store records in full is masked here, before anything is rendered.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use policy_store::{AdminChange, AdminChangeFilter};
use serde_json::Value;

use super::apps::mask_external_id;
use super::{State, page};
use crate::error::AdminError;
use crate::session::CurrentUser;
use crate::view::{Layout, Zone};

const PAGE: i64 = 50;

/// Actions the store records, with the label the pages show, for the table and the filter.
const ACTIONS: &[(&str, &str)] = &[
    ("app.create", "App created"),
    ("app.update", "App settings changed"),
    ("app.enable", "App enabled"),
    ("app.disable", "App disabled"),
    ("auth.update", "JWT settings changed"),
    ("template.save", "Policy saved"),
    ("template.activate", "Policy version activated"),
    ("subject.block", "Subject blocked"),
    ("subject.unblock", "Subject unblocked"),
    ("admin_user.create", "User created"),
    ("admin_user.role", "Role changed"),
    ("admin_user.disable", "User disabled"),
    ("admin_user.enable", "User enabled"),
    ("admin_user.password", "Password reset"),
];

/// The label of a recorded action (the action itself when it has none).
fn action_label(action: &str) -> String {
    ACTIONS
        .iter()
        .find(|(a, _)| *a == action)
        .map_or_else(|| action.to_owned(), |(_, l)| (*l).to_owned())
}

#[derive(Debug, Default, Clone, serde::Deserialize, serde::Serialize)]
pub struct ChangesQuery {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub actor: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
}

/// One changed field: name, before, after (JSON text).
pub struct FieldChange {
    pub field: String,
    pub before: String,
    pub after: String,
}

pub struct ChangeRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub label: String,
    pub target: String,
    pub fields: Vec<FieldChange>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

fn short(v: Option<&Value>) -> String {
    match v {
        None => "–".into(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 120 {
                format!("{}…", s.chars().take(120).collect::<String>())
            } else {
                s
            }
        }
    }
}

/// The top-level fields whose values differ between before and after, shown with
/// [`masked`] values (compared unmasked, so a change the mask hides is still listed).
fn changed_fields(before: Option<&Value>, after: Option<&Value>) -> Vec<FieldChange> {
    let empty = serde_json::Map::new();
    let b = before.and_then(Value::as_object).unwrap_or(&empty);
    let a = after.and_then(Value::as_object).unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    let shown = |v: Option<&Value>, k: &str| short(v.map(|v| masked(k, v.clone())).as_ref());
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| FieldChange {
            field: k.clone(),
            before: shown(b.get(k), k),
            after: shown(a.get(k), k),
        })
        .collect()
}

/// `value` (found under `key`) with every `external_id` string in it masked, at any depth.
fn masked(key: &str, value: Value) -> Value {
    match value {
        Value::String(s) if key == "external_id" => Value::String(mask_external_id(&s)),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = masked(&k, v);
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| masked(key, v)).collect()),
        other => other,
    }
}

impl ChangeRow {
    fn from(c: AdminChange, zone: &Zone) -> Self {
        Self {
            at: zone.fmt(c.at),
            label: action_label(&c.action),
            fields: changed_fields(c.before.as_ref(), c.after.as_ref()),
            actor: c.actor,
            action: c.action,
            target: c.target,
            before: c.before.map(|v| masked("", v)),
            after: c.after.map(|v| masked("", v)),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/changes.html")]
struct ChangesPage {
    layout: Layout,
    q: ChangesQuery,
    actions: &'static [(&'static str, &'static str)],
    errors: Vec<String>,
    rows: Vec<ChangeRow>,
    paged: bool,
    first_url: String,
    older_url: Option<String>,
}

pub async fn list(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
    query: web::Query<ChangesQuery>,
) -> Result<HttpResponse, AdminError> {
    let q = query.into_inner();
    let mut errors = Vec::new();
    let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let example = format!("a date and time such as 2024-05-01T13:00 ({})", zone.name());
    let from = opt(&q.from).and_then(|v| {
        let t = zone.parse_input(&v);
        if t.is_none() {
            errors.push(format!("From: enter {example}."));
        }
        t
    });
    let to = opt(&q.to).and_then(|v| {
        let t = zone.parse_input_end(&v);
        if t.is_none() {
            errors.push(format!("To: enter {example}."));
        }
        t
    });
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        errors.push("From is after To, so nothing can match: swap them.".into());
    }
    let filter = AdminChangeFilter {
        from,
        to,
        actor: opt(&q.actor),
        action: opt(&q.action),
        target: opt(&q.target),
    };
    let mut rows = Vec::new();
    let mut older_url = None;
    if errors.is_empty() {
        let mut found = state
            .store
            .search_admin_changes(&filter, q.before, PAGE + 1)
            .await?;
        if found.len() as i64 > PAGE {
            found.truncate(PAGE as usize);
            if let Some(last) = found.last() {
                let next = ChangesQuery {
                    before: Some(last.id),
                    ..q.clone()
                };
                older_url = Some(format!(
                    "/changes?{}",
                    serde_urlencoded::to_string(&next).unwrap_or_default()
                ));
            }
        }
        rows = found
            .into_iter()
            .map(|c| ChangeRow::from(c, &zone))
            .collect();
    }
    let first = ChangesQuery {
        before: None,
        ..q.clone()
    };
    page(&ChangesPage {
        layout: Layout::new(&user, &zone, "changes", "Change log").with_notice(&req),
        paged: q.before.is_some(),
        first_url: format!(
            "/changes?{}",
            serde_urlencoded::to_string(&first).unwrap_or_default()
        ),
        q,
        actions: ACTIONS,
        errors,
        rows,
        older_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_changed_fields_are_listed() {
        let f = changed_fields(
            Some(&json!({"a": 1, "b": "x", "secret_key": "[redacted]"})),
            Some(&json!({"a": 2, "b": "x", "secret_key": "[redacted]", "c": true})),
        );
        let names: Vec<&str> = f.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!((f[0].before.as_str(), f[0].after.as_str()), ("1", "2"));
        assert_eq!(f[1].before, "–");
        assert_eq!(changed_fields(None, Some(&json!({"x": 1}))).len(), 1);
    }

    #[test]
    fn external_ids_are_masked_in_fields_and_in_before_after() {
        let before = json!({"external_id": "ext-0000000000001111", "name": "a"});
        let after = json!({"external_id": "ext-0000000000002222", "name": "a"});
        let row = ChangeRow::from(
            AdminChange {
                id: 1,
                at: time::OffsetDateTime::UNIX_EPOCH,
                actor: "root".into(),
                action: "app.update".into(),
                target: "photos".into(),
                before: Some(before),
                after: Some(after),
            },
            &Zone::UTC,
        );
        assert_eq!(row.fields.len(), 1);
        assert_eq!(row.label, "App settings changed");
        assert_eq!(action_label("template.save"), "Policy saved");
        assert_eq!(action_label("new.thing"), "new.thing");
        assert_eq!(
            (row.fields[0].before.as_str(), row.fields[0].after.as_str()),
            ("…1111", "…2222")
        );
        let shown = format!("{:?} {:?}", row.before, row.after);
        assert!(!shown.contains("ext-0000"), "{shown}");
        assert!(shown.contains("…2222"));

        // A change the mask hides is still listed; nested values and nulls are handled.
        let f = changed_fields(
            Some(&json!({"external_id": "ext-1"})),
            Some(&json!({"external_id": "ext-2"})),
        );
        assert_eq!(
            (f[0].before.as_str(), f[0].after.as_str()),
            ("[redacted]", "[redacted]")
        );
        assert_eq!(
            masked(
                "",
                json!({"a": [{"external_id": "0123456789abcdefXYZW"}], "external_id": null})
            ),
            json!({"a": [{"external_id": "…XYZW"}], "external_id": null})
        );
    }
}
