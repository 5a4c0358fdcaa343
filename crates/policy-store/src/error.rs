//! What the store reports when it cannot do what was asked.
//!
//! Database failures reach callers as an opaque [`DatabaseError`]: a [`DbErrorKind`] to act on
//! and a message that is safe to log. No driver type crosses the crate boundary.

/// A validation failure that points at the offending field (`statements[0].resources[1]`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint (e.g. an app slug or username that already exists).
    #[error("already exists: {0}")]
    Conflict(String),
    /// Input that fails validation, with the fields at fault.
    #[error("invalid input: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// A stored secret could not be decrypted (wrong or missing master key).
    #[error("cannot decrypt a stored secret: {0}")]
    Crypto(#[from] crate::crypto::CryptoError),
    /// The database could not be reached or failed.
    #[error("database error: {0}")]
    Database(#[from] DatabaseError),
}

impl StoreError {
    /// True when the database is unreachable or did not answer in time (the gateway answers
    /// 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Database(e) if e.is_unavailable())
    }

    /// True when the connection failed (not a timeout, not a refusal): a statement already
    /// sent may have been carried out, and committed, before the failure.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, StoreError::Database(e) if e.kind() == DbErrorKind::Unavailable)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What kind of database failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// The server cannot be reached, the connection broke, or the server is shutting down.
    Unavailable,
    /// No connection was free in time, or a statement ran past its timeout.
    TimedOut,
    /// A constraint the store does not report more precisely (a foreign key, NOT NULL, …).
    Constraint,
    /// Anything else: a bug, or a schema the binary does not expect.
    Other,
}

/// A database failure, without the driver's types. Its message never carries row values
/// (PostgreSQL's DETAIL is left out), so it is safe to log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct DatabaseError {
    kind: DbErrorKind,
    message: String,
}

impl DatabaseError {
    pub fn kind(&self) -> DbErrorKind {
        self.kind
    }

    /// True for [`DbErrorKind::Unavailable`] and [`DbErrorKind::TimedOut`].
    pub fn is_unavailable(&self) -> bool {
        matches!(self.kind, DbErrorKind::Unavailable | DbErrorKind::TimedOut)
    }

    pub(crate) fn from_sqlx(e: &sqlx::Error) -> Self {
        use sqlx::Error as E;
        let kind = match e {
            E::Io(_) | E::PoolClosed | E::Tls(_) | E::Protocol(_) | E::WorkerCrashed => {
                DbErrorKind::Unavailable
            }
            E::PoolTimedOut => DbErrorKind::TimedOut,
            E::Database(db) => match db.code().as_deref() {
                // query_canceled: statement_timeout (or a cancel request).
                Some("57014") => DbErrorKind::TimedOut,
                // admin_shutdown, crash_shutdown, cannot_connect_now, …; connection_exception.
                Some(c) if c.starts_with("57P") || c.starts_with("08") => DbErrorKind::Unavailable,
                Some(c) if c.starts_with("23") => DbErrorKind::Constraint,
                _ => DbErrorKind::Other,
            },
            _ => DbErrorKind::Other,
        };
        let message = match e {
            // The server's message and SQLSTATE only: DETAIL may quote row values.
            E::Database(db) => match db.code() {
                Some(code) => format!("{} (SQLSTATE {code})", db.message()),
                None => db.message().to_owned(),
            },
            other => other.to_string(),
        };
        Self { kind, message }
    }
}

/// `.db()?` on a sqlx result: its error becomes [`StoreError::Database`]. (A `From` impl
/// would put sqlx into this crate's public API.)
pub(crate) trait DbResult<T> {
    fn db(self) -> Result<T>;
}

impl<T> DbResult<T> for std::result::Result<T, sqlx::Error> {
    fn db(self) -> Result<T> {
        self.map_err(|e| StoreError::Database(DatabaseError::from_sqlx(&e)))
    }
}
