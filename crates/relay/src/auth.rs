//! Who may do what: client credentials, the bearer tokens issued for them,
//! and the admin token.
//!
//! Secrets are random 256-bit strings, stored only as SHA-256 hashes (a slow
//! password hash adds nothing for secrets this long). Tokens are stateless:
//! a JSON claim set signed with HMAC-SHA256 under a key kept in the store, so
//! every relay replica accepts every other's tokens.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use borealis_core::Secret;
pub use borealis_core::secret::{random_bytes, write_private};
use std::sync::Arc;

use borealis_store::{Credential, CredentialKind, CredentialStore, SettingStore, StoreError};
use ring::{digest, hmac};
use serde::{Deserialize, Serialize};

/// Tokens live this long, as the callback contract says.
pub const TOKEN_TTL: Duration = Duration::from_secs(86_400);

const SIGNING_KEY_SETTING: &str = "token_signing_key";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("unknown client or wrong secret")]
    InvalidClient,
    #[error("the credential was revoked")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a verified token says about its bearer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// "agent" or "callback".
    pub kind: String,
    /// The agent identifier, or the callback client's name.
    pub sub: String,
    /// The team of the credential (tokens issued before teams: `default`).
    #[serde(default = "default_team")]
    pub team: String,
    pub client_id: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

fn default_team() -> String {
    borealis_store::DEFAULT_TEAM.to_owned()
}

impl Claims {
    pub fn is_agent(&self) -> bool {
        self.kind == CredentialKind::Agent.as_str()
    }

    /// The agent the token is for.
    pub fn agent(&self) -> borealis_core::team::AgentRef {
        borealis_core::team::AgentRef::new(self.team.clone(), self.sub.clone())
    }
}

pub struct Authority {
    store: Arc<dyn CredentialStore>,
    signing: hmac::Key,
    /// HMACs, under a per-process key, of the SHA-256 of each admin token
    /// this replica accepts: comparing tags with `hmac::verify` is
    /// constant-time.
    admin_check: hmac::Key,
    admin_tags: Vec<hmac::Tag>,
    /// The SHA-256 of each admin token this replica takes, as HMAC keys:
    /// console sessions are sealed with the one they were signed in with.
    admin_seal_keys: Vec<hmac::Key>,
    /// Credentials found live lately, by client id, and when: a callback
    /// then costs no read. Cleared on every revocation here or announced by
    /// another replica, and trusted for [`LIVE_FOR`] at most in any case.
    live: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// The clock peer tags expire on: the database's, which replicas share.
    clock: Arc<borealis_engine::clock::Skew>,
}

/// The longest a credential found live is trusted without reading it again.
const LIVE_FOR: Duration = Duration::from_secs(1);

/// The setting that holds the SHA-256 of the admin token replicas share.
pub const ADMIN_TOKEN_HASH_SETTING: &str = "admin_token_sha256";

impl Authority {
    /// `admin_token` is this replica's own (configured, or from its data
    /// dir); `shared_hash` the SHA-256 of the one recorded in a database
    /// replicas share. A presented token matching either is the admin's.
    /// `settings` keeps the key tokens are signed with, which replicas share.
    pub async fn new(
        store: Arc<dyn CredentialStore>,
        settings: &dyn SettingStore,
        admin_token: Option<&Secret>,
        shared_hash: Option<&[u8]>,
    ) -> Result<Self, AuthError> {
        let key = settings.setting_or_init(SIGNING_KEY_SETTING, random_bytes(32)).await?;
        let admin_check = hmac::Key::new(hmac::HMAC_SHA256, &random_bytes(32));
        let hashes: Vec<Vec<u8>> =
            admin_token.map(admin_token_hash).into_iter().chain(shared_hash.map(<[u8]>::to_vec)).collect();
        let admin_tags = hashes.iter().map(|hash| hmac::sign(&admin_check, hash)).collect();
        let admin_seal_keys = hashes.iter().map(|hash| hmac::Key::new(hmac::HMAC_SHA256, hash)).collect();
        Ok(Self {
            store,
            signing: hmac::Key::new(hmac::HMAC_SHA256, &key),
            admin_check,
            admin_tags,
            admin_seal_keys,
            live: Default::default(),
            clock: Arc::default(),
        })
    }

