//! The one error every backend returns. It names no database library, so a
//! caller's `match` works the same on SQLite and on PostgreSQL: each backend
//! decides which variant its own errors are.

/// What a backend's own error is carried as, to keep its message and source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller's write clashes with what is stored; a retry gets the same answer.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The database cannot be reached, is busy, or no connection was free in
    /// time: a retry may pass.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug, or data the store cannot read.
    #[error("database error: {0}")]
    Backend(#[source] BoxError),
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// Names the scheme only: the rest of a URL may hold a password.
    #[error("unsupported database URL scheme {scheme:?}; supported: {}", supported.join(", "))]
    UnsupportedScheme { scheme: String, supported: &'static [&'static str] },
    #[error("schema migration failed: {0}")]
    Migration(#[source] BoxError),
}

impl StoreError {
    /// Whether trying the same call again may pass (only `Unavailable`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// A stored value this version cannot read, as `Backend`.
    pub fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Backend(what.into().into())
    }
}

/// A uniqueness or compare-and-set conflict the caller caused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The Idempotency-Key was used before, for the row `id`;
    /// `same_request` says whether with the same request.
    #[error("the Idempotency-Key was already used, for {id}")]
    IdempotencyKeyUsed { id: String, same_request: bool },
    /// One deployment per application runs at a time; `running` is it.
    #[error(
        "deployment {running} of application {application:?} is still in progress; one deployment per application runs at a time"
    )]
    DeploymentInProgress { application: String, running: String },
    /// `kind` is [`crate::CredentialKind::as_str`].
    #[error("{kind} {subject:?} already has credentials; revoke them first")]
    CredentialExists { kind: &'static str, subject: String },
    #[error("a metric provider named {name:?} exists already")]
    ProviderExists { name: String },
    /// A write fenced by a lease, by a replica that no longer holds it:
    /// another replica took the work over.
    #[error("the lease on {what} is held by another replica now")]
    LeaseLost { what: String },
    /// Another uniqueness rule refused the write (an id used twice).
    #[error("already exists: {0}")]
    Duplicate(String),
}
