//! Settings: defaults < TOML file < `STSGATE_*` environment variables (DESIGN §2).
//!
//! Nested keys use `__` in the environment (`STSGATE_STS__TIMEOUT_MS=3000`). Secrets can also
//! come from files: `STSGATE_MASTER_KEY_FILE`, `STSGATE_DATABASE_URL_FILE` (or `master_key_file`
//! / `database_url_file` in the TOML file). `DATABASE_URL` is accepted as well.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StsSettings {
    /// The default STS endpoint; an app can override it.
    pub endpoint: String,
    /// The `X-TC-Region` sent when an app does not say otherwise.
    pub region: String,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    pub max_batch: usize,
    pub writers: usize,
    /// Monthly issuance-log partitions whose month ended more than this many days ago are
    /// dropped by a daily job; 0 keeps everything.
    pub retention_days: u32,
    /// When set, each partition is first archived there as gzip NDJSON with a manifest.
    pub archive_dir: Option<PathBuf>,
    /// Refusal rows a second from one source address written one by one; beyond that they
    /// are folded into one summary row per (address, app, outcome, minute). 0: never fold by
    /// rate.
    pub refusal_per_ip_per_second: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    pub app_ttl_secs: u64,
    pub credential_entries: u64,
    pub jwks_ttl_secs: u64,
    pub jwks_refresh_cooldown_secs: u64,
}

/// The admin pages (DESIGN §7).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// How long an admin session lasts after sign-in.
    pub session_ttl_secs: u64,
    /// Failed sign-ins in a row that lock an account ...
    pub max_failed_logins: i32,
    /// ... for this long.
    pub lockout_secs: u64,
    /// Mark the session cookie `Secure` (and `__Host-`). Browsers accept these over plain
    /// http on 127.0.0.1 and localhost; `stsgate dev` turns it off. Turn it off only when the
    /// admin listener is reached over plain http on a trusted network.
    pub secure_cookies: bool,
    /// Sign-in attempts a minute from one source address (IPv6: one /64); more get 429
    /// before any password is checked.
    pub sign_in_per_source_per_minute: u32,
    /// Sign-in attempts a minute from all sources together; caps the argon2 work a flood
    /// can cause.
    pub sign_in_per_minute: u32,
    /// The admin listener is behind a reverse proxy: take a sign-in's source address from
    /// the last entry of the last `X-Forwarded-For` line.
    pub trust_forwarded_for: bool,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            session_ttl_secs: 8 * 3600,
            max_failed_logins: 5,
            lockout_secs: 15 * 60,
            secure_cookies: true,
            sign_in_per_source_per_minute: 10,
            sign_in_per_minute: 120,
            trust_forwarded_for: false,
        }
    }
}

/// Cluster mode (DESIGN §8, README "Several replicas").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// How often each replica beats its membership row; three missed beats and it is out.
    pub heartbeat_ms: u64,
    /// On a local cache miss, look in the credentials the replicas share before calling STS.
    pub shared_credentials: bool,
    /// How long one replica's claim on a mint holds, and so how long the others wait for its
    /// credential before they mint themselves (or less: their database deadline ends the wait).
    pub claim_timeout_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 1000,
            shared_credentials: true,
            claim_timeout_ms: 5000,
        }
    }
}

