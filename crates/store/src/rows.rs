//! Records read from rows, once for every backend: a backend only says how
//! its rows give up the few column types the records are stored as.

use std::time::SystemTime;

use crate::cluster::{ReplicaRecord, SessionRecord};
use crate::console::{ConsoleSession, Person};
use crate::credentials::{Credential, CredentialKind};
use crate::deployments::{
    AbortRequest, DeploymentRecord, DeploymentState, EventRecord, TargetRecord, TargetState, Voter,
};
use crate::error::StoreError;
use crate::providers::MetricProvider;
use crate::runs::{Attempt, RunRecord, RunState};
use crate::secrets::{EncryptedSecret, read_uses};
use crate::time::from_unix_ms;

/// The column types records are stored as. Times are milliseconds since the
/// epoch; `flag` is a nullable boolean (SQLite keeps it as an integer).
pub(crate) trait Columns {
    fn text(&self, column: &str) -> String;
    fn text_opt(&self, column: &str) -> Option<String>;
    fn str(&self, column: &str) -> &str;
    fn int(&self, column: &str) -> i64;
    fn int_opt(&self, column: &str) -> Option<i64>;
    fn bytes(&self, column: &str) -> Vec<u8>;
    fn flag(&self, column: &str) -> Option<bool>;
    /// The first two columns, as text.
    fn pair(&self) -> (String, String);
}

/// Implements [`Columns`] for a sqlx row type; `$flag` reads a nullable
/// boolean column the way that backend stores it.
macro_rules! sqlx_columns {
    ($row:ty, $flag:expr) => {
        impl $crate::rows::Columns for $row {
            fn text(&self, column: &str) -> String {
                sqlx::Row::get(self, column)
            }
            fn text_opt(&self, column: &str) -> Option<String> {
                sqlx::Row::get(self, column)
            }
            fn str(&self, column: &str) -> &str {
                sqlx::Row::get(self, column)
            }
            fn int(&self, column: &str) -> i64 {
                sqlx::Row::get(self, column)
            }
            fn int_opt(&self, column: &str) -> Option<i64> {
                sqlx::Row::get(self, column)
            }
            fn bytes(&self, column: &str) -> Vec<u8> {
                sqlx::Row::get(self, column)
            }
            fn flag(&self, column: &str) -> Option<bool> {
                let read: fn(&Self, &str) -> Option<bool> = $flag;
                read(self, column)
            }
            fn pair(&self) -> (String, String) {
                (sqlx::Row::get(self, 0), sqlx::Row::get(self, 1))
            }
        }
    };
}
pub(crate) use sqlx_columns;

fn time(row: &impl Columns, column: &str) -> SystemTime {
    from_unix_ms(row.int(column))
}

fn time_opt(row: &impl Columns, column: &str) -> Option<SystemTime> {
    row.int_opt(column).map(from_unix_ms)
}

/// A state column read with `parse`; a value this version does not know is
/// corruption (or a newer relay's), not something to guess at.
fn state<T>(row: &impl Columns, column: &str, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    let text = row.str(column);
    parse(text).ok_or_else(|| StoreError::corrupt(format!("unknown {column} {text:?}")))
}

pub(crate) fn credential(row: &impl Columns) -> Credential {
    Credential {
        client_id: row.text("client_id"),
        kind: CredentialKind::parse(row.str("kind")),
        team: row.text("team"),
        subject: row.text("subject"),
        secret_hash: row.bytes("secret_hash"),
        created_at: time(row, "created_at"),
        revoked_at: time_opt(row, "revoked_at"),
    }
}

pub(crate) fn secret(row: &impl Columns) -> EncryptedSecret {
    EncryptedSecret {
        team: row.text("team"),
        name: row.text("name"),
        nonce: row.bytes("nonce"),
        ciphertext: row.bytes("ciphertext"),
        updated_at: time(row, "updated_at"),
        uses: read_uses(row.text("uses")),
    }
}

pub(crate) fn console_session(row: &impl Columns) -> ConsoleSession {
    ConsoleSession {
        id_hash: row.bytes("id_hash"),
        admin_seal: row.bytes("admin_seal"),
        expires_at: time(row, "expires_at"),
        // Groups written by this crate from a list of names; unreadable is none.
        person: row.text_opt("person_subject").map(|subject| Person {
            subject,
            name: row.text_opt("person_name").unwrap_or_default(),
            groups: names(row.text_opt("person_groups")),
        }),
    }
}

