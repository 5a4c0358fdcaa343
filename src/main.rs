//! The `stsgate` command line: wiring only.

use std::net::TcpListener;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the local STS emulator (a stand-in for sts.tencentcloudapi.com).
    Emulator(EmulatorArgs),
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Emulator(args) => runtime.block_on(run_emulator(args)),
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
