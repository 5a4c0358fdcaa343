//! Policy version history: which statements each version shares with every user, diffs
//! between any two versions, and rollback.

use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use policy_store::{PolicyTemplateVersion, Reach};

use super::preview::shared_lines;
use crate::diff::{DiffLine, diff_lines};
use crate::error::AdminError;
use crate::forms::FormData;
use crate::pages::{State, app_or_404, page, see_other};
use crate::session::CurrentUser;
use crate::view::{Layout, Zone};

pub struct VersionRow {
    pub version: i32,
    pub author: String,
    pub note: String,
    pub created_at: String,
    pub active: bool,
    /// Statements beyond the user's home prefix, in words (shared with a reason, or unmarked).
    pub reach: Vec<String>,
    /// Some statement reaches beyond the home prefix without a shared mark.
    pub unmarked: bool,
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
    zone: Zone,
    slug: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let app = app_or_404(&state, &slug).await?;
    let versions: Vec<VersionRow> = state
        .store
        .template_versions(app.id)
        .await?
        .iter()
        .map(|v| version_row(v, app.active_template_version, &zone))
        .collect();
    let to_default = versions.first().map_or(0, |v| v.version);
    let from_default = versions.get(1).map_or(to_default, |v| v.version);
    page(&VersionsPage {
        layout: Layout::new(
            &user,
            &zone,
            "apps",
            format!("Policy versions of {}", app.slug),
        )
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

fn version_row(v: &PolicyTemplateVersion, active: Option<i32>, zone: &Zone) -> VersionRow {
    let reach = v.document.reach();
    VersionRow {
        version: v.version,
        author: v.author.clone(),
        note: v.note.clone().unwrap_or_default(),
        created_at: zone.fmt(v.created_at),
        active: Some(v.version) == active,
        unmarked: reach.iter().any(|r| matches!(r, Reach::Unmarked { .. })),
        reach: shared_lines(&reach),
    }
}

pub async fn diff(
    state: State,
    user: CurrentUser,
    zone: Zone,
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
        layout: Layout::new(&user, &zone, "apps", format!("Policy diff of {}", app.slug)),
        slug: app.slug.clone(),
        from: version_row(&from, app.active_template_version, &zone),
        to: version_row(&to, app.active_template_version, &zone),
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
        .map_err(|_| AdminError::BadRequest("Choose a version to roll back to.".into()))?;
    state
        .store
        .activate_template(&user.username, app.id, version)
        .await?;
    Ok(see_other(format!(
        "/apps/{}/policy/versions?notice=rolled_back",
        app.slug
    )))
}
