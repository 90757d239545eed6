//! Secrets for `{{secrets.NAME}}`: encrypted with AES-256-GCM under a key
//! that is not in the database: `<data-dir>/secret-key` (mode 0600) or the
//! `secret_key` setting. Each secret belongs to a team; its team and name are
//! bound in as associated data, so a ciphertext cannot be moved to another
//! name or team. Each secret is marked for the uses it may serve
//! ([`SecretUse`]); [`Vault::keyring`] gives one team's values with their
//! marks, as a [`Keyring`]. The scrubber masks every team's secrets.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use borealis_core::template::{Keyring, Uses};
use borealis_core::{Scrubber, Secret};
use borealis_store::{DEFAULT_TEAM, SecretStore, StoreError};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("secret {0:?} cannot be decrypted: the secret key changed, or the data was altered")]
    Undecryptable(String),
    #[error("secret key: {0}")]
    Key(String),
}

pub struct Vault {
    key: LessSafeKey,
    store: Arc<dyn SecretStore>,
    /// The scrubber of the last set of secrets seen, by a digest of them:
    /// building one costs far more than checking that the set is the same.
    scrubber: std::sync::Mutex<Option<(ring::digest::Digest, Arc<Scrubber>)>>,
    /// The secrets as last read, and when: every attempt and callback needs
    /// them. Dropped when a secret changes here, or another replica says
    /// one changed; read again at least every [`FRESH_FOR`] in any case.
    cached: std::sync::Mutex<Option<ReadAt>>,
    /// Counts changes, so a read that overlapped one is not kept.
    changes: std::sync::atomic::AtomicU64,
    /// The relay's own signing key (`webhook_signing_secret`): a secret of
    /// team `default` that signs every team's calls that have no key of
    /// their own; its name is reserved in every team's keyring.
    relay_key: Option<String>,
}

/// Every team's secrets as read, and when.
type ReadAt = (Arc<BTreeMap<String, Keyring>>, std::time::Instant);

/// The longest the secrets are used as read, without news of a change.
const FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(1);

impl Vault {
    /// The key from configuration (base64 of 32 bytes), else the key file,
    /// created on first start.
    pub fn open(store: Arc<dyn SecretStore>, data_dir: &Path, configured: Option<&Secret>) -> Result<Self, VaultError> {
        let bytes = match configured {
            Some(text) => B64
                .decode(text.expose().trim())
                .map_err(|e| VaultError::Key(format!("secret_key is not base64: {e}")))?,
            None => {
                let path = data_dir.join("secret-key");
                match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                        let bytes = borealis_core::secret::random_bytes(32);
                        borealis_core::secret::write_private(&path, &bytes)
                            .map_err(|e| VaultError::Key(format!("{}: {e}", path.display())))?;
                        bytes
                    }
                    Err(err) => return Err(VaultError::Key(format!("{}: {err}", path.display()))),
                }
            }
        };
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| VaultError::Key("it must be 32 bytes".into()))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            store,
            scrubber: std::sync::Mutex::default(),
            cached: std::sync::Mutex::default(),
            changes: std::sync::atomic::AtomicU64::new(0),
            relay_key: None,
        })
    }

    /// Names the relay's own signing key, which every team's calls without
    /// a key of their own are signed with.
    pub fn with_relay_key(mut self, name: Option<String>) -> Self {
        self.relay_key = name;
        self
    }

    /// Stores `value` as `team`'s secret `name`, marked for `uses`; without, a
    /// replaced secret keeps its marks and a new one is for webhooks.
    pub async fn set(&self, team: &str, name: &str, value: &Secret, uses: Option<&Uses>) -> Result<(), VaultError> {
        let nonce_bytes = borealis_core::secret::random_bytes(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&nonce_bytes).expect("nonce length");
        let mut data = value.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(nonce, Aad::from(bound_name(team, name).as_bytes()), &mut data)
            .map_err(|_| VaultError::Key("encryption failed".into()))?;
        self.store.put_secret_with_uses(team, name, &nonce_bytes, &data, uses).await?;
        self.forget();
        Ok(())
    }

    /// Drops the secrets as last read: one changed.
    pub fn forget(&self) {
        self.changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *self.cached.lock().expect("vault cache lock") = None;
    }

    /// `team`'s secrets, decrypted, with their marks; and the relay's own
    /// signing key, under its name, whatever the team.
    pub async fn keyring(&self, team: &str) -> Result<Keyring, VaultError> {
        let teams = self.every_team().await?;
        let mut keyring = teams.get(team).cloned().unwrap_or_default();
        if let Some(name) = &self.relay_key
            && team != DEFAULT_TEAM
        {
            keyring.remove(name);
            if let Some((value, uses)) = teams.get(DEFAULT_TEAM).and_then(|own| own.entry(name)) {
                keyring.insert(name.clone(), value.clone(), uses.clone());
            }
        }
        Ok(keyring)
    }

    /// Every team's secrets, by team, as last read (at most [`FRESH_FOR`] ago).
    async fn every_team(&self) -> Result<Arc<BTreeMap<String, Keyring>>, VaultError> {
        if let Some((secrets, at)) = self.cached.lock().expect("vault cache lock").as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return Ok(secrets.clone());
        }
        let (read_at, before) = (std::time::Instant::now(), self.changes.load(std::sync::atomic::Ordering::SeqCst));
        let secrets = Arc::new(self.read_all().await?);
        let mut cached = self.cached.lock().expect("vault cache lock");
        if self.changes.load(std::sync::atomic::Ordering::SeqCst) == before {
            *cached = Some((secrets.clone(), read_at));
        }
        Ok(secrets)
    }

    async fn read_all(&self) -> Result<BTreeMap<String, Keyring>, VaultError> {
        let mut out: BTreeMap<String, Keyring> = BTreeMap::new();
        for sealed in self.store.secrets().await? {
            let undecryptable = || VaultError::Undecryptable(shown_name(&sealed.team, &sealed.name));
            let nonce = Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| undecryptable())?;
            let mut data = sealed.ciphertext.clone();
            let plain = self
                .key
                .open_in_place(nonce, Aad::from(bound_name(&sealed.team, &sealed.name).as_bytes()), &mut data)
                .map_err(|_| undecryptable())?;
            let text = String::from_utf8(plain.to_vec()).map_err(|_| undecryptable())?;
            out.entry(sealed.team).or_default().insert(sealed.name, Secret::new(text), sealed.uses);
        }
        Ok(out)
    }

    /// `team`'s names, last-change times and marks; never values.
    pub async fn names(&self, team: &str) -> Result<Vec<(String, std::time::SystemTime, Uses)>, VaultError> {
        let secrets = self.store.secrets().await?;
        Ok(secrets.into_iter().filter(|s| s.team == team).map(|s| (s.name, s.updated_at, s.uses)).collect())
    }

    pub async fn delete(&self, team: &str, name: &str) -> Result<bool, VaultError> {
        let deleted = self.store.delete_secret(team, name).await?;
        self.forget();
        Ok(deleted)
    }
}

