//! A store that cannot take writes (its disk full) or cannot be reached
//! (its database link cut): every route answers 503 with `Retry-After`,
//! never 500, `/readyz` says so, and work resumes once the store is back.
//! Real relay processes, a real tmpfs and a real PostgreSQL.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use borealis_api::RunState;
use borealis_tests::postgres::{Cuttable, Schema};
use borealis_tests::process::OutputText;
use borealis_tests::{RelayOptions, RelayProcess, TempDir, eventually};

const ADMIN_TOKEN: &str = "store-faults-admin-token-0123456789";
const SECRET_KEY: &str = "c3RvcmUtZmF1bHRzLXNlY3JldC1rZXktMzItYnl0ZXM=";

/// A relay on the database at `args[0]` (then more arguments), with the
/// test's admin token and secret key.
fn relay(args: &[&str]) -> RelayProcess {
    let mut extra_args = vec!["--database-url".to_owned()];
    extra_args.extend(args.iter().map(|arg| (*arg).to_owned()));
    let env = [("BOREALIS_ADMIN_TOKEN", ADMIN_TOKEN), ("BOREALIS_SECRET_KEY", SECRET_KEY)];
    RelayProcess::start(RelayOptions {
        direct_allow: vec!["127.0.0.0/8".into()],
        extra_args,
        env: env.map(|(key, value)| (key.to_owned(), value.to_owned())).to_vec(),
        ..Default::default()
    })
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(borealis_tests::PATIENCE).build().unwrap()
}

/// A small tmpfs mounted for the test, unmounted when dropped (also when
/// the test fails); `umount -l` detaches it even while the relay still
/// holds its files open.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = TempDir::new("tmpfs");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount -t tmpfs (the test runs as root)");
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes `path` until the filesystem is full; returns how much it wrote.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(err) if err.raw_os_error() == Some(28) => break, // ENOSPC
            Err(err) => panic!("filling {}: {err}", path.display()),
        }
    }
    let _ = file.sync_all();
    written
}

/// A reply's status, `Retry-After` and `Borealis-Error`.
struct Reply {
    status: u16,
    retry_after: Option<String>,
    slug: Option<String>,
    body: String,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} retry-after={:?} slug={:?} {}", self.status, self.retry_after, self.slug, self.body)
    }
}

async fn reply(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("the relay answers");
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (retry_after, slug) = (header("retry-after"), header("borealis-error"));
    let status = response.status().as_u16();
    Reply { status, retry_after, slug, body: response.text().await.unwrap_or_default() }
}

/// 503, `Retry-After: 1`, the `store-unavailable` slug.
fn assert_unavailable(what: &str, reply: &Reply) {
    assert_eq!(reply.status, 503, "{what}: {reply:?}");
    assert_eq!(reply.retry_after.as_deref(), Some("1"), "{what}: {reply:?}");
    assert_eq!(reply.slug.as_deref(), Some("store-unavailable"), "{what}: {reply:?}");
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(base: &str) -> Self {
        Self { base: base.to_owned(), client: client() }
    }

    async fn put_secret(&self, name: &str, value: &str) -> Reply {
        reply(
            self.client
                .put(format!("{}/api/v1/secrets/{name}", self.base))
                .bearer_auth(ADMIN_TOKEN)
                .body(value.to_owned()),
        )
        .await
    }

    async fn start_run(&self, hook: &str) -> Reply {
        let body = serde_json::json!({
            "file": format!("webhooks:\n  - name: job\n    method: POST\n    uriTemplate: http://{hook}/hook\n    networkMode: direct\n    disableCallback: true\n"),
            "name": "job",
        });
        reply(self.client.post(format!("{}/api/v1/webhook-runs", self.base)).bearer_auth(ADMIN_TOKEN).json(&body)).await
    }

    async fn get(&self, path: &str) -> Reply {
        reply(self.client.get(format!("{}{path}", self.base)).bearer_auth(ADMIN_TOKEN)).await
    }

    async fn readyz(&self) -> Reply {
        reply(self.client.get(format!("{}/readyz", self.base))).await
    }
}

