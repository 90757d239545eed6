//! The PostgreSQL server of the `cluster` scenario, reached with `psql`
//! (PostgreSQL's client): whether it answers, and a fresh schema per case,
//! so that no case sees the rows of another or of an earlier run.

use std::process::Command;

use anyhow::Context;

/// Runs `sql` on `server`; a server that does not answer within 5 s is an
/// error, not a hang.
pub fn psql(server: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([server, "--no-password", "-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .context("running psql (PostgreSQL's client)")?;
    anyhow::ensure!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Ok when the server answers a query; the error says why not.
pub fn reachable(server: &str) -> anyhow::Result<()> {
    psql(server, "SELECT 1").map(|_| ())
}

/// `server` without its password, for the report.
pub fn shown(server: &str) -> String {
    match url::Url::parse(server) {
        Ok(mut url) => {
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => "the --postgres-url given".to_owned(),
    }
}

/// A schema of its own on the server, dropped with this value: drop the
/// relays using it first, so that none holds a lock the drop waits for.
pub struct Schema {
    server: String,
    name: String,
}

impl Schema {
    /// `borealis_bench_<pid>_<label>`, empty.
    pub fn create(server: &str, label: &str) -> anyhow::Result<Self> {
        let name = format!("borealis_bench_{}_{label}", std::process::id());
        psql(server, &format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"))?;
        Ok(Self { server: server.to_owned(), name })
    }

    /// The relays' `--database-url`: the server, with this schema first on
    /// the search path.
    pub fn database_url(&self) -> String {
        let separator = if self.server.contains('?') { '&' } else { '?' };
        format!("{}{separator}options=-c%20search_path%3D{}", self.server, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let drop = format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        if let Err(err) = psql(&self.server, &drop) {
            eprintln!("schema {} left behind: {err:#}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_is_not_there_is_an_error_at_once() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let started = std::time::Instant::now();
        assert!(reachable(&format!("postgres://postgres@{closed}/test")).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "no hang on a dead server");
    }

    #[test]
    fn the_password_stays_out_of_the_report() {
        assert_eq!(shown("postgres://bench:hunter2@127.0.0.1:5432/test"), "postgres://bench@127.0.0.1:5432/test");
    }
}
