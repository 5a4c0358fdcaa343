//! Admin users: create, change role, disable, reset password.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use policy_store::{Role, StoreError};
use secrecy::SecretString;
use time::OffsetDateTime;

use super::{State, page, page_with, see_other};
use crate::error::AdminError;
use crate::forms::FormData;
use crate::password::{self, MIN_PASSWORD_LEN, PasswordError};
use crate::session::CurrentUser;
use crate::view::{Layout, Zone};

pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub role: &'static str,
    pub disabled: bool,
    pub locked_until: Option<String>,
    pub failed_logins: i32,
    pub created_at: String,
    pub is_self: bool,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<UserRow>,
    min_password: usize,
    new_username: String,
    new_role: String,
    error: Option<String>,
}

async fn render(
    req: &HttpRequest,
    state: &State,
    (user, zone): (&CurrentUser, &Zone),
    status: StatusCode,
    (new_username, new_role, error): (String, String, Option<String>),
) -> Result<HttpResponse, AdminError> {
    let now = OffsetDateTime::now_utc();
    let users = state
        .store
        .list_admin_users()
        .await?
        .into_iter()
        .map(|u| UserRow {
            is_self: u.id == user.id,
            id: u.id,
            role: u.role.as_str(),
            disabled: u.disabled,
            locked_until: u.locked_until.filter(|t| *t > now).map(|t| zone.fmt(t)),
            failed_logins: u.failed_logins,
            created_at: zone.fmt(u.created_at),
            username: u.username,
        })
        .collect();
    page_with(
        status,
        &UsersPage {
            layout: Layout::new(user, zone, "users", "Users").with_notice(req),
            users,
            min_password: MIN_PASSWORD_LEN,
            new_username,
            new_role,
            error,
        },
    )
}

#[derive(Template)]
#[template(path = "admin/users_auditor.html")]
struct AuditorUsersPage {
    layout: Layout,
}

pub async fn list(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
) -> Result<HttpResponse, AdminError> {
    // Auditors may open the page (it is in their menu's reach by URL): it says what it is
    // for, and where their own settings are, without a list or a form.
    if !user.is_admin() {
        return page(&AuditorUsersPage {
            layout: Layout::new(&user, &zone, "users", "Users"),
        });
    }
    render(
        &req,
        &state,
        (&user, &zone),
        StatusCode::OK,
        (String::new(), "auditor".into(), None),
    )
    .await
}

fn role_of(form: &FormData) -> Result<Role, String> {
    Role::parse(&form.text("role")).ok_or_else(|| "Choose a role: admin or auditor.".to_owned())
}

async fn hash(form: &FormData) -> Result<String, String> {
    let pw = SecretString::from(form.get("password").unwrap_or("").to_owned());
    password::hash_password(pw).await.map_err(|e| match e {
        PasswordError::TooShort => {
            format!("Choose a password of at least {MIN_PASSWORD_LEN} characters.")
        }
        PasswordError::Hash => "The password could not be hashed: try again.".to_owned(),
    })
}

fn store_message(e: StoreError) -> Result<String, AdminError> {
    match e {
        StoreError::Invalid(errs) => Ok(errs
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join(" ")),
        StoreError::Conflict(m) => Ok(m),
        other => Err(other.into()),
    }
}

pub async fn create(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    zone: Zone,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let username = form.text("username");
    let role_text = form.text("role");
    let result = async {
        let role = role_of(&form)?;
        let phc = hash(&form).await?;
        match state
            .store
            .create_admin_user(&user.username, &username, &phc, role)
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(e) => Ok(Err(e)),
        }
    }
    .await;
    let error = match result {
        Ok(Ok(())) => return Ok(see_other("/users?notice=user_created")),
        Ok(Err(e)) => store_message(e)?,
        Err(msg) => msg,
    };
    render(
        &req,
        &state,
        (&user, &zone),
        StatusCode::UNPROCESSABLE_ENTITY,
        (username, role_text, Some(error)),
    )
    .await
}

