//! Who a statement reaches: only the user's own home prefix, or every user of the app.
//!
//! A template exists to give each user their own prefix (`users/${sub}/`). A resource outside
//! it (`*`, `shared/*`, the bucket itself) is the same object for every user, so a grant there
//! is shared by all of them. That is sometimes wanted (a public folder, multipart bookkeeping),
//! but it must never happen by accident: an allow statement that reaches outside the home
//! prefix is refused at save time unless it is marked [`Shared`] with a reason, which is kept
//! with the version (and so in the change log).
//!
//! The rules, for allow statements (a deny statement only takes away):
//! - The home prefix is [`TemplateDocument::home_prefix_template`]. It is *per user* when it
//!   holds `${sub}`, `${sub_hash}` or `${claim.NAME}`; a home without one (`shared/`) is the
//!   same for everyone, so no resource counts as inside it.
//! - An object resource is inside the home when its pattern starts with the home pattern
//!   (`users/${sub}/*`, `users/${sub}/photos/*`, `users/${sub}/profile.json`).
//! - The bucket itself (`/`) is inside the home only when the statement lists it under the
//!   home: a `string_like` or `string_equal` condition on `cos:prefix` whose every value starts
//!   with the home (`GetBucket` with `users/${sub}/*`). Without one it names the whole bucket.
//! - An explicitly set home prefix must be per user, and some allow resource must be inside it.

use serde::{Deserialize, Serialize};
use sts_core::Effect;

use super::{Piece, TemplateDocument, TemplateStatement, Var, parse_pattern};
use crate::error::FieldError;

/// The mark on a statement that may reach beyond the user's home prefix, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shared {
    /// Why every user of the app may reach these resources (shown in the history).
    pub reason: String,
}

/// Longest accepted [`Shared::reason`].
pub const MAX_SHARED_REASON_CHARS: usize = 300;

/// Where one statement's grants land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// A deny statement: it only takes away.
    Deny,
    /// Every resource is inside the user's own home prefix.
    Home,
    /// Marked shared; `outside` lists the resources (by index) beyond the home prefix.
    Shared { reason: String, outside: Vec<usize> },
    /// Reaches beyond the home prefix without a mark: the resources at fault, by index.
    Unmarked { outside: Vec<usize> },
}

impl Reach {
    /// Reaches beyond the home prefix, marked or not.
    pub fn is_beyond_home(&self) -> bool {
        matches!(self, Reach::Shared { .. } | Reach::Unmarked { .. })
    }
}

/// Does `pattern` hold a variable that differs between users?
fn is_per_user(pattern: &str) -> bool {
    parse_pattern(pattern).is_ok_and(|pieces| {
        pieces
            .iter()
            .any(|(p, _)| matches!(p, Piece::Var(Var::Sub | Var::SubHash | Var::Claim(_))))
    })
}

/// The operators that pin `cos:prefix` to given values (no `_if_exist`: a request without a
/// prefix would pass that, and list the whole bucket).
const PREFIX_OPERATORS: [&str; 2] = ["string_like", "string_equal"];

/// Is the bucket-level resource of `st` limited to listings under `home`?
fn bucket_listing_under(home: &str, st: &TemplateStatement) -> bool {
    PREFIX_OPERATORS.iter().any(|op| {
        let Some(value) = st.conditions.get(*op).and_then(|e| e.get("cos:prefix")) else {
            return false;
        };
        let values: Vec<&serde_json::Value> = match value {
            serde_json::Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        !values.is_empty()
            && values
                .iter()
                .all(|v| v.as_str().is_some_and(|s| s.starts_with(home)))
    })
}

fn in_home(home: Option<&str>, resource: &str, st: &TemplateStatement) -> bool {
    let Some(home) = home else {
        return false;
    };
    if resource == "/" {
        bucket_listing_under(home, st)
    } else {
        resource.starts_with(home)
    }
}

impl TemplateDocument {
    /// The home prefix pattern when it differs between users, else `None`.
    pub fn per_user_home(&self) -> Option<String> {
        let home = self.home_prefix_template();
        (!home.is_empty() && is_per_user(&home)).then_some(home)
    }

    /// Where each statement's grants land, in statement order.
    pub fn reach(&self) -> Vec<Reach> {
        let home = self.per_user_home();
        self.statements
            .iter()
            .map(|st| {
                if st.effect == Effect::Deny {
                    return Reach::Deny;
                }
                let outside: Vec<usize> = st
                    .resources
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !in_home(home.as_deref(), r, st))
                    .map(|(j, _)| j)
                    .collect();
                match &st.shared {
                    Some(s) => Reach::Shared {
                        reason: s.reason.clone(),
                        outside,
                    },
                    None if outside.is_empty() => Reach::Home,
                    None => Reach::Unmarked { outside },
                }
            })
            .collect()
    }

    /// The save-time scope checks (see the module docs). `skip` says which fields already
    /// have an error (their patterns are not judged again).
    pub(super) fn check_reach(&self, skip: &dyn Fn(&str) -> bool, errors: &mut Vec<FieldError>) {
        let home = self.per_user_home();
        if !self.prefix.is_empty() && !skip("prefix") {
            if home.is_none() {
                errors.push(FieldError::new(
                    "prefix",
                    "this home prefix is the same for every user: put ${sub} or ${sub_hash} in it, e.g. users/${sub}/",
                ));
            } else if !self.statements.iter().any(|st| {
                st.effect == Effect::Allow
                    && st.resources.iter().any(|r| in_home(home.as_deref(), r, st))
            }) {
                errors.push(FieldError::new(
                    "prefix",
                    "no allow statement grants anything under this home prefix: add a resource under it (e.g. users/${sub}/*) or change it to the prefix your resources use",
                ));
            }
        }
        for (i, (st, reach)) in self.statements.iter().zip(self.reach()).enumerate() {
            if let Some(shared) = &st.shared {
                let reason = shared.reason.trim();
                let field = format!("statements[{i}].shared");
                if reason.is_empty() {
                    errors.push(FieldError::new(
                        field,
                        "say why every user of the app may reach these resources (the reason is kept with the version)",
                    ));
                } else if reason.chars().count() > MAX_SHARED_REASON_CHARS
                    || reason.chars().any(char::is_control)
                {
                    errors.push(FieldError::new(
                        field,
                        format!(
                            "keep the reason to one line of at most {MAX_SHARED_REASON_CHARS} characters"
                        ),
                    ));
                }
            }
            let Reach::Unmarked { outside } = reach else {
                continue;
            };
            for j in outside {
                let field = format!("statements[{i}].resources[{j}]");
                if skip(&field) {
                    continue;
                }
                errors.push(FieldError::new(
                    field,
                    outside_message(home.as_deref(), &st.resources[j]),
                ));
            }
        }
    }
}

fn outside_message(home: Option<&str>, resource: &str) -> String {
    const MARK: &str = "or mark the statement as shared by every user and give the reason";
    match home {
        None => format!(
            "every user of the app reaches this, because the policy has no per-user home prefix: set the home prefix (e.g. users/${{sub}}/) and keep resources under it, {MARK}"
        ),
        Some(home) if resource == "/" => format!(
            "the bucket itself (/) is shared by every user: for listing (GetBucket) add a string_like condition on cos:prefix with {home}*, {MARK}"
        ),
        Some(home) => format!(
            "this is outside the user's home prefix {home}, so every user of the app reaches it: move it under {home}, {MARK}"
        ),
    }
}
