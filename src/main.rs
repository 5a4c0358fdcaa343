//! The `stsgate` command line: wiring only.

/// mimalloc instead of glibc's malloc: with glibc, memory freed by requests stayed resident
/// between long-lived cache entries (the RSS per cached credential grew by about 40% once the
/// miss path sealed and shared credentials); scripts/bench measures it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod apply;
mod apps_file;
mod config;
mod dev;
mod logging;
mod openapi;
mod postgres;
mod private_fs;
mod serve;
mod token_tester;
mod tokens;

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sts_emulator::{Account, EmulatorConfig, Faults};

#[derive(Parser)]
#[command(
    name = "stsgate",
    version,
    about = "Tencent Cloud COS temporary-credential gateway"
)]
struct Cli {
    /// TOML settings file (default: ./stsgate.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the credential API and the admin pages (production).
    Serve,
    /// Run everything locally: private PostgreSQL, the STS emulator, a demo app and admin.
    Dev(dev::DevArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Apply the issuance-log retention now (`audit.retention_days`, `audit.archive_dir`);
    /// `serve` does it daily.
    Retention {
        /// List the partitions that would be archived and dropped, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Refresh the dashboard's hourly rollup now (`serve` does it every minute; the first
    /// run on a database backfills 8 days).
    Rollup,
    /// Converge the apps to a TOML file (policy as code); `--dry-run` prints the changes.
    Apply(apply::ApplyArgs),
    /// Write every app as an apps file (secrets left out), the form `apply` takes.
    Export(apply::ExportArgs),
    /// Manage admin users.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Run the local STS emulator (a stand-in for sts.tencentcloudapi.com).
    Emulator(EmulatorArgs),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an admin or auditor; the password is read from stdin.
    CreateUser {
        #[arg(long)]
        username: String,
        #[arg(long, value_parser = ["admin", "auditor"])]
        role: String,
    },
    /// Save a new version of an app's policy template from a JSON file (policy as code) and
    /// make it active. Validation errors name the offending field.
    SetTemplate {
        #[arg(long)]
        app: String,
        /// The template document, `{"prefix": …, "statements": [...]}`; `-` reads stdin.
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        note: Option<String>,
    },
    /// Create an admin-API token; it is printed once on stdout (only its hash is stored).
    CreateToken {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["admin", "auditor"])]
        role: String,
        /// Lifetime, e.g. 90d, 12h, 2w (default: never expires).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List admin-API tokens with their last use.
    ListTokens,
    /// Revoke an admin-API token (by name, or by id) at once.
    RevokeToken {
        /// The token's name or id.
        token: String,
    },
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The demo account used when no --account is given.
const DEV_ACCOUNT: &str = "AKIDSTSGATEDEVEXAMPLE:stsgate-dev-secret-key:1250000000";

#[derive(Args)]
struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: String,
    /// An account the emulator accepts, SECRETID:SECRETKEY:APPID (repeatable).
    #[arg(long = "account", value_name = "ID:KEY:APPID")]
    accounts: Vec<Account>,
    /// STS requests per second per SecretId before RequestLimitExceeded.
    #[arg(long, default_value_t = 600)]
    rate_limit: u32,
    /// Milliseconds added to every STS answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Probability (0..1) of answering with --error-code.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// The STS error code injected by --error-rate (default InternalError).
    #[arg(long)]
    error_code: Option<String>,
    /// Probability (0..1) of dropping the connection instead of answering.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Keep COS objects and in-progress multipart uploads in DIR across restarts (default:
    /// in memory). Issued credentials are never persisted.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The bucket for COS requests whose Host and path name none (SDKs that take only a fixed
    /// endpoint), e.g. examplebucket-1250000000.
    #[arg(long, value_name = "BUCKET")]
    cos_default_bucket: Option<String>,
}

/// The log filter when `RUST_LOG` is unset.
const DEFAULT_LOG: &str = "info,sqlx=warn";

fn main() {
    if let Err(e) = run() {
        if e.downcast_ref::<apply::PendingChanges>().is_some() {
            // `apply --dry-run --exit-code` found changes: the plan is printed already.
            std::process::exit(apply::PENDING_CHANGES_EXIT_CODE);
        }
        // One clear line (with its causes), no backtrace.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    sts_core::install_crypto_provider();
    // Declared before the runtime so it is dropped after it: lines logged while the runtime
    // shuts down are still written.
    let _log: logging::LogGuard;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Emulator(args) => {
            _log = logging::init(false, DEFAULT_LOG);
            runtime.block_on(run_emulator(args))
        }
        Command::Dev(args) => {
            // Keep the banner readable: the sandbox's own start-up chatter is noise here.
            _log = logging::init(false, "info,actix_server=warn,refinery_core=warn,sqlx=warn");
            runtime.block_on(dev::run(args))
        }
        command => {
            let settings = config::Settings::load(cli.config.as_deref())?;
            // apply/export print a plan or a file: migration chatter would only bury it.
            let filter = match command {
                Command::Apply(_) | Command::Export(_) => "warn",
                _ => DEFAULT_LOG,
            };
            _log = logging::init(settings.log_format == config::LogFormat::Json, filter);
            runtime.block_on(async {
                match command {
                    Command::Serve => serve::serve(settings).await,
                    Command::Migrate => serve::migrate(&settings).await,
                    Command::Retention { dry_run } => serve::retention(&settings, dry_run).await,
                    Command::Rollup => serve::rollup(&settings).await,
                    Command::Apply(args) => apply::apply(&settings, args).await,
                    Command::Export(args) => apply::export(&settings, args).await,
                    Command::Admin(AdminCommand::CreateUser { username, role }) => {
                        serve::create_user(&settings, &username, &role).await
                    }
                    Command::Admin(AdminCommand::SetTemplate { app, file, note }) => {
                        serve::set_template(&settings, &app, &file, note.as_deref()).await
                    }
                    Command::Admin(AdminCommand::CreateToken {
                        name,
                        role,
                        expires,
                    }) => tokens::create(&settings, &name, &role, expires.as_deref()).await,
                    Command::Admin(AdminCommand::ListTokens) => tokens::list(&settings).await,
                    Command::Admin(AdminCommand::RevokeToken { token }) => {
                        tokens::revoke(&settings, &token).await
                    }
                    Command::Emulator(_) | Command::Dev(_) => unreachable!("handled above"),
                }
            })
        }
    }
}

async fn run_emulator(args: EmulatorArgs) -> anyhow::Result<()> {
    let mut accounts = args.accounts;
    let default_account = accounts.is_empty();
    if default_account {
        accounts.push(DEV_ACCOUNT.parse().expect("the dev account parses"));
    }
    let config = EmulatorConfig {
        accounts,
        rate_limit: args.rate_limit,
        faults: Faults {
            latency_ms: args.latency_ms,
            error_rate: args.error_rate,
            error_code: args.error_code,
            drop_rate: args.drop_rate,
            ..Faults::default()
        },
        workers: args.workers,
        data_dir: args.data_dir,
        cos_default_bucket: args.cos_default_bucket,
        ..EmulatorConfig::default()
    };
    config
        .faults
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}: fix --error-rate/--drop-rate"))?;
    let listener = TcpListener::bind(&args.listen).with_context(|| {
        format!(
            "cannot listen on {}: pass a free address to --listen",
            args.listen
        )
    })?;
    listener.set_nonblocking(true)?;
    let handle = sts_emulator::start(config, listener)?;
    if default_account {
        eprintln!("no --account given; accepting the demo account {DEV_ACCOUNT}");
    }
    // Scripts wait for this exact line.
    println!("stsgate emulator listening on {}", handle.url());
    tokio::select! {
        res = tokio::signal::ctrl_c() => { res?; }
        res = terminate() => { res?; }
    }
    eprintln!("stopping the emulator");
    handle.stop().await;
    Ok(())
}

#[cfg(unix)]
async fn terminate() -> std::io::Result<()> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?
        .recv()
        .await;
    Ok(())
}

#[cfg(not(unix))]
async fn terminate() -> std::io::Result<()> {
    std::future::pending().await
}