    /// The database's clock against this machine's, as this replica's
    /// heartbeat measures it.
    pub fn clock(&self) -> Arc<borealis_engine::clock::Skew> {
        self.clock.clone()
    }

    /// The key replicas sign their requests to each other with.
    pub fn peer_key(&self) -> PeerKey {
        PeerKey(self.signing.clone(), self.clock.clone())
    }

    pub fn is_admin(&self, presented: &str) -> bool {
        let hash = admin_token_hash(&Secret::new(presented));
        // Every tag is checked, so the time taken says nothing about which matched.
        self.admin_tags
            .iter()
            .fold(false, |found, tag| hmac::verify(&self.admin_check, &hash, tag.as_ref()).is_ok() | found)
    }

    /// The seal of console session `session_id` signed in with admin token
    /// `token`: an HMAC of the id keyed by the token's SHA-256. Stored with
    /// the session; without the id (which only the cookie holds) it says
    /// nothing about the token.
    pub fn console_seal(&self, token: &Secret, session_id: &str) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &admin_token_hash(token));
        hmac::sign(&key, console_sealed(session_id).as_bytes()).as_ref().to_vec()
    }

    /// Whether `seal` is session `session_id`'s under an admin token this
    /// replica still takes (a session signed in with an old token has ended).
    pub fn console_seal_holds(&self, seal: &[u8], session_id: &str) -> bool {
        let sealed = console_sealed(session_id);
        self.admin_seal_keys.iter().fold(false, |found, key| hmac::verify(key, sealed.as_bytes(), seal).is_ok() | found)
    }

    /// The CSRF token of console session `session_id`: its HMAC under the
    /// key replicas share, apart from tokens by its prefix.
    pub fn console_csrf(&self, session_id: &str) -> String {
        self.tag("console-csrf", session_id)
    }

    /// Whether `presented` is session `session_id`'s CSRF token (in constant time).
    pub fn console_csrf_matches(&self, session_id: &str, presented: &str) -> bool {
        self.tag_holds("console-csrf", session_id, presented)
    }

    /// The seal of a person's console session: a tag of its id under the
    /// key replicas share (a person has no admin token to key it).
    pub fn person_seal(&self, session_id: &str) -> Vec<u8> {
        self.tag("console-person", session_id).into_bytes()
    }

    /// Whether `seal` is person session `session_id`'s.
    pub fn person_seal_holds(&self, seal: &[u8], session_id: &str) -> bool {
        std::str::from_utf8(seal).is_ok_and(|tag| self.tag_holds("console-person", session_id, tag))
    }

    /// A tag of `data` for `purpose` under the key replicas share (URL-safe).
    pub fn tag(&self, purpose: &str, data: &str) -> String {
        B64.encode(hmac::sign(&self.signing, format!("{purpose}\n{data}").as_bytes()).as_ref())
    }

    /// Whether `tag` is [`Authority::tag`] of `data` for `purpose`.
    pub fn tag_holds(&self, purpose: &str, data: &str, tag: &str) -> bool {
        B64.decode(tag)
            .is_ok_and(|tag| hmac::verify(&self.signing, format!("{purpose}\n{data}").as_bytes(), &tag).is_ok())
    }

    /// Creates a credential in `team`; the secret is returned once and never stored.
    pub async fn create_credential(
        &self,
        kind: CredentialKind,
        team: &str,
        subject: &str,
    ) -> Result<(String, Secret), AuthError> {
        let prefix = match kind {
            CredentialKind::Agent => "agt",
            CredentialKind::Callback => "cbk",
        };
        let client_id = format!("{prefix}_{}", B64.encode(random_bytes(12)));
        let secret = Secret::new(format!("bsk_{}", B64.encode(random_bytes(32))));
        self.store.create_credential(kind, team, subject, &client_id, &hash_secret(&secret)).await?;
        Ok((client_id, secret))
    }

    /// Checks client credentials and issues a token for them.
    pub async fn issue_token(&self, client_id: &str, secret: &Secret) -> Result<(String, Credential), AuthError> {
        let credential = self.store.credential(client_id).await?.ok_or(AuthError::InvalidClient)?;
        let presented = hash_secret(secret);
        // Constant-time comparison of the two digests.
        let ok = hmac::verify(&self.signing, &credential.secret_hash, hmac::sign(&self.signing, &presented).as_ref())
            .is_ok();
        if !ok {
            return Err(AuthError::InvalidClient);
        }
        if !credential.is_active() {
            return Err(AuthError::Revoked);
        }
        let claims = Claims {
            kind: credential.kind.as_str().to_owned(),
            sub: credential.subject.clone(),
            team: credential.team.clone(),
            client_id: credential.client_id.clone(),
            exp: unix_secs(SystemTime::now() + TOKEN_TTL),
        };
        Ok((self.sign(&claims), credential))
    }

    fn sign(&self, claims: &Claims) -> String {
        let payload = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let tag = hmac::sign(&self.signing, payload.as_bytes());
        format!("{payload}.{}", B64.encode(tag.as_ref()))
    }

    /// Verifies signature and expiry. Revocation is checked by the caller
    /// where it matters (session start), via [`Authority::ensure_active`].
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let (payload, tag) = token.split_once('.').ok_or(AuthError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| AuthError::Malformed)?;
        hmac::verify(&self.signing, payload.as_bytes(), &tag).map_err(|_| AuthError::BadSignature)?;
        let claims: Claims = serde_json::from_slice(&B64.decode(payload).map_err(|_| AuthError::Malformed)?)
            .map_err(|_| AuthError::Malformed)?;
        if claims.exp <= unix_secs(SystemTime::now()) {
            return Err(AuthError::Expired);
        }
        Ok(claims)
    }

    /// Forgets which credentials were found live: one was revoked.
    pub fn forget_live(&self) {
        self.live.lock().expect("live lock").clear();
    }

    /// Fails unless the token's credential is still live.
    pub async fn ensure_active(&self, claims: &Claims) -> Result<(), AuthError> {
        if self.live.lock().expect("live lock").get(&claims.client_id).is_some_and(|at| at.elapsed() < LIVE_FOR) {
            return Ok(());
        }
        let asked_at = std::time::Instant::now();
        match self.store.credential(&claims.client_id).await? {
            Some(credential) if credential.is_active() => {
                let mut live = self.live.lock().expect("live lock");
                // Bounded by the credentials that exist: stale entries go.
                if live.len() > 10_000 {
                    live.retain(|_, at| at.elapsed() < LIVE_FOR);
                }
                live.insert(claims.client_id.clone(), asked_at);
                Ok(())
            }
            Some(_) => Err(AuthError::Revoked),
            None => Err(AuthError::InvalidClient),
        }
    }
}

