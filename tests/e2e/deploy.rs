//! The systemd unit in deploy/ as an operator installs it: `systemd-analyze verify` accepts it
//! (with ExecStart pointing at the binary just built, since /usr/local/bin/stsgate is not
//! installed here), its sandbox rates as exposed as little as `systemd-analyze security` can
//! tell offline, and the binary accepts the command line it runs.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_stsgate");
const UNIT: &str = include_str!("../../deploy/stsgate.service");
const INSTALLED_AT: &str = "/usr/local/bin/stsgate";

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        // Not from the unit's directory: verify would read files there as drop-ins.
        .current_dir("/")
        .output()
        .expect("systemd-analyze is missing: apt-get install systemd (scripts/test does)")
}

fn unit_for_this_build(dir: &Path) -> std::path::PathBuf {
    let exec = UNIT
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("the unit has an ExecStart");
    assert!(
        exec.starts_with(&format!("ExecStart={INSTALLED_AT} ")),
        "{exec}"
    );
    let path = dir.join("stsgate.service");
    std::fs::write(&path, UNIT.replace(INSTALLED_AT, BIN)).unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let dir = std::env::temp_dir().join(format!("stsgate-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = unit_for_this_build(&dir);
    let unit = unit.to_str().unwrap();

    let out = systemd_analyze(&["verify", unit]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 on warnings too: any line it prints about the unit is a defect.
    assert!(
        out.status.success() && !said.contains("stsgate.service"),
        "{said}"
    );

    let out = systemd_analyze(&["security", "--offline=true", "--no-pager", unit]);
    let said = String::from_utf8_lossy(&out.stdout);
    let level = said
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for stsgate.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{said}"));
    assert!(level <= 2.0, "exposure {level} (want OK, ≤ 2.0):\n{said}");

    for required in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "LoadCredential=master_key:",
        "Restart=on-failure",
    ] {
        assert!(UNIT.lines().any(|l| l.starts_with(required)), "{required}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The unit's command line parses, and the credential files it points the binary at are the
/// ones the binary reads (a missing one is reported by its setting name).
#[test]
fn the_units_command_line_is_one_the_binary_runs() {
    let dir = std::env::temp_dir().join(format!("stsgate-unit-cmd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("stsgate.toml");
    std::fs::write(&config, "public_listen = \"127.0.0.1:0\"\n").unwrap();
    let missing = dir.join("credentials/master_key");
    let out = Command::new(BIN)
        .args(["--config", config.to_str().unwrap(), "serve"])
        .env_clear()
        .env("STSGATE_MASTER_KEY_FILE", &missing)
        .env(
            "STSGATE_DATABASE_URL_FILE",
            dir.join("credentials/database_url"),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("database_url_file") || err.contains("master_key_file"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
