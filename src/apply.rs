//! `stsgate apply -f FILE [--dry-run] [--prune]` and `stsgate export [-o FILE]`: apps as
//! code, straight to the database (`DATABASE_URL`, as the other commands) or through a running
//! server's admin API (`--server URL --token-file F`). Both modes run the same plan in the
//! store's one transaction (`AppsAsCodeStore`), so they validate, diff and write alike.
//! Straight to the database they never migrate: they refuse a schema behind or ahead of this
//! binary's migrations (`stsgate migrate` and `serve` migrate).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use policy_store::{AppPlan, AppSpec, ApplyOptions, AppsAsCodeStore as _, Plan, PlanAction};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use crate::apps_file;
use crate::config::Settings;
use crate::serve::connect_without_migrating;

/// Where the commands send their work.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// A running stsgate's admin listener, e.g. https://admin.example:8081 or
    /// http://127.0.0.1:8081 (plain http only on this machine; default: straight to the
    /// database named by DATABASE_URL).
    #[arg(long, value_name = "URL", requires = "token_file")]
    server: Option<String>,
    /// A file holding an admin API token (`stsgate admin create-token --role admin`); the
    /// token is never taken from the command line.
    #[arg(long, value_name = "FILE", requires = "server")]
    token_file: Option<PathBuf>,
    /// Allow a plain http:// --server that is not on this machine (the token and the
    /// SecretKeys then cross the network in clear); without it only https:// or loopback.
    #[arg(long, requires = "server")]
    insecure_http: bool,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// The apps file (TOML; see examples/apps.toml).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// Print the changes and make none.
    #[arg(long)]
    dry_run: bool,
    /// Also disable the apps the file does not list and unblock the subjects an app does not
    /// list (without it, those are left alone and reported).
    #[arg(long)]
    prune: bool,
    /// With --dry-run: exit with status 2 when there are changes to make (0: none), so CI can
    /// tell a database that drifted from the file.
    #[arg(long, requires = "dry_run")]
    exit_code: bool,
    #[command(flatten)]
    target: Target,
}

/// The exit status of `apply --dry-run --exit-code` when the plan has changes.
pub const PENDING_CHANGES_EXIT_CODE: i32 = 2;

/// `apply --dry-run --exit-code` found changes (not a failure: the plan was printed).
#[derive(Debug, thiserror::Error)]
#[error("the database differs from the file")]
pub struct PendingChanges;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    target: Target,
}

/// The change log's name for a direct apply: `apply:<OS user>`.
fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_default();
    let user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    format!("apply:{}", if user.is_empty() { "unknown" } else { &user })
}

pub async fn apply(settings: &Settings, args: ApplyArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let base = args
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let env = |var: &str| std::env::var(var).ok();
    // Every reference is resolved before anything is contacted: a missing secret changes
    // nothing.
    let specs = apps_file::parse(&text, &base, &env).map_err(|e| {
        anyhow::anyhow!(
            "{} has problems; nothing was changed:\n{e}",
            args.file.display()
        )
    })?;
    let options = ApplyOptions {
        dry_run: args.dry_run,
        prune: args.prune,
    };
    let file = args.file.display();
    // A failure after the request went out, unless the store or the server refused it: the
    // changes may or may not have been committed.
    let unknown = || {
        if args.dry_run {
            format!("the dry run of {file} failed (a dry run changes nothing)")
        } else {
            format!(
                "the outcome of applying {file} is unknown: the changes may or may not have been \
                 committed; run `stsgate apply -f {file} --dry-run` to see what is left to change"
            )
        }
    };
    let plan = match &args.target.server {
        None => {
            let store = connect_without_migrating(settings).await?;
            store
                .apply_specs(&actor(), &specs, options)
                .await
                .map_err(|e| match e {
                    policy_store::StoreError::Invalid(errs) => anyhow::anyhow!(
                        "{} is invalid; nothing was changed:\n{}",
                        args.file.display(),
                        errs.iter()
                            .map(|e| format!("{}: {}", e.field, e.message))
                            .collect::<Vec<_>>()
                            .join("\n")
                    ),
                    // Most failures roll back, but one while committing leaves it unknown.
                    e => anyhow::Error::new(e).context(unknown()),
                })?
        }
        Some(_) => {
            let client = ApiClient::new(&args.target)?;
            let body = json!({
                "apps": specs.iter().map(spec_with_secrets).collect::<anyhow::Result<Vec<_>>>()?,
                "dry_run": options.dry_run,
                "prune": options.prune,
            });
            client
                .send(client.http.post(client.url("/api/v1/apply")).json(&body))
                .await
                .map_err(|e| {
                    if e.downcast_ref::<OutcomeUnknown>().is_some() {
                        e.context(unknown())
                    } else {
                        e.context(format!("{file} was not applied"))
                    }
                })?
        }
    };
    let mut out = std::io::stdout().lock();
    print_plan(
        &mut out,
        &plan,
        &args.file.display().to_string(),
        args.dry_run,
    )?;
    out.flush()?;
    if args.exit_code && !plan.is_empty() {
        return Err(PendingChanges.into());
    }
    Ok(())
}

