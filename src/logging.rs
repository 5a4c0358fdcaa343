//! Logging to stderr (text or JSON), through a non-blocking writer.
//!
//! Request handlers format their line (the access log is one per request) and hand it to a
//! channel; a thread of its own writes the lines to stderr in batches. A slow or stalled
//! reader of stderr (a terminal, a pipe into a log shipper) therefore no longer holds an
//! actix worker on every line. Nothing is dropped: once [`BUFFERED_LINES`] lines are waiting,
//! handlers wait for room, as they used to wait for every write.

use std::io::{BufWriter, Stderr};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};

/// Lines the channel holds before writers wait (about 30 MB of access-log lines).
const BUFFERED_LINES: usize = 128 * 1024;

/// Flushes and stops the writer thread when dropped: keep it until the process is done.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: WorkerGuard,
}

/// Sets the global subscriber with `RUST_LOG`, or `default_filter` when unset.
pub fn init(json: bool, default_filter: &str) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    // The writer thread drains the channel into this buffer and flushes once it is empty:
    // one write(2) per batch of lines rather than one per line.
    let stderr: BufWriter<Stderr> = BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("stsgate-log")
        .finish(stderr);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    LogGuard { _writer: guard }
}
