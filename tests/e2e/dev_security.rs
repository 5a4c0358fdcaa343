//! `stsgate dev` run as root must not hand its secrets to another local user: a directory or a
//! symlink planted beforehand (here by `nobody`) is never written through, never adopted, and
//! a refusal leaves no process behind.
//!
//! These tests need root (to act as `nobody` and to make a data dir the `postgres` user cannot
//! reach, which sends the cluster to `/var/tmp`); as another user they say so and pass.

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sha2::Digest;

const BIN: &str = env!("CARGO_BIN_EXE_stsgate");

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED: this test plants files as another user and needs root");
            return;
        }
    };
}

fn user(name: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let f: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == name)
        .unwrap_or_else(|| panic!("no `{name}` user"));
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Removes the directories a test made, however it ends.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// The places one test works in: a root-only parent (so `postgres` cannot reach the data dir
/// inside it) and a directory of `nobody`'s with an empty file an attacker hopes to fill.
struct Scene {
    data: PathBuf,
    loot: PathBuf,
    cleanup: Cleanup,
}

impl Scene {
    fn new() -> Self {
        let id = unique();
        let private = std::env::temp_dir().join(format!("stsgate-devsec-{id}"));
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let attacker = std::env::temp_dir().join(format!("stsgate-devsec-nobody-{id}"));
        std::fs::create_dir(&attacker).unwrap();
        let loot = attacker.join("loot");
        std::fs::write(&loot, "").unwrap();
        as_nobody(&attacker, 0o755);
        as_nobody(&loot, 0o644);
        let data = private.join("data");
        // Where the cluster went before this was fixed, in case this runs on such a build.
        let old = predictable_parent(&data);
        Self {
            data,
            loot,
            cleanup: Cleanup(vec![private, attacker, old]),
        }
    }

    /// A symlink at `at`, owned by `nobody`, pointing at the loot file.
    fn plant_link(&self, at: &Path) {
        symlink(&self.loot, at).unwrap();
        let (uid, gid) = user("nobody");
        std::os::unix::fs::lchown(at, Some(uid), Some(gid)).unwrap();
    }

    fn assert_loot_untouched(&self) {
        let meta = std::fs::metadata(&self.loot).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&std::fs::read(&self.loot).unwrap()),
            "",
            "something was written through the planted link"
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o644, "loot chmod-ed");
        assert_eq!(meta.uid(), user("nobody").0);
    }
}

/// Gives `path` to `nobody` with `mode`, as if they had made it.
fn as_nobody(path: &Path, mode: u32) {
    let (uid, gid) = user("nobody");
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory of `nobody`'s at `dir`, writable by everyone, as an attacker would leave it.
fn plant_dir(dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    as_nobody(dir, 0o777);
}

/// Where the data went before this was fixed: predictable from the data dir's path.
fn predictable_parent(data: &Path) -> PathBuf {
    let abs = std::path::absolute(data).unwrap();
    let tag = &hex::encode(sha2::Sha256::digest(abs.as_os_str().as_encoded_bytes()))[..12];
    PathBuf::from(format!("/var/tmp/stsgate-dev-{tag}"))
}

/// Processes whose command line mentions `needle` (e.g. `postgres -D <dir>`).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{pid}: {cmd}"));
            }
        }
    }
    found
}

enum Run {
    /// dev came up (dev.json written) and was then stopped with SIGINT.
    Served(Output),
    /// dev exited by itself before coming up.
    Refused(Output),
}

