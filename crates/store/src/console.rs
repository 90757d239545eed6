//! Console sessions: an operator signed in to the web console. Only a hash
//! of each session's id is kept, so the table alone signs no one in.

use std::time::SystemTime;

use crate::error::StoreError;

#[async_trait::async_trait]
pub trait ConsoleSessionStore: Send + Sync + 'static {
    /// Records a session that ends at `expires_at`, and forgets every
    /// session already expired at `now` (sign-ins are rare: the table stays small).
    async fn create_console_session(
        &self,
        id_hash: &[u8],
        now: SystemTime,
        expires_at: SystemTime,
    ) -> Result<(), StoreError>;
    /// When the session ends, if it exists and has not expired at `now`.
    async fn console_session(&self, id_hash: &[u8], now: SystemTime) -> Result<Option<SystemTime>, StoreError>;
    /// Ends a session (sign-out); false if there was none.
    async fn end_console_session(&self, id_hash: &[u8]) -> Result<bool, StoreError>;
}
