//! Secrets, stored encrypted; the key stays outside the store.

use std::time::SystemTime;

use crate::error::StoreError;

#[derive(Debug, Clone)]
pub struct EncryptedSecret {
    pub name: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub updated_at: SystemTime,
}

#[async_trait::async_trait]
pub trait SecretStore: Send + Sync + 'static {
    /// Creates or replaces the secret `name`.
    async fn put_secret(&self, name: &str, nonce: &[u8], ciphertext: &[u8]) -> Result<(), StoreError>;
    /// Ordered by name.
    async fn secrets(&self) -> Result<Vec<EncryptedSecret>, StoreError>;
    async fn delete_secret(&self, name: &str) -> Result<bool, StoreError>;
}
