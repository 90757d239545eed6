//! Teams and service accounts: who may act on the relay besides the
//! bootstrap admin token. Service-account tokens are kept only as hashes.

use std::time::SystemTime;

use crate::error::StoreError;

pub use borealis_core::team::DEFAULT_TEAM;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub name: String,
    pub created_at: SystemTime,
    /// Whoever started a deployment may not approve it.
    pub forbid_self_approval: bool,
}

/// A machine identity in one team, with roles there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// Public; the first part of its token.
    pub id: String,
    pub team: String,
    pub name: String,
    /// The roles it holds in its team, by name.
    pub roles: Vec<String>,
    /// The hash of its token's secret part.
    pub secret_hash: Vec<u8>,
    pub created_at: SystemTime,
    /// Who created it, as the audit trail names actors.
    pub created_by: String,
    pub expires_at: Option<SystemTime>,
    pub revoked_at: Option<SystemTime>,
}

impl ServiceAccount {
    /// Whether its token is still good at `now`.
    pub fn is_usable(&self, now: SystemTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// Who a role binding names: a person (by the identity provider's
/// subject), or a group the provider says people belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingSubject {
    User,
    Group,
}

impl BindingSubject {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingSubject::User => "user",
            BindingSubject::Group => "group",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(BindingSubject::User),
            "group" => Some(BindingSubject::Group),
            _ => None,
        }
    }
}

/// A role in a team, given to a person or to a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleBinding {
    /// Public; 16 hex digits.
    pub id: String,
    pub team: String,
    pub subject_kind: BindingSubject,
    /// The person's subject (`sub`), or the group's name.
    pub subject: String,
    /// A role's name.
    pub role: String,
    pub created_at: SystemTime,
    /// Who created it, as the audit trail names actors.
    pub created_by: String,
}

/// A person's own token, for the CLI: made when they sign in there (the
/// device flow); only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalToken {
    /// Public; 16 hex digits, the first part of the token.
    pub id: String,
    /// Who it acts as: the person as the provider vouched for them then.
    pub person: crate::console::Person,
    /// What its person called it ("laptop", "borealis login"), so they can
    /// tell their tokens apart.
    pub description: String,
    /// The hash of the token's secret part.
    pub secret_hash: Vec<u8>,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
    pub revoked_at: Option<SystemTime>,
}

#[async_trait::async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    /// Adds a team; [`Conflict::Duplicate`] when the name is taken.
    ///
    /// [`Conflict::Duplicate`]: crate::Conflict::Duplicate
    async fn create_team(&self, name: &str) -> Result<Team, StoreError>;
    /// By name.
    async fn teams(&self) -> Result<Vec<Team>, StoreError>;
    async fn team(&self, name: &str) -> Result<Option<Team>, StoreError>;
    /// Sets team `name`'s rule on approving one's own deployment; `false`
    /// when there is no such team.
    async fn set_forbid_self_approval(&self, name: &str, forbid: bool) -> Result<bool, StoreError>;
    /// Adds a service account; [`Conflict::Duplicate`] when its team has
    /// a live one of that name.
    ///
    /// [`Conflict::Duplicate`]: crate::Conflict::Duplicate
    async fn create_service_account(&self, account: &ServiceAccount) -> Result<(), StoreError>;
    async fn service_account(&self, id: &str) -> Result<Option<ServiceAccount>, StoreError>;
    /// Of `team`, or all; by team, then name, then creation.
    async fn service_accounts(&self, team: Option<&str>) -> Result<Vec<ServiceAccount>, StoreError>;
    /// Revokes it at `at`; false when there is none, or it was revoked already.
    async fn revoke_service_account(&self, id: &str, at: SystemTime) -> Result<bool, StoreError>;
    /// Adds a binding; [`Conflict::Duplicate`] when its team already binds
    /// that role to that subject.
    ///
    /// [`Conflict::Duplicate`]: crate::Conflict::Duplicate
    async fn create_role_binding(&self, binding: &RoleBinding) -> Result<(), StoreError>;
    /// Of `team`, or all; by team, subject kind, subject, role.
    async fn role_bindings(&self, team: Option<&str>) -> Result<Vec<RoleBinding>, StoreError>;
    /// Every binding, in any team, that names `user` or one of `groups`.
    async fn bindings_of(&self, user: &str, groups: &[String]) -> Result<Vec<RoleBinding>, StoreError>;
    /// Removes binding `id` of `team`; false when there is none there.
    async fn delete_role_binding(&self, team: &str, id: &str) -> Result<bool, StoreError>;
    async fn create_personal_token(&self, token: &PersonalToken) -> Result<(), StoreError>;
    async fn personal_token(&self, id: &str) -> Result<Option<PersonalToken>, StoreError>;
    /// A person's (by subject), or everyone's (`None`, for organization
    /// admins); newest first, at most `limit`; with `live_at`, only those
    /// neither revoked nor expired then, else revoked and expired ones too.
    async fn personal_tokens(
        &self,
        subject: Option<&str>,
        live_at: Option<SystemTime>,
        limit: u32,
    ) -> Result<Vec<PersonalToken>, StoreError>;
    /// Revokes every live token of the person `subject` at `at` (one who
    /// left, or whose tokens may have leaked); how many.
    async fn revoke_personal_tokens_of(&self, subject: &str, at: SystemTime) -> Result<u64, StoreError>;
    /// Revokes token `id` at `at`: the person's (by subject), or whoever's
    /// it is (`None`, an organization admin revoking a leaked one); false
    /// when there is no live one of that id (theirs, when a subject is given).
    async fn revoke_personal_token(&self, subject: Option<&str>, id: &str, at: SystemTime) -> Result<bool, StoreError>;
}