/// Everything `serve` needs. Secrets are `SecretString` and never printed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(skip_serializing)]
    pub database_url: Option<SecretString>,
    pub database_url_file: Option<PathBuf>,
    pub database_max_connections: u32,
    /// Each credential request's one database deadline: waiting for connections and every
    /// query on its path (the app load; on a miss the cluster's STS budget and the shared
    /// credential's look-up, claim, wait and write; the issuance-log commit) draw from it, so
    /// the database holds a request up this long at most; past it the answer is 503. Also
    /// `/readyz`'s bound.
    pub database_timeout_ms: u64,
    /// Server-side backstop on every pool connection: PostgreSQL's `statement_timeout` and
    /// `idle_in_transaction_session_timeout`. Admin queries share the pool, so keep it above
    /// the slowest log search.
    pub database_statement_timeout_ms: u64,
    /// How long start-up waits for the migration lock another replica holds.
    pub migration_lock_timeout_secs: u64,
    /// base64 of 32 bytes, optionally `KEYID:` first.
    #[serde(skip_serializing)]
    pub master_key: Option<SecretString>,
    pub master_key_file: Option<PathBuf>,
    /// Older master keys still accepted for decryption while secrets are re-encrypted.
    /// A list, or one comma-separated string (as an environment variable naturally is).
    #[serde(skip_serializing, default, deserialize_with = "string_or_list")]
    pub previous_master_keys: Vec<SecretString>,
    pub public_listen: String,
    pub admin_listen: String,
    pub workers: usize,
    pub log_format: LogFormat,
    pub trust_forwarded_for: bool,
    /// Accept JWKS URLs on loopback hosts (`stsgate dev` turns it on). Private, link-local and
    /// metadata addresses are always refused.
    pub allow_loopback_jwks: bool,
    pub shutdown_timeout_secs: u64,
    /// At SIGTERM, how long `/readyz` answers 503 while the listeners keep serving (with
    /// `Connection: close`) before they close: long enough for the load balancer's health
    /// check to take the replica out of rotation. 0: no drain.
    pub shutdown_drain_secs: u64,
    /// Authentication failures a minute from one source address before it cools down (429
    /// before verification, except for subjects that succeeded from it lately); 0: never.
    pub auth_failures_per_minute: u32,
    /// How long such a cool-down lasts.
    pub auth_cooldown_secs: u64,
    pub sts: StsSettings,
    pub audit: AuditSettings,
    pub cache: CacheSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub cluster: ClusterSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: None,
            database_url_file: None,
            database_max_connections: 16,
            database_timeout_ms: 3000,
            database_statement_timeout_ms: 30_000,
            migration_lock_timeout_secs: 60,
            master_key: None,
            master_key_file: None,
            previous_master_keys: Vec::new(),
            public_listen: "0.0.0.0:8080".into(),
            admin_listen: "127.0.0.1:8081".into(),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            log_format: LogFormat::Json,
            trust_forwarded_for: false,
            allow_loopback_jwks: false,
            shutdown_timeout_secs: 30,
            shutdown_drain_secs: 5,
            auth_failures_per_minute: 60,
            auth_cooldown_secs: 60,
            sts: StsSettings {
                endpoint: sts_core::client::DEFAULT_ENDPOINT.into(),
                region: "ap-guangzhou".into(),
                connect_timeout_ms: 2000,
                timeout_ms: 5000,
                max_attempts: 3,
            },
            audit: AuditSettings {
                max_batch: 512,
                writers: 2,
                retention_days: 400,
                archive_dir: None,
                refusal_per_ip_per_second: 20,
            },
            cache: CacheSettings {
                app_ttl_secs: 30,
                credential_entries: 100_000,
                jwks_ttl_secs: 600,
                jwks_refresh_cooldown_secs: 30,
            },
            admin: AdminSettings::default(),
            cluster: ClusterSettings::default(),
        }
    }
}

/// Top-level keys, for spotting misspelt `STSGATE_*` variables.
const KNOWN_KEYS: [&str; 24] = [
    "DATABASE_URL",
    "DATABASE_URL_FILE",
    "DATABASE_MAX_CONNECTIONS",
    "DATABASE_TIMEOUT_MS",
    "DATABASE_STATEMENT_TIMEOUT_MS",
    "MIGRATION_LOCK_TIMEOUT_SECS",
    "MASTER_KEY",
    "MASTER_KEY_FILE",
    "PREVIOUS_MASTER_KEYS",
    "PUBLIC_LISTEN",
    "ADMIN_LISTEN",
    "WORKERS",
    "LOG_FORMAT",
    "TRUST_FORWARDED_FOR",
    "ALLOW_LOOPBACK_JWKS",
    "SHUTDOWN_TIMEOUT_SECS",
    "SHUTDOWN_DRAIN_SECS",
    "AUTH_FAILURES_PER_MINUTE",
    "AUTH_COOLDOWN_SECS",
    "STS",
    "AUDIT",
    "CACHE",
    "ADMIN",
    "CLUSTER",
];