/// A session's person as stored: subject, name and groups (a JSON array),
/// each text as [`storable`](crate::text::storable) makes it; all NULL for
/// the admin token.
pub(crate) fn person_columns(session: &ConsoleSession) -> (Option<String>, Option<String>, Option<String>) {
    use crate::text::storable;
    match &session.person {
        None => (None, None, None),
        Some(person) => (
            Some(storable(&person.subject).into_owned()),
            Some(storable(&person.name).into_owned()),
            Some(names_json(&person.groups)),
        ),
    }
}

pub(crate) fn provider(row: &impl Columns) -> MetricProvider {
    MetricProvider {
        team: row.text("team"),
        name: row.text("name"),
        kind: row.text("kind"),
        url: row.text("url"),
        agent: row.text_opt("agent"),
        headers: serde_json::from_str(row.str("headers")).unwrap_or_default(),
        created_at: time(row, "created_at"),
    }
}

pub(crate) fn run(row: &impl Columns) -> RunRecord {
    RunRecord {
        id: row.text("id"),
        team: row.text("team"),
        callback_id: row.text("callback_id"),
        webhook: row.text("webhook"),
        environment: row.text_opt("environment"),
        spec: row.text("spec"),
        request: row.text_opt("request"),
        state: RunState::parse(row.str("state")).unwrap_or(RunState::Failed),
        attempts: row.int("attempts") as u32,
        next_attempt_at: time_opt(row, "next_attempt_at"),
        deadline_at: time_opt(row, "deadline_at"),
        success: row.flag("success"),
        md_message: row.text_opt("md_message"),
        reason: row.text_opt("reason"),
        callback_at: time_opt(row, "callback_at"),
        created_at: time(row, "created_at"),
        updated_at: time(row, "updated_at"),
        finished_at: time_opt(row, "finished_at"),
        lease_owner: row.text_opt("lease_owner"),
        lease_until: time_opt(row, "lease_until"),
        request_attempt: row.int_opt("request_attempt").map(|n| n as u32),
    }
}

pub(crate) fn attempt(row: &impl Columns) -> Attempt {
    Attempt {
        number: row.int("number") as u32,
        started_at: time(row, "started_at"),
        latency_ms: row.int("latency_ms") as u64,
        status: row.int_opt("status").map(|s| s as u16),
        error: row.text_opt("error"),
        reply: row.text_opt("reply"),
    }
}

pub(crate) fn deployment(row: &impl Columns) -> Result<DeploymentRecord, StoreError> {
    Ok(DeploymentRecord {
        id: row.text("id"),
        team: row.text("team"),
        application: row.text("application"),
        file: row.text("file"),
        context: row.text("context"),
        state: state(row, "state", DeploymentState::parse)?,
        reason: row.text_opt("reason"),
        created_at: time(row, "created_at"),
        updated_at: time(row, "updated_at"),
        finished_at: time_opt(row, "finished_at"),
        abort: row.text_opt("abort_reason").map(|reason| AbortRequest {
            reason,
            rollback: row.flag("abort_rollback").unwrap_or(true),
            requested_at: time_opt(row, "abort_requested_at").unwrap_or(SystemTime::UNIX_EPOCH),
            requested_by: row.text_opt("abort_requested_by"),
        }),
    })
}

pub(crate) fn target(row: &impl Columns) -> Result<TargetRecord, StoreError> {
    Ok(TargetRecord {
        target: row.text("target"),
        state: state(row, "state", TargetState::parse)?,
        step: row.text_opt("step"),
        reason: row.text_opt("reason"),
        updated_at: time(row, "updated_at"),
    })
}

pub(crate) fn event(row: &impl Columns) -> EventRecord {
    EventRecord {
        at: time(row, "at"),
        target: row.text_opt("target"),
        kind: row.text("kind"),
        message: row.text("message"),
    }
}

pub(crate) fn pair(row: &impl Columns) -> (String, String) {
    row.pair()
}

/// From `voter_id` and `voter_name`.
pub(crate) fn voter(row: &impl Columns) -> Voter {
    Voter { id: row.text("voter_id"), name: row.text("voter_name") }
}

