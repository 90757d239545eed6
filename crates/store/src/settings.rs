//! Settings shared by every relay replica (the token signing key, ...).

use crate::error::StoreError;

#[async_trait::async_trait]
pub trait SettingStore: Send + Sync + 'static {
    /// Reads a setting, first storing `init` if it is absent; the first writer wins.
    async fn setting_or_init(&self, key: &str, init: Vec<u8>) -> Result<Vec<u8>, StoreError>;
    /// Reads a setting, if it was stored.
    async fn setting(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
}