/// What replicas prove themselves to each other with: a tag under the
/// token signing key every replica of one database shares, bound to one
/// hop: who sends it, to which replica, the method, the agent and the URL,
/// and a random value the receiver accepts once, for a few seconds.
#[derive(Clone)]
pub struct PeerKey(hmac::Key, Arc<borealis_engine::clock::Skew>);

/// How long a peer tag is good for: one request's start.
pub const PEER_TAG_TTL: Duration = Duration::from_secs(10);

/// The one request a peer tag is for.
pub struct PeerHop<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub method: &'a str,
    pub agent: &'a str,
    pub url: &'a str,
}

/// What a verified peer tag says: its sender, its single-use value and
/// when it expires (seconds since the epoch).
pub struct PeerTag {
    pub from: String,
    pub nonce: String,
    pub expires: u64,
}

impl PeerKey {
    /// `peer:<expiry>.<nonce>.<from>.<mac>`, the MAC over that and the hop.
    pub fn mint(&self, hop: &PeerHop<'_>) -> String {
        let payload = format!(
            "peer:{}.{}.{}",
            unix_secs(self.1.now() + PEER_TAG_TTL),
            B64.encode(random_bytes(16)),
            B64.encode(hop.from)
        );
        format!("{payload}.{}", B64.encode(self.mac(&payload, hop).as_ref()))
    }