/// A vote: its `step_key` and [`voter`].
pub(crate) fn vote(row: &impl Columns) -> (String, Voter) {
    (row.text("step_key"), voter(row))
}

pub(crate) fn replica(row: &impl Columns) -> ReplicaRecord {
    ReplicaRecord {
        id: row.text("id"),
        name: row.text("name"),
        peer_url: row.text_opt("peer_url"),
        started_at: time(row, "started_at"),
        seen_at: time(row, "seen_at"),
    }
}

pub(crate) fn session(row: &impl Columns) -> SessionRecord {
    SessionRecord {
        session_id: row.text("session_id"),
        replica_id: row.text("replica_id"),
        team: row.text("team"),
        agent_id: row.text("agent_id"),
        instance: row.text("instance"),
        version: row.text("version"),
        remote_addr: row.text_opt("remote_addr"),
        connected_at: time(row, "connected_at"),
        // A record this version cannot read says nothing of the list.
        allow_list: row.text_opt("allow_list").and_then(|text| serde_json::from_str(&text).ok()),
    }
}

/// A session's allow-list as stored: JSON, or NULL when it said nothing.
pub(crate) fn allow_list_json(session: &SessionRecord) -> Option<String> {
    session.allow_list.as_ref().map(|list| serde_json::to_string(list).expect("a list of strings serializes"))
}

pub(crate) fn team(row: &impl Columns) -> crate::identities::Team {
    crate::identities::Team {
        name: row.text("name"),
        created_at: time(row, "created_at"),
        forbid_self_approval: row.flag("forbid_self_approval").unwrap_or(false),
    }
}

pub(crate) fn service_account(row: &impl Columns) -> crate::identities::ServiceAccount {
    crate::identities::ServiceAccount {
        id: row.text("id"),
        team: row.text("team"),
        name: row.text("name"),
        // Written by this crate from a list of names; unreadable is none.
        roles: serde_json::from_str(row.str("roles")).unwrap_or_default(),
        secret_hash: row.bytes("secret_hash"),
        created_at: time(row, "created_at"),
        created_by: row.text("created_by"),
        expires_at: time_opt(row, "expires_at"),
        revoked_at: time_opt(row, "revoked_at"),
    }
}

pub(crate) fn role_binding(row: &impl Columns) -> Result<crate::identities::RoleBinding, StoreError> {
    Ok(crate::identities::RoleBinding {
        id: row.text("id"),
        team: row.text("team"),
        subject_kind: state(row, "subject_kind", crate::identities::BindingSubject::parse)?,
        subject: row.text("subject"),
        role: row.text("role"),
        created_at: time(row, "created_at"),
        created_by: row.text("created_by"),
    })
}

/// Names as one JSON array, each as [`storable`](crate::text::storable)
/// makes it: a session's groups, and the groups SQLite's
/// [`bindings_of`](crate::IdentityStore::bindings_of) binds (read with `json_each`).
pub(crate) fn names_json(names: &[String]) -> String {
    let names: Vec<_> = names.iter().map(|name| crate::text::storable(name)).collect();
    serde_json::to_string(&names).expect("names serialize")
}

/// Names stored by [`names_json`]; unreadable (or NULL) is none.
fn names(text: Option<String>) -> Vec<String> {
    text.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default()
}

pub(crate) fn personal_token(row: &impl Columns) -> crate::identities::PersonalToken {
    crate::identities::PersonalToken {
        id: row.text("id"),
        person: Person { subject: row.text("subject"), name: row.text("name"), groups: names(row.text_opt("groups")) },
        description: row.text("description"),
        secret_hash: row.bytes("secret_hash"),
        created_at: time(row, "created_at"),
        expires_at: time(row, "expires_at"),
        revoked_at: time_opt(row, "revoked_at"),
    }
}

pub(crate) fn audit_entry(row: &impl Columns) -> crate::audit::AuditEntry {
    crate::audit::AuditEntry {
        seq: row.int("seq"),
        time: time(row, "time"),
        actor_kind: row.text("actor_kind"),
        actor_id: row.text("actor_id"),
        actor_name: row.text("actor_name"),
        team: row.text_opt("team"),
        action: row.text("action"),
        object: row.text("object"),
        outcome: row.text("outcome"),
        status: row.int("status") as u16,
        source_address: row.text_opt("source_address"),
        request_id: row.text("request_id"),
    }
}