impl Settings {
    /// Loads the layers. `file` is `--config`; without it `./stsgate.toml` is read if present.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    bail!(
                        "config file {} does not exist: fix --config",
                        path.display()
                    );
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("stsgate.toml")),
        }
        for (key, _) in std::env::vars() {
            if let Some(rest) = key.strip_prefix("STSGATE_") {
                let top = rest.split("__").next().unwrap_or_default();
                if !KNOWN_KEYS.contains(&top) {
                    eprintln!("warning: ignoring unknown setting {key}");
                }
            }
        }
        figment = figment.merge(Env::raw().only(&["DATABASE_URL"])).merge(
            Env::prefixed("STSGATE_").split("__").filter(|k| {
                KNOWN_KEYS.iter().any(|known| {
                    k.as_str()
                        .split('.')
                        .next()
                        .is_some_and(|t| t.eq_ignore_ascii_case(known))
                })
            }),
        );
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {}", describe(e)))?;
        if let Some(path) = settings.database_url_file.clone() {
            settings.database_url = Some(read_secret_file(&path, "database_url_file")?);
        }
        if let Some(path) = settings.master_key_file.clone() {
            settings.master_key = Some(read_secret_file(&path, "master_key_file")?);
        }
        Ok(settings)
    }

    /// The checks `serve` needs, each failing with one line that says what to fix.
    pub fn database_url(&self) -> anyhow::Result<&str> {
        self.database_url
            .as_ref()
            .map(|s| s.expose_secret())
            .filter(|s| !s.is_empty())
            .context("no database: set DATABASE_URL (or STSGATE_DATABASE_URL / STSGATE_DATABASE_URL_FILE)")
    }

    pub fn cipher(&self) -> anyhow::Result<policy_store::Cipher> {
        let raw = self.master_key.as_ref().context(
            "no master key: set STSGATE_MASTER_KEY or STSGATE_MASTER_KEY_FILE to base64 of 32 random bytes \
             (e.g. `openssl rand -base64 32`)",
        )?;
        let current: policy_store::MasterKey = raw
            .expose_secret()
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("STSGATE_MASTER_KEY is not usable: {e}"))?;
        let previous = self
            .previous_master_keys
            .iter()
            .map(|k| k.expose_secret().trim().parse())
            .collect::<Result<Vec<policy_store::MasterKey>, _>>()
            .map_err(|e| anyhow::anyhow!("a previous_master_keys entry is not usable: {e}"))?;
        Ok(policy_store::Cipher::new(current, previous))
    }

    /// How JWT settings are checked: the store (when saving) and the gateway (when loading)
    /// use the same options.
    pub fn jwt_compile_options(&self) -> policy_store::jwt::CompileOptions {
        policy_store::jwt::CompileOptions {
            allow_loopback_jwks: self.allow_loopback_jwks,
        }
    }

    /// The issuance-log retention the daily job applies; `None` when `retention_days` is 0.
    pub fn retention_policy(&self) -> Option<policy_store::RetentionPolicy> {
        (self.audit.retention_days > 0).then(|| policy_store::RetentionPolicy {
            retention_days: self.audit.retention_days,
            archive_dir: self.audit.archive_dir.clone(),
        })
    }

    /// The graceful stop after the drain (`shutdown_timeout_secs`): in-flight requests and the
    /// issuance-log flush together.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// The readiness drain at SIGTERM (`shutdown_drain_secs`).
    pub fn shutdown_drain(&self) -> Duration {
        Duration::from_secs(self.shutdown_drain_secs)
    }

    /// The requests' database budget (at least 1 ms).
    pub fn database_timeout(&self) -> Duration {
        Duration::from_millis(self.database_timeout_ms.max(1))
    }

    pub fn pool_options(&self) -> policy_store::PoolOptions {
        let backstop = Some(Duration::from_millis(
            self.database_statement_timeout_ms.max(1),
        ));
        policy_store::PoolOptions {
            max_connections: self.database_max_connections,
            statement_timeout: backstop,
            idle_in_transaction_timeout: backstop,
            ..policy_store::PoolOptions::default()
        }
    }

    /// The issuance-log writers' own pool: one connection per writer, one for the refusal
    /// lane, one for amendments; opened only by the writers' tasks, never by an HTTP worker.
    pub fn audit_pool_options(&self) -> policy_store::PoolOptions {
        policy_store::PoolOptions {
            max_connections: u32::try_from(self.audit.writers.max(1))
                .unwrap_or(u32::MAX)
                .saturating_add(2),
            ..self.pool_options()
        }
    }

    pub fn migrate_options(&self) -> policy_store::migrate::MigrateOptions {
        policy_store::migrate::MigrateOptions {
            lock_timeout: Duration::from_secs(self.migration_lock_timeout_secs.max(1)),
            ..policy_store::migrate::MigrateOptions::default()
        }
    }

    pub fn sts_client_config(&self) -> sts_core::StsClientConfig {
        sts_core::StsClientConfig {
            endpoint: self.sts.endpoint.clone(),
            region: self.sts.region.clone(),
            connect_timeout: Duration::from_millis(self.sts.connect_timeout_ms),
            timeout: Duration::from_millis(self.sts.timeout_ms),
            retry: sts_core::RetryPolicy {
                max_attempts: self.sts.max_attempts.max(1),
                ..sts_core::RetryPolicy::default()
            },
        }
    }

    pub fn gateway_config(&self) -> gateway::GatewayConfig {
        gateway::GatewayConfig {
            workers: self.workers.max(1),
            trust_forwarded_for: self.trust_forwarded_for,
            app_cache_ttl: Duration::from_secs(self.cache.app_ttl_secs.max(1)),
            credential_cache_entries: self.cache.credential_entries,
            jwks: gateway::jwt::JwksConfig {
                ttl: Duration::from_secs(self.cache.jwks_ttl_secs),
                refresh_cooldown: Duration::from_secs(self.cache.jwks_refresh_cooldown_secs),
                allow_loopback: self.allow_loopback_jwks,
                ..gateway::jwt::JwksConfig::default()
            },
            audit: gateway::audit::AuditConfig {
                max_batch: self.audit.max_batch.max(1),
                writers: self.audit.writers.max(1),
                commit_timeout: self.database_timeout(),
                refusals: gateway::audit::RefusalConfig {
                    per_ip_per_second: self.audit.refusal_per_ip_per_second,
                    ..gateway::audit::RefusalConfig::default()
                },
                ..gateway::audit::AuditConfig::default()
            },
            shutdown_timeout: self.shutdown_timeout_secs,
            database_timeout: self.database_timeout(),
            cluster: gateway::cluster::ClusterConfig {
                heartbeat: Duration::from_millis(self.cluster.heartbeat_ms.max(100)),
                shared_credentials: self.cluster.shared_credentials,
                claim_timeout: Duration::from_millis(self.cluster.claim_timeout_ms.max(100)),
            },
            cooldown: gateway::cooldown::CooldownConfig {
                failures_per_minute: self.auth_failures_per_minute,
                cooldown: Duration::from_secs(self.auth_cooldown_secs.max(1)),
            },
        }
    }
}

