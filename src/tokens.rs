//! `stsgate admin create-token | list-tokens | revoke-token`: API tokens from the command
//! line. A new token is printed once, on stdout, alone on its line (scripts capture it);
//! only its hash is stored.

use anyhow::Context as _;
use policy_store::{ApiTokenStore as _, Role};
use secrecy::ExposeSecret as _;
use time::format_description::well_known::Rfc3339;

use crate::config::Settings;
use crate::serve::connect;

/// The change log's name for what the command line does.
const ACTOR: &str = "cli";

fn when(t: Option<time::OffsetDateTime>, none: &str) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| none.to_owned())
}

pub async fn create(
    settings: &Settings,
    name: &str,
    role: &str,
    expires: Option<&str>,
) -> anyhow::Result<()> {
    let role = Role::parse(role).context("--role must be admin or auditor")?;
    let expires_at = admin::api::tokens::expiry(expires)
        .map_err(|_| anyhow::anyhow!("--expires takes a lifetime such as 90d, 12h, 30m or 2w"))?;
    let issued = admin::api::auth::issue_token(name, role, expires_at);
    let store = connect(settings).await?;
    let token = store
        .create_api_token(ACTOR, &issued.record)
        .await
        .map_err(|e| anyhow::anyhow!("cannot create the token {name:?}: {e}"))?;
    eprintln!(
        "created {} token {} (id {}, expires {}); it is shown once, below:",
        token.role.as_str(),
        token.name,
        token.id,
        when(token.expires_at, "never")
    );
    println!("{}", issued.token.expose_secret());
    Ok(())
}

pub async fn list(settings: &Settings) -> anyhow::Result<()> {
    let store = connect(settings).await?;
    let tokens = store.list_api_tokens().await?;
    let now = time::OffsetDateTime::now_utc();
    println!("ID\tNAME\tROLE\tPREFIX\tSTATUS\tLAST_USED\tEXPIRES\tCREATED_BY");
    for t in tokens {
        let status = if t.revoked_at.is_some() {
            "revoked"
        } else if t.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        };
        println!(
            "{}\t{}\t{}\t{}…\t{}\t{}\t{}\t{}",
            t.id,
            t.name,
            t.role.as_str(),
            t.prefix,
            status,
            when(t.last_used_at, "never"),
            when(t.expires_at, "never"),
            t.created_by
        );
    }
    Ok(())
}

/// Revokes the live token named `name` (or, given a number, the token with that id).
pub async fn revoke(settings: &Settings, name_or_id: &str) -> anyhow::Result<()> {
    let store = connect(settings).await?;
    let tokens = store.list_api_tokens().await?;
    let token = tokens
        .iter()
        .find(|t| t.revoked_at.is_none() && t.name == name_or_id)
        .or_else(|| {
            name_or_id
                .parse::<i64>()
                .ok()
                .and_then(|id| tokens.iter().find(|t| t.id == id))
        })
        .with_context(|| format!("no live token named {name_or_id:?} (see list-tokens)"))?;
    let revoked = store.revoke_api_token(ACTOR, token.id).await?;
    println!(
        "revoked token {} (id {}) at {}",
        revoked.name,
        revoked.id,
        when(revoked.revoked_at, "?")
    );
    Ok(())
}