/// A destination that answers 200 at once.
async fn destination() -> std::net::SocketAddr {
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The relay's SQLite database on a tmpfs of 8 MiB, filled by another
/// file: writes answer 503 with `Retry-After` (never 500) and `/readyz`
/// is 503; once the file is gone the same writes pass and runs run.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_sqlite_disk_answers_503_and_work_resumes_when_space_returns() {
    let disk = Tmpfs::mount("8m");
    let database: PathBuf = disk.path().join("borealis.db");
    let relay = relay(&[&format!("sqlite://{}", database.display())]);
    let api = Api::new(&relay.http_url);
    let hook = destination().await;
    assert!(database.exists(), "the database is on the tmpfs");
    assert_eq!(api.put_secret("before", "v").await.status, 200);
    let run = api.start_run(&hook.to_string()).await;
    assert_eq!(run.status, 201, "{run:?}");
    assert_eq!(api.readyz().await.status, 200);

    let filler = disk.path().join("filler");
    let filled = fill(&filler);
    assert!(filled > 0, "the filler took the free space");
    // What the WAL already holds may take a few small writes; larger ones
    // need pages the disk no longer has. None may be a 500.
    let big = "x".repeat(64 * 1024);
    let mut refused = None;
    let mut stored = Vec::new();
    for i in 0..256 {
        let put = api.put_secret(&format!("s{i}"), &big).await;
        assert!(put.status == 200 || put.status == 503, "a full disk is never a {put:?}");
        if put.status == 503 {
            refused = Some(put);
            break;
        }
        stored.push(format!("s{i}"));
    }
    let refused = refused.expect("a write on a full disk is refused");
    assert_unavailable("PUT /api/v1/secrets on a full disk", &refused);
    let ready = api.readyz().await;
    assert_eq!(ready.status, 503, "/readyz on a full disk: {ready:?}");
    let mut runs_refused = false;
    for _ in 0..16 {
        let run = api.start_run(&hook.to_string()).await;
        assert!(run.status == 201 || run.status == 503, "a full disk is never a {run:?}");
        if run.status == 503 {
            assert_unavailable("POST /api/v1/webhook-runs on a full disk", &run);
            runs_refused = true;
            break;
        }
    }
    assert!(runs_refused, "a run cannot start on a full disk");
    // Reads still pass.
    assert_eq!(api.get("/api/v1/secrets").await.status, 200);

    std::fs::remove_file(&filler).unwrap();
    let again = eventually("a write passes once space returns", borealis_tests::PATIENCE, || async {
        let put = api.put_secret("after", "v").await;
        assert!(put.status == 200 || put.status == 503, "{put:?}");
        (put.status == 200).then_some(put)
    })
    .await;
    assert_eq!(again.status, 200);
    // The runs below render with every secret: keep the large ones out of them.
    for name in stored {
        let deleted = reply(api.client.delete(format!("{}/api/v1/secrets/{name}", api.base)).bearer_auth(ADMIN_TOKEN));
        assert_eq!(deleted.await.status, 200);
    }
    let run = api.start_run(&hook.to_string()).await;
    assert_eq!(run.status, 201, "{run:?}");
    let id = serde_json::from_str::<serde_json::Value>(&run.body).unwrap()["id"].as_str().unwrap().to_owned();
    let finished = relay.wait_run(&id).await;
    assert_eq!(finished.state, RunState::Succeeded, "{finished:#?}");
    eventually("/readyz is 200 again", Duration::from_secs(10), || async {
        (api.readyz().await.status == 200).then_some(())
    })
    .await;
    assert!(!relay.log().contains("internal error"), "no store error was logged as internal");
}

/// A relay on PostgreSQL whose link to the database is cut: admin routes,
/// the token endpoint, a callback and `agents list` answer 503 with
/// `Retry-After`, never 500; after the link is back they answer as before.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_store_out_of_reach_answers_503_on_every_route() {
    let schema = Schema::new();
    let link = Cuttable::start().await;
    let relay = relay(&[&link.through(&schema.database_url()), "--lease-duration", "3s"]);
    let api = Api::new(&relay.http_url);
    let (client_id, client_secret) = relay.create_client("ci");
    let (status, token) = borealis_tests::token_reply(&relay.http_url, &client_id, &client_secret).await;
    assert_eq!(status, 200, "{token}");
    let token = token["access_token"].as_str().unwrap().to_owned();
    let callback = |token: String| {
        let url = format!("{}/callbacks/no-such-run/callback", relay.http_url);
        async move { reply(client().post(url).bearer_auth(token).json(&serde_json::json!({"success": true}))).await }
    };
    assert_eq!(callback(token.clone()).await.status, 404, "with the store up, an unknown run");

    link.cut();
    let token_endpoint = || async {
        reply(client().post(format!("{}/oauth/token", relay.http_url)).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.as_str()),
        ]))
        .await
    };
    let checks: Vec<(&str, Reply)> = vec![
        ("PUT /api/v1/secrets/x", api.put_secret("x", "v").await),
        ("GET /api/v1/agents", api.get("/api/v1/agents").await),
        ("GET /api/v1/secrets", api.get("/api/v1/secrets").await),
        ("GET /api/v1/webhook-runs", api.get("/api/v1/webhook-runs").await),
        ("POST /api/v1/webhook-runs", api.start_run("127.0.0.1:9").await),
        ("POST /oauth/token", token_endpoint().await),
        ("POST <callbackUri>/callback", callback(token.clone()).await),
    ];
    for (what, reply) in &checks {
        assert_unavailable(what, reply);
    }
    let agents = relay.cli().args(["agents", "list"]).run_async().await;
    assert!(!agents.status.success(), "agents list without a database");
    let said = agents.stderr_text();
    assert!(said.contains("503") && !said.contains("500"), "agents list says the store is away: {said}");
    let ready = api.readyz().await;
    assert_eq!(ready.status, 503, "/readyz without a database: {ready:?}");

    link.restore();
    eventually("the routes answer again once the link is back", borealis_tests::PATIENCE, || async {
        (api.get("/api/v1/agents").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(api.put_secret("x", "v").await.status, 200);
    assert_eq!(token_endpoint().await.status, 200);
    assert_eq!(callback(token.clone()).await.status, 404);
    assert!(!relay.log().contains("internal error"), "no store error was logged as internal");
}