pub async fn export(settings: &Settings, args: ExportArgs) -> anyhow::Result<()> {
    let specs: Vec<AppSpec> = match &args.target.server {
        None => {
            connect_without_migrating(settings)
                .await?
                .export_specs()
                .await?
        }
        Some(_) => {
            let client = ApiClient::new(&args.target)?;
            let doc: Value = client
                .send(client.http.get(client.url("/api/v1/export")))
                .await?;
            serde_json::from_value(doc["apps"].clone())
                .context("the server's export is not a list of apps")?
        }
    };
    let text = apps_file::render(&specs)?;
    match &args.output {
        None => std::io::stdout().write_all(text.as_bytes())?,
        Some(path) => {
            std::fs::write(path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("exported {} app(s) to {}", specs.len(), path.display());
        }
    }
    Ok(())
}

/// The spec as the API takes it: the secrets the file referenced are sent (write-only).
fn spec_with_secrets(spec: &AppSpec) -> anyhow::Result<Value> {
    let mut v = serde_json::to_value(spec)?;
    if let Some(k) = &spec.secret_key {
        v["secret_key"] = k.expose_secret().into();
    }
    if let Some(s) = spec.jwt.as_ref().and_then(|j| j.hs_secret.as_ref()) {
        v["jwt"]["hs_secret"] = s.expose_secret().into();
    }
    Ok(v)
}

/// No answer came back (a timeout, a dropped connection) or the server failed (5xx): the
/// request may have been carried out.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct OutcomeUnknown(String);

/// `--server` is an http(s) URL; plain http only to this machine (loopback) unless
/// `--insecure-http`: the token and the SecretKeys travel in the requests.
fn check_server_url(base: &str, insecure_http: bool) -> anyhow::Result<()> {
    const USAGE: &str = "--server takes the admin listener's URL, e.g. https://admin.example:8081 \
                         or http://127.0.0.1:8081";
    let url = reqwest::Url::parse(base).map_err(|_| anyhow::anyhow!("{USAGE}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = url.host_str().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            anyhow::ensure!(
                loopback || insecure_http,
                "--server {base} is plain http to another machine: the admin token and the \
                 SecretKeys would cross the network in clear; use https://, or give \
                 --insecure-http if the network is trusted"
            );
            Ok(())
        }
        _ => anyhow::bail!("{USAGE}"),
    }
}

struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: secrecy::SecretString,
}

