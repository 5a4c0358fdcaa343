//! Preparing a PostgreSQL server for stsgate before migrations run: wait until it accepts
//! connections, then create the database if it is missing (`stsgate dev`'s private server).

use std::str::FromStr as _;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

use crate::error::DatabaseError;

/// Pause between connection attempts.
const RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("the PostgreSQL URL is not valid: {0}")]
    InvalidUrl(DatabaseError),
    #[error("{0:?} is not a database name stsgate creates: use 1 to 63 of a-z, 0-9 and _")]
    InvalidName(String),
    /// Still unreachable (or still starting up) when the deadline passed.
    #[error("PostgreSQL did not accept connections within {} s: {last}", .waited.as_secs())]
    Unreachable {
        waited: Duration,
        last: DatabaseError,
    },
    /// The server answered but refused (wrong password, no such user, …): waiting longer
    /// would not help.
    #[error("PostgreSQL refused the connection: {0}")]
    Refused(DatabaseError),
    #[error("cannot create database {name}: {error}")]
    Create { name: String, error: DatabaseError },
}

/// Connects to `admin_url` (a maintenance database such as `postgres`), retrying while the
/// server is unreachable or starting up until `deadline` has passed, then creates the
/// database `name` unless it exists.
pub async fn wait_and_create_database(
    admin_url: &str,
    name: &str,
    deadline: Duration,
) -> Result<(), BootstrapError> {
    if !valid_database_name(name) {
        return Err(BootstrapError::InvalidName(name.to_owned()));
    }
    let options = PgConnectOptions::from_str(admin_url)
        .map_err(|e| BootstrapError::InvalidUrl(DatabaseError::from_sqlx(&e)))?;
    let started = Instant::now();
    let mut conn = loop {
        match PgConnection::connect_with(&options).await {
            Ok(conn) => break conn,
            Err(e) => {
                let e = DatabaseError::from_sqlx(&e);
                if !e.is_unavailable() {
                    return Err(BootstrapError::Refused(e));
                }
                if started.elapsed() >= deadline {
                    return Err(BootstrapError::Unreachable {
                        waited: started.elapsed(),
                        last: e,
                    });
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let created = create_database(&mut conn, name).await;
    let _ = conn.close().await;
    created.map_err(|e| BootstrapError::Create {
        name: name.to_owned(),
        error: DatabaseError::from_sqlx(&e),
    })
}

/// `CREATE DATABASE "name"` unless it exists. `name` must pass [`valid_database_name`]:
/// identifiers cannot be bound.
pub(crate) async fn create_database(conn: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    debug_assert!(valid_database_name(name));
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
    if exists.is_none() {
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// 1 to 63 of `a-z 0-9 _`: safe to quote into SQL, and the same name unquoted.
pub(crate) fn valid_database_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names() {
        assert!(valid_database_name("stsgate"));
        assert!(valid_database_name("stsgate_t_1_ab"));
        for bad in ["", "Stsgate", "a\"b", "a;b", "a b", &"a".repeat(64)] {
            assert!(!valid_database_name(bad), "{bad}");
        }
    }
}
