//! Principals: the bootstrap admin token, acting as the organization's
//! admin, and service accounts, whose tokens are `bsa_<id>_<secret>` and
//! kept only as the secret's SHA-256.

use std::time::SystemTime;

use base64::Engine;
use borealis_core::Secret;
use borealis_store::{IdentityStore, Person, ServiceAccount, StoreError};
use ring::digest;

use super::rules::{Grants, Role};

/// How long a sign-in holds: a token made at the CLI's sign-in, and an
/// organization admin's reach through a personal token's groups.
pub const SIGN_IN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(12 * 3600);

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

    /// A person signed in through the identity provider.
    pub fn person(person: &Person) -> Self {
        Self { kind: "user", id: person.subject.clone(), name: person.name.clone() }
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
/// bindings give them (as a person, and through their groups) in each team;
/// an organization admin when one of their groups is in `admin_groups`.
pub async fn person(
    store: &dyn IdentityStore,
    person: &Person,
    admin_groups: &[String],
) -> Result<Principal, StoreError> {
    let bindings = store.bindings_of(&person.subject, &person.groups).await?;
    let mut roles: Vec<(String, Role)> =
        bindings.iter().filter_map(|b| Some((b.team.clone(), Role::parse(&b.role)?))).collect();
    roles.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
    roles.dedup();
    let organization_admin = person.groups.iter().any(|group| admin_groups.contains(group));
    let actor = Actor::person(person);
    let grants = Grants { organization_admin, person: true, roles };
    Ok(Principal { actor, grants, groups: person.groups.clone() })
}

/// Why a presented token does not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum Unauthenticated {
    #[error("the token is not valid")]
    Wrong,
    /// A token that was good: its holder may be told. `name` says whose
    /// (`service account "ci"`).
    #[error("{name} was revoked")]
    Revoked { actor: Actor, name: String },
    /// `name`: whose token (`the token of service account "ci"`).
    #[error("{name} has expired")]
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
    mint_with(TOKEN_PREFIX, id)
}

/// A new `<prefix><id>_<secret>` token, and the hash to keep of it.
fn mint_with(prefix: &str, id: &str) -> (Secret, Vec<u8>) {
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(borealis_core::secret::random_bytes(32));
    let hash = hash(&secret);
    (Secret::new(format!("{prefix}{id}_{secret}")), hash)
}

/// How a person's own token starts.
pub const PERSONAL_PREFIX: &str = "bpt_";

/// A new personal token `id`, and the hash to keep of it.
pub fn mint_personal(id: &str) -> (Secret, Vec<u8>) {
    mint_with(PERSONAL_PREFIX, id)
}

/// The id and secret a `<prefix><id>_<secret>` token names; `None`: not
/// one of `prefix`'s at all; `Some(Err)`: one that cannot be.
fn parts<'t>(prefix: &str, token: &'t str) -> Option<Result<(&'t str, &'t str), Unauthenticated>> {
    let rest = token.strip_prefix(prefix)?;
    let Some((id, secret)) = rest.split_once('_') else { return Some(Err(Unauthenticated::Wrong)) };
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(Err(Unauthenticated::Wrong));
    }
    Some(Ok((id, secret)))
}

