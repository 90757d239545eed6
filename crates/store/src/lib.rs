//! Durable state of the relay: everything a relay must not forget across a
//! restart. Credentials (secrets only as hashes), shared settings, encrypted
//! secrets, metric providers, webhook runs with their attempts, and
//! deployments.
//!
//! One trait per aggregate, each in its module with its records:
//! [`CredentialStore`], [`SecretStore`], [`MetricProviderStore`],
//! [`RunStore`], [`DeploymentStore`], [`SettingStore`], [`ClusterStore`], [`ConsoleSessionStore`]; and [`Lifecycle`]
//! (`ping`, `close`). [`Store`] is all of them, for whoever holds the one
//! handle (the relay's `Arc<dyn Store>`); code that needs one aggregate
//! should take the narrowest trait it needs, so a test or another backend
//! can give it just that.
//!
//! Errors are backend-neutral ([`StoreError`]): each backend decides which
//! variant its database's errors are. [`open`] picks the backend by URL:
//! SQLite ([`SqliteStore`], one relay) or PostgreSQL ([`PostgresStore`],
//! replicas sharing one database).
//! Every text either backend binds goes through [`storable`] first, so a
//! NUL a peer sent is stored (as U+FFFD) rather than failing the write.
//! `conformance` (feature `conformance`) is the suite every backend passes.

mod audit;
mod cluster;
mod console;
mod credentials;
mod deployments;
mod error;
mod idempotency;
mod identities;
pub mod migrate;
mod open;
mod page;
mod postgres;
mod providers;
mod rows;
mod runs;
mod secrets;
mod settings;
mod sqlite;
mod store;
mod text;
mod time;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use audit::{AuditEntry, AuditQuery, AuditStore, MAX_AUDIT_BATCH};
pub use cluster::{Change, ClusterStore, ReplicaRecord, ReportedAllowList, SessionRecord};
pub use console::{ConsoleSession, ConsoleSessionStore, Person};
pub use credentials::{Credential, CredentialKind, CredentialStore};
pub use deployments::{
    AbortRequest, ApprovalState, DECISION_SUFFIX, DeploymentLease, DeploymentRecord, DeploymentState, DeploymentStore,
    DeploymentView, EventRecord, TargetRecord, TargetState, Voter,
};
pub use error::{BoxError, Conflict, StoreError};
pub use idempotency::IdempotencyKey;
pub use identities::{BindingSubject, DEFAULT_TEAM, IdentityStore, PersonalToken, RoleBinding, ServiceAccount, Team};
pub use open::{SUPPORTED_SCHEMES, open};
pub use page::{Cursor, Page};
pub use postgres::PostgresStore;
pub use providers::{MetricProvider, MetricProviderStore};
pub use runs::{Attempt, Claim, Fence, NewRun, Outcome, RunRecord, RunState, RunStore, RunView};
pub use secrets::{EncryptedSecret, SecretStore};
pub use settings::SettingStore;
pub use sqlite::SqliteStore;
pub use store::{Lifecycle, Store};
pub use text::{NUL_REPLACEMENT, storable, storable_opt};
pub use time::{from_unix_ms, unix_ms};
