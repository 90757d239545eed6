//! Teams, service accounts and the audit trail.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/teams`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateTeam {
    /// 1 to 63 letters, digits, `.`, `_` and `-`, starting with a letter or digit.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    pub name: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Whoever started a deployment may not approve it.
    #[serde(default)]
    pub forbid_self_approval: bool,
}

/// `PATCH /api/v1/teams/{name}`: a team's settings; what is left out stays.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTeam {
    /// Whether whoever started a deployment is refused when approving it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forbid_self_approval: Option<bool>,
}

/// `GET /api/v1/teams`: the teams the caller has a role in (every team,
/// for an organization admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TeamList {
    pub teams: Vec<Team>,
}

/// Who a role binding names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BindingKind {
    /// A person, by the identity provider's `sub`.
    User,
    /// A group the identity provider's groups claim names.
    Group,
}

/// `POST /api/v1/role-bindings?team=TEAM`: a role in the team, for a person
/// or a group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRoleBinding {
    pub kind: BindingKind,
    /// The person's subject, or the group's name (1 to 256 characters).
    pub subject: String,
    /// `viewer`, `deployer`, `approver`, `operator` or `admin`.
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleBinding {
    pub id: String,
    pub team: String,
    pub kind: BindingKind,
    pub subject: String,
    pub role: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Who created it: `kind:id`.
    pub created_by: String,
}

/// `GET /api/v1/role-bindings?team=TEAM`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleBindingList {
    pub role_bindings: Vec<RoleBinding>,
}

/// `POST /api/v1/service-accounts?team=TEAM`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateServiceAccount {
    /// Unique among the team's live service accounts.
    pub name: String,
    /// `viewer`, `deployer`, `approver`, `operator` or `admin`; at least one.
    pub roles: Vec<String>,
    /// How long its token is good for (`90d`, `12h`); default 90 days, at most 2 years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    pub id: String,
    pub team: String,
    pub name: String,
    pub roles: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Who created it: `kind:id`.
    pub created_by: String,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
}

/// The reply to a creation: the token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountCreated {
    #[serde(flatten)]
    pub account: ServiceAccount,
    /// `Authorization: Bearer <token>`. Only its hash is kept.
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountList {
    pub service_accounts: Vec<ServiceAccount>,
}

/// A person's own token (`bpt_`), made at `borealis login` or in the
/// console. Its secret is shown only when it is made.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersonalToken {
    pub id: String,
    /// What its person called it (`borealis login` for the CLI's sign-in).
    pub description: String,
    /// Whose it is: `kind` is `user`, `id` the provider's subject.
    pub person: Actor,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    /// `live`, `expired` or `revoked`.
    pub state: String,
}

/// The reply to `DELETE /api/v1/personal-tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersonalTokensRevoked {
    /// Whose (the subject).
    pub person: String,
    /// How many live tokens were revoked.
    pub revoked: u64,
}

/// `GET /api/v1/personal-tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersonalTokenList {
    /// Newest first; at most 500.
    pub personal_tokens: Vec<PersonalToken>,
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Actor {
    /// `admin` (the bootstrap admin token), `service_account`, `user`, or
    /// `anonymous` (no credential, or a wrong one).
    pub kind: String,
    pub id: String,
    pub name: String,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Its place in the trail: later entries have larger ones.
    pub seq: i64,
    #[schema(format = DateTime)]
    pub time: String,
    pub actor: Actor,
    pub team: Option<String>,
    /// What was asked, as the permission table names it (`deployment.create`).
    pub action: String,
    /// The path it was asked of.
    pub object: String,
    /// `allowed`, `failed` (allowed, and the request failed), `refused` (403)
    /// or `unauthenticated` (401).
    pub outcome: String,
    /// The HTTP status answered.
    pub status: u16,
    pub source_address: Option<String>,
    /// The `Borealis-Request-Id` the reply carried.
    pub request_id: String,
}

/// `GET /api/v1/audit`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
    /// There may be older ones: pass this as `before` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `POST /api/v1/login/device`: a device-flow sign-in, started at the
/// identity provider for the CLI.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceLogin {
    /// Shown to the person, who enters it at `verificationUri`.
    pub user_code: String,
    pub verification_uri: String,
    /// The same, with the code filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_uri_complete: Option<String>,
    /// What the CLI sends back when it polls.
    pub device_code: String,
    /// Seconds between polls.
    pub interval: u64,
    /// Seconds the code is good for.
    pub expires_in: u64,
}

/// `POST /api/v1/login/device/token`: one poll.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceLoginPoll {
    pub device_code: String,
}

/// The answer to a poll: not yet (`pending`, with `slowDown` when the
/// provider asks for longer pauses), or the person's token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceLoginResult {
    pub pending: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slow_down: bool,
    /// `Authorization: Bearer <token>`: a personal token (`bpt_...`). Only its hash is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Who it acts as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}
