//! A person's own tokens (`bpt_`): made at the CLI's sign-in or in the
//! console, listed and revoked by their person, and by an organization
//! admin for anyone (a leaked token). Only a hash of each is kept.

use std::time::{Duration, SystemTime};

use borealis_core::Secret;
use borealis_store::{IdentityStore, Person, PersonalToken, StoreError};

use super::principal::{self, Principal};

/// How long a token made at the CLI's sign-in is good for.
pub const SIGN_IN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The longest a token made in the console may be good for.
pub const MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// The most live tokens one person may hold: each is a way in, and a
/// person who needs more has forgotten to revoke some.
pub const MAX_LIVE: usize = 50;
/// The longest description.
const MAX_DESCRIPTION_CHARS: usize = 100;
/// The most tokens a listing shows.
pub const LIST_LIMIT: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum PersonalError {
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{name} has {MAX_LIVE} live personal tokens, the most one person may hold: revoke one first \
         (borealis personal-tokens revoke ID)"
    )]
    TooMany { name: String },
    /// Not the caller's, or none at all: the two are not told apart.
    #[error("no live personal token {0:?} of yours")]
    NotFound(String),
    #[error("only an organization admin may see every person's personal tokens")]
    NotOrganizationAdmin,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new token for `person`, good for `lifetime`, kept (as a hash); the
/// token itself is returned this once.
pub async fn issue(
    store: &dyn IdentityStore,
    person: &Person,
    description: &str,
    lifetime: Duration,
    now: SystemTime,
) -> Result<(Secret, PersonalToken), PersonalError> {
    let description = description.trim();
    if description.is_empty() || description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(PersonalError::Invalid(format!(
            "a personal token's description says what it is for, in 1 to {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    if description.chars().any(char::is_control) {
        return Err(PersonalError::Invalid("a personal token's description cannot hold control characters".into()));
    }
    if lifetime.is_zero() || lifetime > MAX_LIFETIME {
        return Err(PersonalError::Invalid(
            "a personal token is good for at least a minute and at most 90 days".into(),
        ));
    }
    let held = store.personal_tokens(Some(&person.subject), LIST_LIMIT).await?;
    if held.iter().filter(|token| is_live(token, now)).count() >= MAX_LIVE {
        return Err(PersonalError::TooMany { name: person.name.clone() });
    }
    let id = principal::new_id();
    let (token, secret_hash) = principal::mint_personal(&id);
    let kept = PersonalToken {
        id,
        person: person.clone(),
        description: description.to_owned(),
        secret_hash,
        created_at: now,
        expires_at: now + lifetime,
        revoked_at: None,
    };
    store.create_personal_token(&kept).await?;
    Ok((token, kept))
}

pub fn is_live(token: &PersonalToken, now: SystemTime) -> bool {
    token.revoked_at.is_none() && now < token.expires_at
}

/// The caller's own tokens, newest first; with `everyone`, every person's
/// (an organization admin's). The admin token, no person, sees everyone's.
pub async fn list(
    store: &dyn IdentityStore,
    caller: &Principal,
    everyone: bool,
) -> Result<Vec<PersonalToken>, PersonalError> {
    let subject = whose(caller, everyone)?;
    Ok(store.personal_tokens(subject, LIST_LIMIT).await?)
}

/// Revokes token `id`: the caller's own, or for an organization admin
/// anyone's. Returns it as it is now.
pub async fn revoke(
    store: &dyn IdentityStore,
    caller: &Principal,
    id: &str,
    now: SystemTime,
) -> Result<PersonalToken, PersonalError> {
    let subject = whose(caller, caller.grants.organization_admin)?;
    let not_found = || PersonalError::NotFound(id.chars().take(64).collect());
    if !store.revoke_personal_token(subject, id, now).await? {
        return Err(not_found());
    }
    store.personal_token(id).await?.ok_or_else(not_found)
}

/// Whose tokens a caller reaches: a person's own (`Some`), or with
/// `everyone` every person's (`None`, an organization admin's).
fn whose(caller: &Principal, everyone: bool) -> Result<Option<&str>, PersonalError> {
    // The admin token is no person: it reaches everyone's or nothing.
    if everyone || !caller.grants.person {
        return if caller.grants.organization_admin { Ok(None) } else { Err(PersonalError::NotOrganizationAdmin) };
    }
    Ok(Some(caller.actor.id.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(subject: &str) -> Person {
        Person { subject: subject.into(), name: subject.to_uppercase(), groups: Vec::new() }
    }

    async fn signed(store: &dyn IdentityStore, who: &Person, admin_groups: &[String]) -> Principal {
        principal::person(store, who, admin_groups).await.unwrap()
    }

    /// A person reaches their own tokens only; an organization admin
    /// reaches everyone's; a person holds at most [`MAX_LIVE`] live ones.
    #[tokio::test]
    async fn a_person_reaches_their_own_tokens_and_an_organization_admin_everyones() {
        let store = borealis_store::SqliteStore::open("sqlite::memory:").await.unwrap();
        let now = SystemTime::now();
        let (ada, bob) = (person("ada"), person("bob"));
        let (_, adas) = issue(&store, &ada, "laptop", Duration::from_secs(3600), now).await.unwrap();
        let (_, bobs) = issue(&store, &bob, "ci", Duration::from_secs(3600), now).await.unwrap();
        assert_eq!(adas.description, "laptop");

        let ada_signed = signed(&store, &ada, &[]).await;
        let mine = list(&store, &ada_signed, false).await.unwrap();
        assert_eq!(mine.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [adas.id.as_str()]);
        assert!(matches!(list(&store, &ada_signed, true).await, Err(PersonalError::NotOrganizationAdmin)));
        let refused = revoke(&store, &ada_signed, &bobs.id, now).await.unwrap_err();
        assert!(matches!(refused, PersonalError::NotFound(_)), "another's token is as none: {refused}");

        let mut admin_person = person("root");
        admin_person.groups = vec!["platform".into()];
        let admin = signed(&store, &admin_person, &["platform".to_owned()]).await;
        assert!(admin.grants.organization_admin, "a person in an admin group is an organization admin");
        assert_eq!(list(&store, &admin, true).await.unwrap().len(), 2);
        let revoked = revoke(&store, &admin, &bobs.id, now).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        let token_holder = Principal::admin();
        assert_eq!(list(&store, &token_holder, false).await.unwrap().len(), 2, "the admin token sees everyone's");

        let bad = issue(&store, &ada, " ", Duration::from_secs(60), now).await.unwrap_err();
        assert!(bad.to_string().contains("description"), "{bad}");
        let long = issue(&store, &ada, "x", MAX_LIFETIME + Duration::from_secs(1), now).await.unwrap_err();
        assert!(long.to_string().contains("at most 90 days"), "{long}");
        for n in 1..MAX_LIVE {
            issue(&store, &ada, &format!("t{n}"), Duration::from_secs(60), now).await.unwrap();
        }
        let too_many = issue(&store, &ada, "one more", Duration::from_secs(60), now).await.unwrap_err();
        assert!(too_many.to_string().starts_with("ADA has 50 live personal tokens"), "{too_many}");
        revoke(&store, &ada_signed, &adas.id, now).await.unwrap();
        issue(&store, &ada, "one more", Duration::from_secs(60), now).await.expect("room again after a revocation");
    }
}
