//! The machine's PostgreSQL for tests (`BOREALIS_TEST_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`): each test in a schema
//! of its own.

/// The server's URL.
pub fn server_url() -> String {
    std::env::var("BOREALIS_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn psql(sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([&server_url(), "-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .output()
        .expect("psql (PostgreSQL's client) runs");
    assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A fresh schema of the test server's database, dropped when the test ends.
pub struct Schema(String);

impl Default for Schema {
    fn default() -> Self {
        Self::new()
    }
}

impl Schema {
    pub fn new() -> Self {
        let name = format!("relay_{}", uuid::Uuid::new_v4().simple());
        psql(&format!("CREATE SCHEMA {name}"));
        Self(name)
    }

    /// The relay's `--database-url`: the server, with this schema first on the search path.
    pub fn database_url(&self) -> String {
        let separator = if server_url().contains('?') { '&' } else { '?' };
        format!("{}{separator}options=-c%20search_path%3D{}", server_url(), self.0)
    }

    pub fn count(&self, table: &str) -> u64 {
        psql(&format!("SELECT count(*) FROM {}.{table}", self.0)).parse().unwrap()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([&server_url(), "-qc", &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0)])
            .output();
    }
}