impl Settings {
    pub fn admin_config(&self) -> admin::AdminConfig {
        admin::AdminConfig {
            secure_cookies: self.admin.secure_cookies,
            session_ttl: Duration::from_secs(self.admin.session_ttl_secs.max(60)),
            max_failed_logins: self.admin.max_failed_logins.max(1),
            lockout: Duration::from_secs(self.admin.lockout_secs.max(1)),
            sign_in_per_source_per_minute: self.admin.sign_in_per_source_per_minute.max(1),
            sign_in_per_minute: self.admin.sign_in_per_minute.max(1),
            trust_forwarded_for: self.admin.trust_forwarded_for,
            ..admin::AdminConfig::default()
        }
    }
}

/// Settings whose values must never be echoed in an error.
const SECRET_KEYS: [&str; 3] = ["database_url", "master_key", "previous_master_keys"];

/// figment's errors quote the offending value; for secrets, say which setting and not what.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".").to_lowercase();
            if SECRET_KEYS.iter().any(|s| key.starts_with(s)) {
                format!("{key} has an invalid value (not shown: it may be a secret)")
            } else {
                e.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(v) => v,
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .map(SecretString::from)
        .collect())
}

fn read_secret_file(path: &Path, setting: &str) -> anyhow::Result<SecretString> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {setting} {}: fix the path or its permissions",
            path.display()
        )
    })?;
    Ok(SecretString::from(text.trim().to_owned()))
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn layers_defaults_file_then_env() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "stsgate.toml",
                r#"
                public_listen = "127.0.0.1:9000"
                workers = 3
                [sts]
                timeout_ms = 1234
                "#,
            )?;
            jail.set_env("STSGATE_WORKERS", "5");
            jail.set_env("STSGATE_STS__MAX_ATTEMPTS", "7");
            jail.set_env("DATABASE_URL", "postgres://u:p@db/x");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.public_listen, "127.0.0.1:9000"); // file
            assert_eq!(s.workers, 5); // env beats file
            assert_eq!(s.sts.timeout_ms, 1234); // file, nested
            assert_eq!(s.sts.max_attempts, 7); // env, nested
            assert_eq!(s.sts.connect_timeout_ms, 2000); // default
            assert_eq!(s.gateway_config().database_timeout, Duration::from_secs(3)); // default
            assert!(s.admin_config().secure_cookies); // default: Secure cookies
            assert_eq!(s.shutdown_drain(), Duration::from_secs(5)); // default
            assert_eq!(s.database_url().unwrap(), "postgres://u:p@db/x");
            Ok(())
        });
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("mk", "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")?;
            jail.set_env("STSGATE_MASTER_KEY_FILE", "mk");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(s.cipher().is_ok());
            let debug = format!("{s:?}");
            assert!(!debug.contains("AAAAAAAA"), "{debug}");
            Ok(())
        });
    }

    #[test]
    fn previous_keys_come_as_a_string_and_never_show_in_errors() {
        let key = "k0:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env(
                "STSGATE_MASTER_KEY",
                "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            );
            jail.set_env("STSGATE_PREVIOUS_MASTER_KEYS", key);
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.previous_master_keys.len(), 1);
            assert!(s.cipher().is_ok());
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "stsgate.toml",
                &format!("master_key = 12\nprevious_master_keys = {{ a = \"{key}\" }}\n"),
            )?;
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(
                err.contains("previous_master_keys") || err.contains("master_key"),
                "{err}"
            );
            assert!(!err.contains("AAAAAAAA"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_settings_fail_with_one_clear_line() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("STSGATE_WORKERS", "many");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("workers"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.clear_env();
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(
                s.database_url()
                    .unwrap_err()
                    .to_string()
                    .contains("DATABASE_URL")
            );
            assert!(
                s.cipher()
                    .unwrap_err()
                    .to_string()
                    .contains("STSGATE_MASTER_KEY")
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("STSGATE_MASTER_KEY", "too-short");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert!(
                s.cipher()
                    .unwrap_err()
                    .to_string()
                    .contains("STSGATE_MASTER_KEY")
            );
            Ok(())
        });
    }
}