impl ApiClient {
    fn new(target: &Target) -> anyhow::Result<Self> {
        let server = target.server.as_deref().context("no --server")?;
        let token_file = target.token_file.as_deref();
        let insecure_http = target.insecure_http;
        let token_file = token_file.context("--server needs --token-file")?;
        apps_file::warn_if_shared(token_file);
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("cannot read the token file {}", token_file.display()))?;
        let token = token.trim();
        anyhow::ensure!(
            !token.is_empty(),
            "the token file {} is empty",
            token_file.display()
        );
        // The listener's URL; `…/api/v1` is accepted too.
        let base = server
            .trim_end_matches('/')
            .trim_end_matches("/api/v1")
            .to_owned();
        check_server_url(&base, insecure_http)?;
        Ok(Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(120))
                .user_agent(concat!("stsgate/", env!("CARGO_PKG_VERSION")))
                .build()?,
            base,
            token: secrecy::SecretString::from(token.to_owned()),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends with the token; a refusal becomes an error with the API's message and fields.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let res = req
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(|e| {
                // A connection never made sent nothing; any other failure may come after the
                // server got the request.
                let base = &self.base;
                if e.is_connect() {
                    anyhow::Error::new(e).context(format!("cannot reach {base}"))
                } else {
                    anyhow::Error::new(e).context(OutcomeUnknown(format!("no answer from {base}")))
                }
            })?;
        let status = res.status();
        let body = res
            .bytes()
            .await
            .context(OutcomeUnknown("reading the server's answer failed".into()))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .context("the server's answer is not the expected JSON");
        }
        let err: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let message = err["error"]["message"]
            .as_str()
            .unwrap_or("no error message");
        let code = err["error"]["code"].as_str().unwrap_or("?");
        let fields = err["error"]["fields"]
            .as_array()
            .map(|f| {
                f.iter()
                    .map(|p| {
                        format!(
                            "\n{}: {}",
                            p["field"].as_str().unwrap_or("?"),
                            p["message"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<String>()
            })
            .unwrap_or_default();
        if status.is_server_error() {
            return Err(OutcomeUnknown(format!(
                "the server failed: {} {code}: {message}",
                status.as_u16()
            ))
            .into());
        }
        if fields.is_empty() {
            anyhow::bail!("the server refused: {} {code}: {message}", status.as_u16())
        }
        anyhow::bail!(
            "the server refused: {} {code}; nothing was changed:{fields}",
            status.as_u16()
        )
    }
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(v) => v.to_string(),
    }
}

fn print_app(out: &mut impl std::io::Write, app: &AppPlan) -> std::io::Result<()> {
    let (marker, what) = match app.action {
        PlanAction::Create => ('+', "create"),
        PlanAction::Update => ('~', "update"),
        PlanAction::Disable => ('~', "disable"),
        PlanAction::Unchanged => ('=', "unchanged"),
    };
    writeln!(out, "{marker} app {} ({what})", app.slug)?;
    for c in &app.changes {
        let m = c.op.marker();
        if c.field == "template" {
            writeln!(out, "    {m} template:")?;
            let pretty = |v: &Option<Value>| {
                v.as_ref()
                    .and_then(|v| serde_json::to_string_pretty(v).ok())
                    .unwrap_or_default()
            };
            for line in admin::diff::diff_lines(&pretty(&c.before), &pretty(&c.after)) {
                writeln!(out, "        {} {}", line.tag, line.text)?;
            }
            continue;
        }
        match c.op {
            policy_store::ChangeOp::Add => writeln!(out, "    + {}: {}", c.field, show(&c.after))?,
            policy_store::ChangeOp::Remove => {
                writeln!(out, "    - {}: {}", c.field, show(&c.before))?
            }
            policy_store::ChangeOp::Change => writeln!(
                out,
                "    ~ {}: {} -> {}",
                c.field,
                show(&c.before),
                show(&c.after)
            )?,
        }
    }
    for n in &app.notes {
        writeln!(out, "    # {n}")?;
    }
    Ok(())
}

/// The plan, app by app and field by field, and a summary line.
pub fn print_plan(
    out: &mut impl std::io::Write,
    plan: &Plan,
    file: &str,
    dry_run: bool,
) -> std::io::Result<()> {
    for app in &plan.apps {
        print_app(out, app)?;
    }
    for slug in &plan.unmanaged {
        writeln!(
            out,
            "! app {slug}: in the database, not in the file: left alone (--prune disables it)"
        )?;
    }
    let count = |a: PlanAction| plan.apps.iter().filter(|p| p.action == a).count();
    if plan.is_empty() {
        return writeln!(
            out,
            "No changes: the database already matches {file} ({} app(s)).",
            plan.apps.len()
        );
    }
    let summary = format!(
        "{} to create, {} to update, {} to disable, {} unchanged",
        count(PlanAction::Create),
        count(PlanAction::Update),
        count(PlanAction::Disable),
        count(PlanAction::Unchanged)
    );
    if dry_run {
        writeln!(out, "Dry run: {summary}. Nothing was changed.")
    } else {
        writeln!(out, "Applied: {summary}.")
    }
}

#[cfg(test)]
mod tests {
    use super::check_server_url;

    #[test]
    fn plain_http_goes_only_to_this_machine_unless_allowed() {
        for ok in [
            "https://admin.example:8081",
            "http://127.0.0.1:8081",
            "http://127.9.9.9",
            "http://[::1]:8081",
            "http://localhost:8081",
            "http://LOCALHOST",
        ] {
            check_server_url(ok, false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for remote in [
            "http://admin.example:8081",
            "http://10.0.0.5:8081",
            "http://localhost.evil.example",
            "http://[::2]",
        ] {
            let err = check_server_url(remote, false).unwrap_err().to_string();
            assert!(err.contains("--insecure-http"), "{remote}: {err}");
            check_server_url(remote, true).unwrap();
        }
        for bad in ["ftp://127.0.0.1", "127.0.0.1:8081", "admin.example"] {
            let err = check_server_url(bad, true).unwrap_err().to_string();
            assert!(err.starts_with("--server takes"), "{bad}: {err}");
        }
    }
}