    fn mac(&self, payload: &str, hop: &PeerHop<'_>) -> hmac::Tag {
        let signed = [payload, hop.to, hop.method, hop.agent, hop.url].join("\n");
        hmac::sign(&self.0, signed.as_bytes())
    }

    /// The tag's sender and single-use value, if it verifies for this hop
    /// (`hop.from` is ignored: the tag says it) and has not expired.
    pub fn verify(&self, presented: &str, hop: &PeerHop<'_>) -> Result<PeerTag, AuthError> {
        let (payload, tag) = presented.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let tag = B64.decode(tag).map_err(|_| AuthError::Malformed)?;
        let signed = [payload, hop.to, hop.method, hop.agent, hop.url].join("\n");
        hmac::verify(&self.0, signed.as_bytes(), &tag).map_err(|_| AuthError::BadSignature)?;
        let mut parts = payload.strip_prefix("peer:").ok_or(AuthError::Malformed)?.splitn(3, '.');
        let (Some(expiry), Some(nonce), Some(from)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Malformed);
        };
        let expires = expiry.parse::<u64>().map_err(|_| AuthError::Malformed)?;
        if expires <= unix_secs(self.1.now()) {
            return Err(AuthError::Expired);
        }
        let from =
            String::from_utf8(B64.decode(from).map_err(|_| AuthError::Malformed)?).map_err(|_| AuthError::Malformed)?;
        Ok(PeerTag { from, nonce: nonce.to_owned(), expires })
    }
}

/// The single-use values of peer tags seen lately, so a tag seen on the
/// wire cannot be sent again. Bounded: past [`PeerNonces::MAX`] unexpired
/// values, new tags are refused until some expire.
#[derive(Default)]
pub struct PeerNonces(std::sync::Mutex<std::collections::HashMap<String, u64>>);

impl PeerNonces {
    pub const MAX: usize = 200_000;

    /// Records `tag`'s value; false if it was seen before (or no room is
    /// left). `now` by the clock tags expire on.
    pub fn first_use(&self, tag: &PeerTag, now: SystemTime) -> bool {
        let mut seen = self.0.lock().expect("nonces lock");
        if seen.len() >= Self::MAX {
            let now = unix_secs(now);
            seen.retain(|_, expires| *expires > now);
            if seen.len() >= Self::MAX {
                return false;
            }
        }
        seen.insert(tag.nonce.clone(), tag.expires).is_none()
    }
}

fn console_sealed(session_id: &str) -> String {
    format!("console-session\n{session_id}")
}

/// `Bearer <token>` from a header value.
pub fn bearer(value: Option<&http::HeaderValue>) -> Option<&str> {
    let value = value?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The SHA-256 of an admin token, as replicas record it.
pub fn admin_token_hash(token: &Secret) -> Vec<u8> {
    hash_secret(token)
}

fn hash_secret(secret: &Secret) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.expose().as_bytes()).as_ref().to_vec()
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The admin token: from configuration, else `<data-dir>/admin-token`,
/// created (mode 0600) on first start.
pub fn load_or_create_admin_token(data_dir: &Path, configured: Option<&Secret>) -> std::io::Result<Secret> {
    if let Some(token) = configured {
        return Ok(token.clone());
    }
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(Secret::new(text.trim())),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let token = Secret::new(format!("bat_{}", B64.encode(random_bytes(32))));
    write_private(&path, token.expose().as_bytes())?;
    tracing::info!(path = %path.display(), "created the admin token");
    Ok(token)
}

