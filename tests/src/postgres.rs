//! The machine's PostgreSQL for tests (`BOREALIS_TEST_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`): each test in a schema
//! of its own.

/// The server's URL.
pub fn server_url() -> String {
    std::env::var("BOREALIS_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Runs `sql` with `psql`; returns the rows it printed, trimmed (`-q`:
/// no command tags such as `SET`, so a count reads as just the number).
pub fn psql(sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([&server_url(), "-q", "-v", "ON_ERROR_STOP=1", "-tAc", sql])
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

    /// Runs `sql` with this schema first on the search path; what it printed.
    pub fn sql(&self, sql: &str) -> String {
        psql(&format!("SET search_path TO {}; {sql}", self.0))
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

/// A TCP relay between one relay process and the database that the test
/// can cut (every connection closed, new ones refused at once) and
/// restore: a replica losing its database while the others keep theirs.
pub struct Cuttable {
    pub addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: std::sync::Arc<std::sync::Mutex<tokio_util::sync::CancellationToken>>,
}

impl Cuttable {
    /// Starts relaying 127.0.0.1:PORT to the test database's server.
    pub async fn start() -> Self {
        use std::sync::atomic::Ordering;
        let server = url::Url::parse(&server_url()).expect("the database URL parses");
        let upstream = format!("{}:{}", server.host_str().unwrap_or("127.0.0.1"), server.port().unwrap_or(5432));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let cut = std::sync::Arc::new(std::sync::Mutex::new(tokio_util::sync::CancellationToken::new()));
        let (accepting, cutting) = (open.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let token = cutting.lock().unwrap().clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = token.cancelled() => {}
                    }
                });
            }
        });
        Self { addr, open, cut }
    }

    /// `url` (a database URL of the test server) through this relay.
    pub fn through(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("the database URL parses");
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.to_string()
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut token = self.cut.lock().unwrap();
        token.cancel();
        *token = tokio_util::sync::CancellationToken::new();
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
