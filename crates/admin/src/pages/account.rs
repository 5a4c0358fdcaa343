//! The signed-in user's own settings: the display time zone (every user, auditors too).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use askama::Template;
use time::OffsetDateTime;

use super::{State, page_with, see_other};
use crate::AdminState;
use crate::error::AdminError;
use crate::forms::FormData;
use crate::session::CurrentUser;
use crate::view::{Layout, Zone};

/// Route middleware (after the session guard): puts the signed-in user's [`Zone`] in the
/// request. A zone the database cannot give (or one this build does not know) is UTC.
pub async fn load_zone(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let user = req.extensions().get::<CurrentUser>().map(|u| u.id);
    if let (Some(id), Some(state)) = (user, req.app_data::<web::Data<AdminState>>().cloned()) {
        let zone = match state.store.admin_display_timezone(id).await {
            Ok(name) => name.as_deref().and_then(Zone::named).unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the display time zone; showing UTC");
                Zone::UTC
            }
        };
        req.extensions_mut().insert(zone);
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[derive(Template)]
#[template(path = "admin/account.html")]
struct AccountPage {
    layout: Layout,
    zone: String,
    zones: Vec<&'static str>,
    now: String,
    error: Option<String>,
}

fn render(
    user: &CurrentUser,
    zone: &Zone,
    status: StatusCode,
    typed: String,
    error: Option<String>,
    req: Option<&HttpRequest>,
) -> Result<HttpResponse, AdminError> {
    let mut layout = Layout::new(user, zone, "account", "Your settings");
    if let Some(req) = req {
        layout = layout.with_notice(req);
    }
    page_with(
        status,
        &AccountPage {
            layout,
            zone: typed,
            zones: Zone::all_names(),
            now: zone.fmt(OffsetDateTime::now_utc()),
            error,
        },
    )
}

pub async fn show(
    req: HttpRequest,
    user: CurrentUser,
    zone: Zone,
) -> Result<HttpResponse, AdminError> {
    render(
        &user,
        &zone,
        StatusCode::OK,
        zone.name().to_owned(),
        None,
        Some(&req),
    )
}

pub async fn save(
    state: State,
    user: CurrentUser,
    zone: Zone,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let typed = form.text("display_timezone");
    let chosen = if typed.is_empty() {
        Some(Zone::UTC)
    } else {
        Zone::named(&typed)
    };
    let Some(chosen) = chosen else {
        return render(
            &user,
            &zone,
            StatusCode::UNPROCESSABLE_ENTITY,
            typed,
            Some(
                "Not a time zone this server knows: pick a name from the list, such as Asia/Shanghai or Europe/Berlin (or UTC)."
                    .into(),
            ),
            None,
        );
    };
    let stored = (chosen != Zone::UTC).then(|| chosen.name());
    state
        .store
        .set_admin_display_timezone(user.id, stored)
        .await?;
    Ok(see_other("/account?notice=account_saved"))
}