async fn refuse(
    req: &HttpRequest,
    state: &State,
    user: &CurrentUser,
    error: String,
) -> Result<HttpResponse, AdminError> {
    render(
        req,
        state,
        (user, &Zone::UTC),
        StatusCode::UNPROCESSABLE_ENTITY,
        (String::new(), "auditor".into(), Some(error)),
    )
    .await
}

pub async fn set_role(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    id: web::Path<i64>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let role = match role_of(&form) {
        Ok(r) => r,
        Err(msg) => return refuse(&req, &state, &user, msg).await,
    };
    match state
        .store
        .set_admin_user_role(&user.username, *id, role)
        .await
    {
        Ok(_) => Ok(see_other("/users?notice=user_saved")),
        Err(e) => {
            let msg = store_message(e)?;
            refuse(&req, &state, &user, msg).await
        }
    }
}

pub async fn set_disabled(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    id: web::Path<i64>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let disabled = match form.get("disabled") {
        Some("true") => true,
        Some("false") => false,
        _ => {
            return Err(AdminError::BadRequest(
                "disabled must be true or false".into(),
            ));
        }
    };
    if disabled && *id == user.id {
        return refuse(
            &req,
            &state,
            &user,
            "You cannot disable your own account.".into(),
        )
        .await;
    }
    match state
        .store
        .set_admin_user_disabled(&user.username, *id, disabled)
        .await
    {
        Ok(_) => Ok(see_other("/users?notice=user_saved")),
        Err(e) => {
            let msg = store_message(e)?;
            refuse(&req, &state, &user, msg).await
        }
    }
}

pub async fn reset_password(
    req: HttpRequest,
    state: State,
    user: CurrentUser,
    id: web::Path<i64>,
    form: FormData,
) -> Result<HttpResponse, AdminError> {
    let phc = match hash(&form).await {
        Ok(p) => p,
        Err(msg) => return refuse(&req, &state, &user, msg).await,
    };
    state
        .store
        .set_admin_user_password(&user.username, *id, &phc)
        .await?;
    Ok(see_other("/users?notice=password_reset"))
}

#[derive(Template)]
#[template(path = "admin/confirm_user.html")]
struct ConfirmUserPage {
    layout: Layout,
    id: i64,
    username: String,
    /// `disable`, `enable` or `password`.
    action: &'static str,
    min_password: usize,
    is_self: bool,
}

async fn confirm_page(
    state: &State,
    (user, zone): (&CurrentUser, &Zone),
    id: i64,
    action: &'static str,
) -> Result<HttpResponse, AdminError> {
    let target = state
        .store
        .admin_user_by_id(id)
        .await?
        .ok_or(AdminError::NotFound)?;
    let title = match action {
        "password" => format!("Reset the password of {}", target.username),
        "enable" => format!("Enable {}", target.username),
        _ => format!("Disable {}", target.username),
    };
    page(&ConfirmUserPage {
        layout: Layout::new(user, zone, "users", title),
        id,
        is_self: id == user.id,
        username: target.username,
        action,
        min_password: MIN_PASSWORD_LEN,
    })
}

/// GET `/users/{id}/password`: asks for the new password, and says what a reset does.
pub async fn confirm_reset(
    state: State,
    user: CurrentUser,
    zone: Zone,
    id: web::Path<i64>,
) -> Result<HttpResponse, AdminError> {
    confirm_page(&state, (&user, &zone), *id, "password").await
}

/// GET `/users/{id}/disabled`: asks before disabling (or enabling) a user.
pub async fn confirm_disable(
    state: State,
    user: CurrentUser,
    zone: Zone,
    id: web::Path<i64>,
) -> Result<HttpResponse, AdminError> {
    let target = state
        .store
        .admin_user_by_id(*id)
        .await?
        .ok_or(AdminError::NotFound)?;
    let action = if target.disabled { "enable" } else { "disable" };
    confirm_page(&state, (&user, &zone), *id, action).await
}