/// The person whose personal token `token` is (`None`: not a personal
/// token at all), with the roles their bindings give them now.
pub async fn personal(
    store: &dyn IdentityStore,
    token: &str,
    now: SystemTime,
    admin_groups: &[String],
) -> Result<Option<Principal>, Unauthenticated> {
    let Some(found) = parts(PERSONAL_PREFIX, token) else { return Ok(None) };
    let (id, secret) = found?;
    let Some(kept) = store.personal_token(id).await? else { return Err(Unauthenticated::Wrong) };
    if !crate::auth::same_bytes(&hash(secret), &kept.secret_hash) {
        return Err(Unauthenticated::Wrong);
    }
    let mut signed = person(store, &kept.person, admin_groups).await?;
    // The groups are the provider's word when the token was made. An
    // organization admin's reach is too much to rest on an old word: it
    // holds only while the token is as young as a sign-in's own.
    let age = now.duration_since(kept.created_at).unwrap_or_default();
    if age > SIGN_IN_LIFETIME {
        signed.grants.organization_admin = false;
    }
    let name = format!("the personal token of {}", kept.person.name);
    if kept.revoked_at.is_some() {
        return Err(Unauthenticated::Revoked { actor: signed.actor, name });
    }
    if now >= kept.expires_at {
        return Err(Unauthenticated::Expired { actor: signed.actor, name });
    }
    Ok(Some(signed))
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
    let Some(found) = parts(TOKEN_PREFIX, token) else { return Ok(None) };
    let (id, secret) = found?;
    let Some(account) = store.service_account(id).await? else { return Err(Unauthenticated::Wrong) };
    if !crate::auth::same_bytes(&hash(secret), &account.secret_hash) {
        return Err(Unauthenticated::Wrong);
    }
    let actor = Actor::service_account(&account);
    if account.revoked_at.is_some() {
        return Err(Unauthenticated::Revoked { actor, name: format!("service account {:?}", account.name) });
    }
    if !account.is_usable(now) {
        let name = format!("the token of service account {:?}", account.name);
        return Err(Unauthenticated::Expired { actor, name });
    }
    let roles = account.roles.iter().filter_map(|r| Role::parse(r)).map(|role| (account.team.clone(), role)).collect();
    Ok(Some(Principal {
        actor,
        grants: Grants { organization_admin: false, person: false, roles },
        groups: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A personal token acts as its person with the roles their bindings
    /// give now, an organization admin only in its first 12 hours; a wrong
    /// secret, a revoked or an expired token does not.
    #[tokio::test]
    async fn a_personal_token_is_its_persons_until_it_expires_or_is_revoked() {
        use borealis_store::{BindingSubject, PersonalToken, RoleBinding};
        let store = borealis_store::SqliteStore::open("sqlite::memory:").await.unwrap();
        store.create_team("payments").await.unwrap();
        let binding = RoleBinding {
            id: new_id(),
            team: "payments".into(),
            subject_kind: BindingSubject::Group,
            subject: "payers".into(),
            role: "approver".into(),
            created_at: SystemTime::now(),
            created_by: "admin:admin".into(),
        };
        store.create_role_binding(&binding).await.unwrap();
        let now = SystemTime::now();
        let person = Person { subject: "alice".into(), name: "Alice".into(), groups: vec!["payers".into()] };
        let keep = |expires_at: SystemTime| {
            let id = new_id();
            let (token, secret_hash) = mint_personal(&id);
            let kept = PersonalToken {
                id,
                person: person.clone(),
                description: "laptop".into(),
                secret_hash,
                created_at: now,
                expires_at,
                revoked_at: None,
            };
            (token, kept)
        };
        let (good, kept) = keep(now + std::time::Duration::from_secs(60));
        store.create_personal_token(&kept).await.unwrap();
        let signed = personal(&store, good.expose(), now, &[]).await.unwrap().unwrap();
        assert_eq!(signed.actor, Actor { kind: "user", id: "alice".into(), name: "Alice".into() });
        assert_eq!(signed.grants.roles, [("payments".to_owned(), Role::Approver)]);
        assert_eq!(signed.groups, ["payers"]);

        // In an admin group: an organization admin while the token is young.
        let admins = ["payers".to_owned()];
        let (long_lived, kept_long) = keep(now + std::time::Duration::from_secs(30 * 86_400));
        store.create_personal_token(&kept_long).await.unwrap();
        let fresh = personal(&store, long_lived.expose(), now, &admins).await.unwrap().unwrap();
        assert!(fresh.grants.organization_admin);
        let day_later = now + std::time::Duration::from_secs(86_400);
        let old = personal(&store, long_lived.expose(), day_later, &admins).await.unwrap().unwrap();
        assert!(!old.grants.organization_admin, "the groups it carries are a day old");
        assert_eq!(old.grants.roles, [("payments".to_owned(), Role::Approver)], "its team roles stay");

        let forged = format!("{PERSONAL_PREFIX}{}_{}", kept.id, "not-the-secret");
        assert!(matches!(personal(&store, &forged, now, &[]).await, Err(Unauthenticated::Wrong)));
        assert!(personal(&store, "bsa_0123456789abcdef_x", now, &[]).await.unwrap().is_none(), "not a personal token");
        let late = now + std::time::Duration::from_secs(61);
        let expired = personal(&store, good.expose(), late, &[]).await.unwrap_err();
        assert_eq!(expired.to_string(), "the personal token of Alice has expired");
        store.revoke_personal_token(Some("alice"), &kept.id, now).await.unwrap();
        let revoked = personal(&store, good.expose(), now, &[]).await.unwrap_err();
        assert_eq!(revoked.to_string(), "the personal token of Alice was revoked");
    }

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
