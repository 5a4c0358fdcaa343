//! A private PostgreSQL for `stsgate dev`, run from the system's server binaries.
//!
//! initdb refuses to run as root, so as root the server runs as the `postgres` system user.
//! The server gets its own process group: Ctrl-C reaches stsgate only, which stops the
//! gateway first (flushing the issuance log) and the database last.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::private_fs;

pub struct PrivatePostgres {
    child: Child,
    stopped: bool,
    bin: PathBuf,
    data: PathBuf,
    owner: Option<(u32, u32)>,
    pub url: String,
}

/// The newest `/usr/lib/postgresql/<v>/bin`, or the directory of `initdb` on PATH.
fn server_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("STSGATE_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() && dir.join("postgres").exists() {
                return Ok(dir);
            }
        }
    }
    bail!(
        "PostgreSQL server binaries (initdb, postgres) not found: install PostgreSQL \
         (Debian: apt-get install postgresql), set STSGATE_PG_BIN, or set DATABASE_URL"
    )
}

fn running_as_root() -> bool {
    private_fs::my_uid() == 0
}

/// uid and gid of the `postgres` system user.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() > 3 && fields[0] == "postgres" {
            return Ok((fields[2].parse()?, fields[3].parse()?));
        }
    }
    bail!("running as root needs the `postgres` system user (it comes with the postgresql package)")
}

