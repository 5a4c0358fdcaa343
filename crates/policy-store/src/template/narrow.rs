//! Narrowing a rendered policy to what a request asked for: it can narrow, never widen.

use sts_core::CosResource;
use sts_core::Effect;
use sts_core::Policy;
use sts_core::policy::{MAX_POLICY_CHARS, PolicyError, parse_cos_resource};

use super::{
    MAX_SUB_PREFIX_LEN, NarrowError, RenderedPolicy, action_name, finish, normalize_action,
    sanitize,
};

/// Does the granted action (`name/cos:X`, possibly with a trailing `*`) cover `requested`?
pub(super) fn grants(granted: &str, requested: &str) -> bool {
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
            return Err(bad("remove the double slash //"));
        }
        if seg == "." || seg == ".." {
            return Err(bad("remove the . or .. folder: write the path without it"));
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
