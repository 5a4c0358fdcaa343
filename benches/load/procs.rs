//! The processes under test (release `stsgate serve` and `stsgate emulator`), started and
//! stopped from outside, and what `/proc` says about them.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The release binary: `cargo bench` builds it with the bench profile (release settings).
pub const BIN: &str = env!("CARGO_BIN_EXE_stsgate");

/// A port that was free a moment ago (the gateway is told its listen address up front, since
/// at `RUST_LOG=warn` it prints nothing to find it by).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A child process whose output goes to a log file.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`, in `dir` (so no stray
    /// `./stsgate.toml` is read), without the caller's `RUST_LOG` and `STSGATE_*` settings.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path, log: PathBuf) -> Self {
        let out = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("a second handle on the log file");
        let explicit: Vec<_> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
        for (key, _) in std::env::vars_os() {
            let inherited_setting =
                key == "RUST_LOG" || key.to_string_lossy().starts_with("STSGATE_");
            if inherited_setting && !explicit.contains(&key) {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `url` answers 200; panics (with the log's tail) if the process exits or
    /// 60 s pass.
    pub async fn wait_ready(&mut self, http: &reqwest::Client, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {url} answered:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if let Ok(r) = http.get(url).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill();
        panic!(
            "{} did not answer {url} within 60 s:\n{}",
            self.name,
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM (the gateway then flushes its issuance log), SIGKILL after 30 s.
    pub fn stop(mut self) {
        signal(self.pid(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} ignored SIGTERM for 30 s: killing it", self.name);
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal with kill(1) (the workspace forbids `unsafe`, so no libc::kill).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

/// Resident set size (`VmRSS`) in KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Fields of `/proc/<pid>/stat` after the command name: (comm, utime + stime, cutime + cstime).
fn stat_of(path: &str) -> Option<(String, u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    // After ") ": state is field 3; utime, stime, cutime, cstime are fields 14..=17.
    let rest: Vec<&str> = text[close + 2..].split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3)?.parse::<u64>().ok();
    Some((comm, field(14)? + field(15)?, field(16)? + field(17)?))
}

/// CPU time in clock ticks (the unit of `/proc/stat`) of the processes a run involves, and of
/// the whole machine, so their shares can be shown.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    pub gateway: u64,
    pub emulator: u64,
    /// Every `postgres` process on the machine.
    pub postgres: u64,
    /// Reaped children of this harness: wrk (and kill(1)).
    pub children: u64,
    /// All CPUs, busy (not idle or iowait).
    pub machine_busy: u64,
    /// All CPUs, everything.
    pub machine_total: u64,
}

impl CpuSample {
    pub fn take(gateway: Option<u32>, emulator: u32) -> Self {
        let ticks = |pid: u32| stat_of(&format!("/proc/{pid}/stat")).map_or(0, |s| s.1);
        let mut sample = CpuSample {
            gateway: gateway.map_or(0, ticks),
            emulator: ticks(emulator),
            children: stat_of("/proc/self/stat").map_or(0, |s| s.2),
            ..CpuSample::default()
        };
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                else {
                    continue;
                };
                if let Some((comm, t, _)) = stat_of(&format!("/proc/{pid}/stat"))
                    && comm == "postgres"
                {
                    sample.postgres += t;
                }
            }
        }
        if let Some(line) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
        {
            // cpu user nice system idle iowait irq softirq steal (guest is inside user).
            let v: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() == 8 {
                sample.machine_total = v.iter().sum();
                sample.machine_busy = sample.machine_total - v[3] - v[4];
            }
        }
        sample
    }
}

/// CPU used between two samples, in percent of one core (200 = both cores of a 2-core box).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub gateway: f64,
    pub emulator: f64,
    pub postgres: f64,
    pub wrk: f64,
    /// Everything else that was busy: this harness, and whatever else runs on the machine.
    pub other: f64,
}

impl CpuSplit {
    pub fn between(a: &CpuSample, b: &CpuSample, cores: usize) -> Self {
        let total = b.machine_total.saturating_sub(a.machine_total).max(1) as f64;
        let pct = |x: u64, y: u64| y.saturating_sub(x) as f64 / total * cores as f64 * 100.0;
        let gateway = pct(a.gateway, b.gateway);
        let emulator = pct(a.emulator, b.emulator);
        let postgres = pct(a.postgres, b.postgres);
        let wrk = pct(a.children, b.children);
        let busy = pct(a.machine_busy, b.machine_busy);
        Self {
            gateway,
            emulator,
            postgres,
            wrk,
            other: (busy - gateway - emulator - postgres - wrk).max(0.0),
        }
    }
}

/// The 1-minute load average, to flag a machine busy with something else.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
