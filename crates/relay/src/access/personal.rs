//! A person's own tokens (`bpt_`): made at the CLI's sign-in or in the
//! console, listed and revoked by their person, and by an organization
//! admin for anyone (a leaked token). Only a hash of each is kept.

use std::time::{Duration, SystemTime};

use borealis_core::Secret;
use borealis_store::{IdentityStore, Person, PersonalToken, StoreError};

use super::principal::{self, Principal};

pub use super::principal::SIGN_IN_LIFETIME;
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
    #[error("no live personal token {0:?} that you may revoke")]
    NotFound(String),
    #[error("only an organization admin may reach another person's personal tokens")]
    NotOrganizationAdmin,
    /// The admin token is no person: it names whose tokens it means.
    #[error("the admin token has no personal tokens of its own: name the person (person=SUBJECT)")]
    NoPerson,
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
    let live = store.personal_tokens(Some(&person.subject), Some(now), MAX_LIVE as u32).await?;
    if live.len() >= MAX_LIVE {
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

/// Which tokens a listing asks for.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Every person's (an organization admin's view).
    pub everyone: bool,
    /// One person's, by subject (an organization admin's, or one's own).
    pub person: Option<String>,
    /// Only those neither revoked nor expired.
    pub live_only: bool,
}

/// The tokens `listing` asks for, newest first, at most [`LIST_LIMIT`]: the
/// caller's own unless an organization admin asks for everyone's or a
/// person's. The admin token, no person, sees everyone's.
pub async fn list(
    store: &dyn IdentityStore,
    caller: &Principal,
    listing: &Listing,
    now: SystemTime,
) -> Result<Vec<PersonalToken>, PersonalError> {
    let subject = match (&listing.person, listing.everyone) {
        (Some(person), _) => Some(someones(caller, person)?),
        (None, everyone) => whose(caller, everyone)?,
    };
    Ok(store.personal_tokens(subject, listing.live_only.then_some(now), LIST_LIMIT).await?)
}

/// Revokes token `id`: the caller's own, or for an organization admin
/// anyone's. Returns it as it is now.
pub async fn revoke(
    store: &dyn IdentityStore,
    caller: &Principal,
    id: &str,
    now: SystemTime,
) -> Result<PersonalToken, PersonalError> {
    let not_found = || PersonalError::NotFound(id.chars().take(64).collect());
    // An id is 16 hex digits: anything else is no token, and not worth a query.
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    let subject = whose(caller, caller.grants.organization_admin)?;
    if !store.revoke_personal_token(subject, id, now).await? {
        return Err(not_found());
    }
    store.personal_token(id).await?.ok_or_else(not_found)
}

/// Revokes every live token of `person` (an organization admin, for one who
/// left or whose tokens leaked), or without one the caller's own; how many.
pub async fn revoke_all(
    store: &dyn IdentityStore,
    caller: &Principal,
    person: Option<&str>,
    now: SystemTime,
) -> Result<u64, PersonalError> {
    let subject = match person {
        Some(person) => someones(caller, person)?,
        None if caller.grants.person => caller.actor.id.as_str(),
        None => return Err(PersonalError::NoPerson),
    };
    Ok(store.revoke_personal_tokens_of(subject, now).await?)
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

/// `person`'s tokens, if the caller may reach them: their own, or an
/// organization admin's reach.
fn someones<'a>(caller: &Principal, person: &'a str) -> Result<&'a str, PersonalError> {
    if person.is_empty() || person.len() > 256 {
        return Err(PersonalError::Invalid("person names a subject of 1 to 256 bytes".into()));
    }
    let own = caller.grants.person && caller.actor.id == person;
    if own || caller.grants.organization_admin { Ok(person) } else { Err(PersonalError::NotOrganizationAdmin) }
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
        let everyone = Listing { everyone: true, ..Listing::default() };
        let mine = list(&store, &ada_signed, &Listing::default(), now).await.unwrap();
        assert_eq!(mine.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [adas.id.as_str()]);
        assert!(matches!(list(&store, &ada_signed, &everyone, now).await, Err(PersonalError::NotOrganizationAdmin)));
        let refused = revoke(&store, &ada_signed, &bobs.id, now).await.unwrap_err();
        assert!(matches!(refused, PersonalError::NotFound(_)), "another's token is as none: {refused}");

        let mut admin_person = person("root");
        admin_person.groups = vec!["platform".into()];
        let admin = signed(&store, &admin_person, &["platform".to_owned()]).await;
        assert!(admin.grants.organization_admin, "a person in an admin group is an organization admin");
        assert_eq!(list(&store, &admin, &everyone, now).await.unwrap().len(), 2);
        let revoked = revoke(&store, &admin, &bobs.id, now).await.unwrap();
        assert!(revoked.revoked_at.is_some());
        let token_holder = Principal::admin();
        assert_eq!(
            list(&store, &token_holder, &Listing::default(), now).await.unwrap().len(),
            2,
            "the admin token sees everyone's"
        );

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

    /// Live tokens listed alone, one person's for an admin, and a person's
    /// every live token revoked at once: their own, or anyone's by an admin.
    #[tokio::test]
    async fn an_admin_lists_and_revokes_a_persons_tokens_at_once() {
        let store = borealis_store::SqliteStore::open("sqlite::memory:").await.unwrap();
        let now = SystemTime::now();
        let (ada, bob) = (person("ada"), person("bob"));
        for n in 0..3 {
            issue(&store, &bob, &format!("bob {n}"), Duration::from_secs(3600), now).await.unwrap();
        }
        let (_, adas) = issue(&store, &ada, "laptop", Duration::from_secs(3600), now).await.unwrap();
        let ada_signed = signed(&store, &ada, &[]).await;
        let bobs = Listing { person: Some("bob".into()), live_only: true, ..Listing::default() };
        assert!(matches!(list(&store, &ada_signed, &bobs, now).await, Err(PersonalError::NotOrganizationAdmin)));
        assert!(matches!(
            revoke_all(&store, &ada_signed, Some("bob"), now).await,
            Err(PersonalError::NotOrganizationAdmin)
        ));
        let admin = Principal::admin();
        assert_eq!(list(&store, &admin, &bobs, now).await.unwrap().len(), 3);
        assert!(matches!(revoke_all(&store, &admin, None, now).await, Err(PersonalError::NoPerson)));
        assert_eq!(revoke_all(&store, &admin, Some("bob"), now).await.unwrap(), 3, "bob left");
        assert!(list(&store, &admin, &bobs, now).await.unwrap().is_empty(), "none live");
        let all_of_bobs = Listing { person: Some("bob".into()), ..Listing::default() };
        assert_eq!(list(&store, &admin, &all_of_bobs, now).await.unwrap().len(), 3, "revoked ones listed when asked");
        assert_eq!(revoke_all(&store, &ada_signed, None, now).await.unwrap(), 1, "her own");
        assert!(store.personal_token(&adas.id).await.unwrap().unwrap().revoked_at.is_some());
        let odd = revoke(&store, &admin, "../../etc", now).await.unwrap_err();
        assert!(matches!(odd, PersonalError::NotFound(_)), "{odd}");
    }
}
