//! Choosing the backend by the database URL's scheme.

use std::path::Path;
use std::sync::Arc;

use crate::error::StoreError;
use crate::postgres::PostgresStore;
use crate::sqlite::SqliteStore;
use crate::store::Store;

/// The URL schemes [`open`] knows.
pub const SUPPORTED_SCHEMES: &[&str] = &["sqlite", "postgres", "postgresql"];

/// Opens the store `url` names, by its scheme; without a URL, SQLite's
/// `borealis.db` in `data_dir`. An unknown scheme is refused by name,
/// never echoing the URL (it may hold a password).
pub async fn open(url: Option<&str>, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    let Some(url) = url else { return Ok(Arc::new(SqliteStore::open_in(data_dir).await?)) };
    // RFC 3986: a letter, then letters, digits, `+`, `-` or `.`.
    let scheme = url.split_once(':').map(|(scheme, _)| scheme.to_ascii_lowercase()).filter(|scheme| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    match scheme.as_deref() {
        Some("sqlite") => Ok(Arc::new(SqliteStore::open(url).await?)),
        Some("postgres" | "postgresql") => Ok(Arc::new(PostgresStore::open(url).await?)),
        Some(scheme) => Err(StoreError::UnsupportedScheme { scheme: scheme.to_owned(), supported: SUPPORTED_SCHEMES }),
        None => Err(StoreError::InvalidUrl(format!(
            "a database URL starts with its scheme ({}:...)",
            SUPPORTED_SCHEMES.join(":..., ")
        ))),
    }
}