/// What a secret's ciphertext is bound to: its name, and its team's unless
/// that is `default` (as secrets were sealed before there were teams).
fn bound_name(team: &str, name: &str) -> String {
    if team == DEFAULT_TEAM { name.to_owned() } else { format!("{team}/{name}") }
}

/// A secret as errors name it.
fn shown_name(team: &str, name: &str) -> String {
    if team == DEFAULT_TEAM { name.to_owned() } else { format!("{name} (team {team})") }
}

/// The longest secret value taken: keys, tokens and certificate chains fit;
/// every value is masked in all its encodings in everything a call brings
/// back, which costs time with its length.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Secret names are what `{{secrets.NAME}}` can spell.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok { Ok(()) } else { Err(format!("invalid secret name {name:?}: use letters, digits, '_' and '-'")) }
}

impl Vault {
    /// A scrubber for every team's secrets: a reply may echo any of them.
    fn scrubber(&self, teams: &BTreeMap<String, Keyring>) -> Arc<Scrubber> {
        let secrets = || teams.values().flat_map(|keyring| keyring.iter());
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for (name, value) in secrets() {
            for part in [name.as_str(), value.expose()] {
                digest.update(&(part.len() as u64).to_le_bytes());
                digest.update(part.as_bytes());
            }
        }
        let digest = digest.finish();
        if let Some((seen, scrubber)) = self.scrubber.lock().expect("scrubber lock").as_ref()
            && seen.as_ref() == digest.as_ref()
        {
            return scrubber.clone();
        }
        // Built outside the lock: others keep the cached one meanwhile.
        let scrubber = Arc::new(Scrubber::new(secrets().map(|(_, value)| value)));
        *self.scrubber.lock().expect("scrubber lock") = Some((digest, scrubber.clone()));
        scrubber
    }

    /// A scrubber for every secret stored now, of every team.
    pub async fn current_scrubber(&self) -> Result<Arc<Scrubber>, VaultError> {
        let teams = self.every_team().await?;
        Ok(self.scrubber(&teams))
    }
}
