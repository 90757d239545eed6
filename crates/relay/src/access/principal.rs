//! Principals: the bootstrap admin token, acting as the organization's
//! admin, and service accounts, whose tokens are `bsa_<id>_<secret>` and
//! kept only as the secret's SHA-256.

use std::time::SystemTime;

use base64::Engine;
use borealis_core::Secret;
use borealis_store::{IdentityStore, Person, ServiceAccount, StoreError};
use ring::digest;

use super::rules::{Grants, Role};

/// How a service account's token starts.
pub const TOKEN_PREFIX: &str = "bsa_";

/// Who did something, as the audit trail and the API name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `admin`, `service_account`, `user` or `anonymous`.
    pub kind: &'static str,
    pub id: String,
    pub name: String,
}

impl Actor {
    pub fn admin() -> Self {
        Self { kind: "admin", id: "admin".into(), name: "the bootstrap admin token".into() }
    }

    /// The admin token, signed in at the console.
    pub fn console_admin() -> Self {
        Self { kind: "admin", id: "admin".into(), name: "the bootstrap admin token (console)".into() }
    }

    pub fn anonymous() -> Self {
        Self { kind: "anonymous", id: String::new(), name: "no valid credential".into() }
    }

    pub fn service_account(account: &ServiceAccount) -> Self {
        Self { kind: "service_account", id: account.id.clone(), name: format!("{} ({})", account.name, account.team) }
    }

    /// `kind:id`, as records name their creator.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind, self.id)
    }
}

/// An authenticated caller and what it holds.
#[derive(Debug, Clone)]
pub struct Principal {
    pub actor: Actor,
    pub grants: Grants,
    /// The identity provider's groups it is in (a person's); an approval's
    /// `requiresRoles` may name one.
    pub groups: Vec<String>,
}

impl Principal {
    pub fn admin() -> Self {
        Self { actor: Actor::admin(), grants: Grants::organization_admin(), groups: Vec::new() }
    }

    /// The admin token, signed in at the console.
    pub fn console_admin() -> Self {
        Self { actor: Actor::console_admin(), ..Self::admin() }
    }
}

/// A person signed in through the identity provider: the roles their role
/// bindings give them (as a person, and through their groups) in each team.
pub async fn person(store: &dyn IdentityStore, person: &Person) -> Result<Principal, StoreError> {
    let bindings = store.bindings_of(&person.subject, &person.groups).await?;
    let mut roles: Vec<(String, Role)> =
        bindings.iter().filter_map(|b| Some((b.team.clone(), Role::parse(&b.role)?))).collect();
    roles.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
    roles.dedup();
    let actor = Actor { kind: "user", id: person.subject.clone(), name: person.name.clone() };
    Ok(Principal { actor, grants: Grants { organization_admin: false, roles }, groups: person.groups.clone() })
}

/// Why a presented token does not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum Unauthenticated {
    #[error("the token is not valid")]
    Wrong,
    /// A token that was good: its holder may be told.
    #[error("service account {name:?} was revoked")]
    Revoked { actor: Actor, name: String },
    #[error("the token of service account {name:?} has expired")]
    Expired { actor: Actor, name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new service account id: 16 hex digits.
pub fn new_id() -> String {
    borealis_core::secret::random_bytes(8).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new token for service account `id`, and the hash to keep of it.
pub fn mint(id: &str) -> (Secret, Vec<u8>) {
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(borealis_core::secret::random_bytes(32));
    let hash = hash(&secret);
    (Secret::new(format!("{TOKEN_PREFIX}{id}_{secret}")), hash)
}

fn hash(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes()).as_ref().to_vec()
}

/// The service account `token` names, if it is one's (`None`: not a
/// service-account token at all).
pub async fn service_account(
    store: &dyn IdentityStore,
    token: &str,
    now: SystemTime,
) -> Result<Option<Principal>, Unauthenticated> {
    let Some(rest) = token.strip_prefix(TOKEN_PREFIX) else { return Ok(None) };
    let Some((id, secret)) = rest.split_once('_') else { return Err(Unauthenticated::Wrong) };
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Unauthenticated::Wrong);
    }
    let Some(account) = store.service_account(id).await? else { return Err(Unauthenticated::Wrong) };
    if !crate::auth::same_bytes(&hash(secret), &account.secret_hash) {
        return Err(Unauthenticated::Wrong);
    }
    let actor = Actor::service_account(&account);
    if account.revoked_at.is_some() {
        return Err(Unauthenticated::Revoked { actor, name: account.name });
    }
    if !account.is_usable(now) {
        return Err(Unauthenticated::Expired { actor, name: account.name });
    }
    let roles = account.roles.iter().filter_map(|r| Role::parse(r)).map(|role| (account.team.clone(), role)).collect();
    Ok(Some(Principal { actor, grants: Grants { organization_admin: false, roles }, groups: Vec::new() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_names_its_account_and_hashes_to_what_is_kept() {
        let id = new_id();
        let (token, kept) = mint(&id);
        let rest = token.expose().strip_prefix(TOKEN_PREFIX).unwrap();
        let (named, secret) = rest.split_once('_').unwrap();
        assert_eq!(named, id);
        assert!(crate::auth::same_bytes(&hash(secret), &kept));
        assert!(!crate::auth::same_bytes(&hash("another"), &kept));
        assert_ne!(mint(&id).0.expose(), token.expose(), "each token is new");
    }
}