/// Can `uid` reach `dir`? Every ancestor must be searchable by it.
fn reachable_by(dir: &Path, uid: u32) -> bool {
    dir.ancestors().skip(1).all(|a| match std::fs::metadata(a) {
        Ok(m) => m.uid() == uid || m.permissions().mode() & 0o001 != 0,
        Err(_) => false,
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Makes `dir` (one level, never following a symlink) a directory owned by `owner` (or by
/// us) with `mode`. One that exists must already be `owner`'s or ours: a directory someone
/// else planted is refused, never adopted.
fn own_dir(dir: &Path, owner: Option<(u32, u32)>, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() || meta.file_type().is_symlink() {
                bail!(
                    "{} exists and is not a directory: move it away",
                    dir.display()
                );
            }
            let mine = private_fs::my_uid();
            if meta.uid() != mine && owner.is_none_or(|(uid, _)| meta.uid() != uid) {
                bail!(
                    "{} belongs to another user (uid {}): refusing to use it",
                    dir.display(),
                    meta.uid()
                );
            }
        }
        Err(_) => {
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Where dev keeps the path of the directory it made for `pg/` (see [`cluster_parent`]).
const LOCATION_FILE: &str = "pg.location";
/// Where that directory is made: sticky, so only we can rename or remove what we put there.
const FRESH_DIR_ROOT: &str = "/var/tmp";
const FRESH_DIR_MODE: u32 = 0o711;

/// The directory that holds `pg/` when running as root.
///
/// Beside dev's other files (`base`) when the postgres user can reach them. Otherwise (a
/// checkout under /root, say) in a directory dev makes itself: a random name under /var/tmp,
/// created with an exclusive mkdir (so nothing another user planted beforehand is ever used),
/// mode 0711, remembered in `base/pg.location` (0600, in the data dir only we can write), and
/// checked again on every start: ours, not a link, not writable by others, mode 0711.
fn cluster_parent(base: &Path, pg_uid: u32) -> anyhow::Result<PathBuf> {
    let remembered = base.join(LOCATION_FILE);
    if let Some(text) = private_fs::read_private(&remembered)? {
        let parent = PathBuf::from(text.trim_end_matches('\n'));
        if std::fs::symlink_metadata(&parent).is_ok() {
            private_fs::check_ancestors(&parent)
                .and_then(|()| {
                    private_fs::check_private_dir(
                        &parent,
                        private_fs::my_uid(),
                        Some(FRESH_DIR_MODE),
                    )
                })
                .with_context(|| {
                    format!(
                        "the PostgreSQL data dir named in {} is not the one stsgate dev made",
                        remembered.display()
                    )
                })?;
            return Ok(parent);
        }
        println!(
            "note: {} (named in {}) is gone; starting a new PostgreSQL cluster",
            parent.display(),
            remembered.display()
        );
    } else if reachable_by(&base.join("pg"), pg_uid) {
        return Ok(base.to_owned());
    }
    let parent =
        private_fs::create_fresh_dir(Path::new(FRESH_DIR_ROOT), "stsgate-dev-", FRESH_DIR_MODE)?;
    let mut line = parent.clone().into_os_string().into_encoded_bytes();
    line.push(b'\n');
    private_fs::write_private(&remembered, &line, None)?;
    println!(
        "note: PostgreSQL data lives in {} (the postgres user cannot reach {})",
        parent.join("pg").display(),
        base.display()
    );
    Ok(parent)
}

impl PrivatePostgres {
    /// Starts (initialising on first use) a server whose data lives in `base/pg` (as root,
    /// possibly elsewhere: see [`cluster_parent`]). `base` must be dev's checked data dir. A new
    /// cluster gets password authentication (`password`, scram-sha-256) on loopback TCP, so
    /// other local users cannot walk in as the superuser.
    pub async fn start(base: &Path, password: &str) -> anyhow::Result<Self> {
        let bin = server_bin_dir()?;
        let owner = running_as_root().then(postgres_user).transpose()?;
        let base = std::path::absolute(base)?;
        let parent = match owner {
            Some((uid, _)) => cluster_parent(&base, uid)?,
            None => base.clone(),
        };
        let data = parent.join("pg");
        own_dir(&data, owner, 0o700)?;
        let log = base.join("postgres.log");
        if !data.join("PG_VERSION").exists() {
            // initdb reads the superuser's password from a file only it can read (beside the
            // data dir: initdb wants that one empty), written without following any link.
            let pwfile = parent.join("pg.pw");
            private_fs::write_private(&pwfile, format!("{password}\n").as_bytes(), owner)?;
            let _cleanup = RemoveOnDrop(pwfile.clone());
            let mut cmd = Command::new(bin.join("initdb"));
            cmd.args(["-D"])
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-instructions",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if let Some((uid, gid)) = owner {
                cmd.uid(uid).gid(gid);
            }
            let out = cmd.output().context("running initdb")?;
            if !out.status.success() {
                bail!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let port = free_port()?;
        let log_file = private_fs::create_log(&log)?;
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0);
        if let Some((uid, gid)) = owner {
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().context("starting postgres")?;
        let admin_url = format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres");
        // Wait for the server (and create the `stsgate` database), watching that it has not
        // exited meanwhile; on any failure the server just started is stopped.
        let ready = policy_store::bootstrap::wait_and_create_database(
            &admin_url,
            "stsgate",
            Duration::from_secs(30),
        );
        tokio::pin!(ready);
        let outcome = loop {
            tokio::select! {
                r = &mut ready => break r.context("preparing dev's private PostgreSQL"),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if let Some(status) = child.try_wait()? {
                        let tail = std::fs::read_to_string(&log).unwrap_or_default();
                        let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                        bail!(
                            "PostgreSQL exited ({status}); is another `stsgate dev` using {}? Last log lines:\n{}",
                            data.display(),
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        );
                    }
                }
            }
        };
        if let Err(e) = outcome {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(Self {
            child,
            bin,
            data,
            owner,
            url: format!("postgres://postgres:{password}@127.0.0.1:{port}/stsgate"),
            stopped: false,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Fast shutdown (`pg_ctl stop -m fast`), then waits for the server to exit.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.args(["stop", "-m", "fast", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        if !cmd.status().is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Whatever ends `stsgate dev` (an error, a panic, Ctrl-C during start-up) stops the server
/// it started: it has its own process group, so the terminal's Ctrl-C never reaches it.
impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
