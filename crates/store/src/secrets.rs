//! Secrets, stored encrypted; the key stays outside the store.

use std::time::SystemTime;

use borealis_core::template::Uses;

use crate::error::StoreError;

#[derive(Debug, Clone)]
pub struct EncryptedSecret {
    /// The team it belongs to; names are unique within a team.
    pub team: String,
    pub name: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub updated_at: SystemTime,
    /// Where it may be used (webhooks for one stored before secrets had uses).
    pub uses: Uses,
}

#[async_trait::async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Creates or replaces `team`'s secret `name`, marked for `uses`; without,
    /// a replaced secret keeps its marks and a new one is for webhooks.
    async fn put_secret_with_uses(
        &self,
        team: &str,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
        uses: Option<&Uses>,
    ) -> Result<(), StoreError>;
    /// [`SecretStore::put_secret_with_uses`] keeping the secret's marks.
    async fn put_secret(&self, team: &str, name: &str, nonce: &[u8], ciphertext: &[u8]) -> Result<(), StoreError> {
        self.put_secret_with_uses(team, name, nonce, ciphertext, None).await
    }
    /// Every team's, ordered by team, then name.
    async fn secrets(&self) -> Result<Vec<EncryptedSecret>, StoreError>;
    async fn delete_secret(&self, team: &str, name: &str) -> Result<bool, StoreError>;
}

/// A stored `uses` column; a use this version does not know is left out,
/// and none left reads as webhooks, as before secrets had uses.
pub(crate) fn read_uses(text: String) -> Uses {
    let uses: Uses = text.split(',').filter_map(|u| u.trim().parse().ok()).collect();
    if uses.is_empty() { borealis_core::template::SecretUse::default_uses() } else { uses }
}