/// Whether `a` and `b` are equal, in time that does not depend on where they differ.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Agent identifiers and client names: 1 to 63 of letters, digits, `.`, `_`, `-`.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {name:?}: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn authority() -> Authority {
        let store = Arc::new(borealis_store::SqliteStore::open("sqlite::memory:").await.unwrap());
        Authority::new(store.clone(), store.as_ref(), Some(&Secret::new("admin-token-for-tests")), None).await.unwrap()
    }

    #[tokio::test]
    async fn tokens_expire_and_cannot_be_altered() {
        let auth = authority().await;
        let (client_id, secret) = auth.create_credential(CredentialKind::Callback, "default", "ci").await.unwrap();
        let (token, _) = auth.issue_token(&client_id, &secret).await.unwrap();
        assert_eq!(auth.verify(&token).unwrap().sub, "ci");

        let expired = Claims {
            kind: "callback".into(),
            sub: "ci".into(),
            team: "default".into(),
            client_id: client_id.clone(),
            exp: 1,
        };
        assert!(matches!(auth.verify(&auth.sign(&expired)), Err(AuthError::Expired)));

        let (payload, tag) = token.split_once('.').unwrap();
        let mut forged: Claims = serde_json::from_slice(&B64.decode(payload).unwrap()).unwrap();
        forged.kind = "agent".into();
        let forged = format!("{}.{tag}", B64.encode(serde_json::to_vec(&forged).unwrap()));
        assert!(matches!(auth.verify(&forged), Err(AuthError::BadSignature)));
        assert!(matches!(auth.verify("garbage"), Err(AuthError::Malformed)));
    }

    #[tokio::test]
    async fn a_peer_tag_is_for_one_hop_once() {
        let auth = authority().await;
        let key = auth.peer_key();
        let hop = PeerHop { from: "a/1", to: "b/2", method: "POST", agent: "rna", url: "http://10.0.0.1/x" };
        let tag = key.mint(&hop);
        let verified = key.verify(&tag, &hop).unwrap();
        assert_eq!(verified.from, "a/1");
        for other in [
            PeerHop { to: "c/3", ..hop },
            PeerHop { method: "GET", ..hop },
            PeerHop { agent: "other", ..hop },
            PeerHop { url: "http://10.0.0.1/y", ..hop },
        ] {
            assert!(matches!(key.verify(&tag, &other), Err(AuthError::BadSignature)), "a tag for another hop");
        }
        let nonces = PeerNonces::default();
        let now = SystemTime::now();
        assert!(nonces.first_use(&verified, now));
        assert!(!nonces.first_use(&key.verify(&tag, &hop).unwrap(), now), "a replay is refused");
        assert!(nonces.first_use(&key.verify(&key.mint(&hop), &hop).unwrap(), now), "a new tag is not");
        assert!(matches!(key.verify("garbage", &hop), Err(AuthError::Malformed)));
    }

    #[tokio::test]
    async fn wrong_and_revoked_secrets_get_no_token() {
        let auth = authority().await;
        let (client_id, secret) = auth.create_credential(CredentialKind::Agent, "default", "rna").await.unwrap();
        assert!(matches!(auth.issue_token(&client_id, &Secret::new("wrong")).await, Err(AuthError::InvalidClient)));
        assert!(matches!(auth.issue_token("nobody", &secret).await, Err(AuthError::InvalidClient)));
        auth.store.revoke(CredentialKind::Agent, "default", "rna").await.unwrap();
        assert!(matches!(auth.issue_token(&client_id, &secret).await, Err(AuthError::Revoked)));
        assert!(auth.is_admin("admin-token-for-tests") && !auth.is_admin("admin-token-for-test"));
    }
}