/// Runs `stsgate dev --data-dir <data>` with no DATABASE_URL: waits until it is up (then
/// stops it with SIGINT, as Ctrl-C would) or until it exits by itself.
async fn run_dev(data: &Path) -> Run {
    let _ = std::fs::remove_file(data.join("dev.json"));
    let mut child = Command::new(BIN)
        .args(["dev", "--data-dir"])
        .arg(data)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--emulator-listen",
            "127.0.0.1:0",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut waited = 0;
    let up = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        if data.join("dev.json").exists() {
            break true;
        }
        if waited >= 900 {
            let _ = child.kill();
            panic!("dev neither came up nor exited within 90 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    };
    if up {
        Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap();
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    if up {
        Run::Served(out)
    } else {
        Run::Refused(out)
    }
}

/// The PostgreSQL data dir the banner names.
fn banner_data_dir(out: &Output) -> PathBuf {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("private PostgreSQL, data in "))
        .unwrap_or_else(|| panic!("no data dir in the banner:\n{stdout}"));
    PathBuf::from(line.split("data in ").nth(1).unwrap().trim())
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Everything that ran on `pg_data` has stopped: no process names it, no postmaster.pid.
fn assert_nothing_left(pg_data: &Path) {
    let left = processes_mentioning(pg_data.to_str().unwrap());
    assert!(left.is_empty(), "still running: {left:?}");
    assert!(
        !pg_data.join("postmaster.pid").exists(),
        "PostgreSQL stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_planted_at_the_old_predictable_name_is_never_used() {
    require_root!();
    let mut scene = Scene::new();
    let planted = predictable_parent(&scene.data);
    let _ = std::fs::remove_dir_all(&planted);
    plant_dir(&planted);
    scene.plant_link(&planted.join("pg.pw"));
    scene.plant_link(&planted.join("pg.pw.tmp"));

    let run = run_dev(&scene.data).await;
    scene.assert_loot_untouched();
    let mut inside: Vec<String> = std::fs::read_dir(&planted)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    inside.sort();
    assert_eq!(
        inside,
        ["pg.pw", "pg.pw.tmp"],
        "dev wrote into the planted directory"
    );
    assert_eq!(
        std::fs::symlink_metadata(&planted).unwrap().uid(),
        user("nobody").0
    );
    match run {
        Run::Refused(out) => {
            // A refusal is fine if it says why; it must not have started anything.
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(planted.to_str().unwrap()), "{}", text(&out));
            assert_nothing_left(&planted.join("pg"));
        }
        Run::Served(out) => {
            assert!(out.status.success(), "{}", text(&out));
            let pg = banner_data_dir(&out);
            scene.cleanup.0.push(pg.parent().unwrap().to_owned());
            assert!(!pg.starts_with(&planted), "{}", pg.display());
            // Its own directory: root's, not writable by anyone else, not a symlink.
            let parent = std::fs::symlink_metadata(pg.parent().unwrap()).unwrap();
            assert!(parent.is_dir() && parent.uid() == 0);
            assert_eq!(parent.mode() & 0o022, 0);
            assert_nothing_left(&pg);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_directory_replaced_by_another_user_is_refused() {
    require_root!();
    let mut scene = Scene::new();
    // A first run puts the cluster somewhere the postgres user can reach, and stops.
    let first = match run_dev(&scene.data).await {
        Run::Served(out) => out,
        Run::Refused(out) => panic!("first run failed: {}", text(&out)),
    };
    assert!(first.status.success(), "{}", text(&first));
    let pg = banner_data_dir(&first);
    let parent = pg.parent().unwrap().to_owned();
    scene.cleanup.0.push(parent.clone());
    assert!(parent.starts_with("/var/tmp"), "{}", parent.display());
    assert_nothing_left(&pg);

    // Then a tmp cleaner removes it, and another user takes the name with a link inside.
    std::fs::remove_dir_all(&parent).unwrap();
    plant_dir(&parent);
    scene.plant_link(&parent.join("pg.pw"));

    let out = match run_dev(&scene.data).await {
        Run::Refused(out) => out,
        Run::Served(out) => panic!("dev used a directory it does not own: {}", text(&out)),
    };
    scene.assert_loot_untouched();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(parent.to_str().unwrap()) && stderr.contains("another user"),
        "a clear refusal naming the directory: {}",
        text(&out)
    );
    assert!(!parent.join("pg").exists(), "nothing created in it");
    assert_nothing_left(&pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_other_users_can_write_is_refused() {
    require_root!();
    let scene = Scene::new();
    // A shared, sticky directory like /tmp, where `nobody` has left links at the names dev's
    // writes go through.
    std::fs::create_dir(&scene.data).unwrap();
    std::fs::set_permissions(&scene.data, std::fs::Permissions::from_mode(0o1777)).unwrap();
    for name in ["secrets.tmp", "master.tmp", "dev.tmp", "postgres.log"] {
        scene.plant_link(&scene.data.join(name));
    }

    let out = match run_dev(&scene.data).await {
        Run::Refused(out) => out,
        Run::Served(out) => panic!("dev used a world-writable data dir: {}", text(&out)),
    };
    scene.assert_loot_untouched();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(scene.data.to_str().unwrap()) && stderr.contains("writable"),
        "{}",
        text(&out)
    );
    for name in ["secrets.json", "master.key", "dev.json", "pg"] {
        assert!(
            std::fs::symlink_metadata(scene.data.join(name)).is_err(),
            "{name} written"
        );
    }
    assert_nothing_left(&scene.data.join("pg"));
}
