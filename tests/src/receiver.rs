//! A webhook receiver that verifies every call with Standard Webhooks'
//! reference library, the Python `standardwebhooks` package
//! (`fixtures/standard_webhooks_receiver.py`), as a receiver of Borealis's
//! calls would. The package missing is a failure, never a skip.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/standard_webhooks_receiver.py");

/// One call as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// For each secret the receiver holds: `Ok` when it alone verified the
    /// call, else the library's complaint.
    pub verdicts: BTreeMap<String, Result<(), String>>,
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

pub struct Receiver {
    child: Child,
    pub addr: SocketAddr,
}

impl Receiver {
    /// Starts a receiver holding `secrets`: `whsec_...`, or `raw:TEXT` for
    /// a key that is TEXT's bytes.
    pub fn start(secrets: &[&str]) -> Self {
        let check = Command::new("python3").args(["-c", "import standardwebhooks"]).output();
        match check {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "Standard Webhooks' reference library is missing ({}): install it with \
                 `python3 -m pip install standardwebhooks` (.ci/run does)",
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()
            ),
            Err(err) => panic!("python3 cannot be run ({err}): the signing tests need python3 with standardwebhooks"),
        }
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .args(secrets)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("receiver's port");
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the receiver did not start: {line:?}"));
        Self { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every call received so far, in order.
    pub async fn records(&self) -> Vec<Received> {
        let value: serde_json::Value =
            reqwest::get(self.url("/_records")).await.unwrap().json().await.expect("records as JSON");
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        value
            .as_array()
            .expect("a list")
            .iter()
            .map(|r| Received {
                method: text(&r["method"]),
                path: text(&r["path"]),
                headers: r["headers"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), text(v))).collect(),
                body: STANDARD.decode(text(&r["body_b64"])).unwrap(),
                verdicts: r["verdicts"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(secret, v)| (secret.clone(), if v["ok"] == true { Ok(()) } else { Err(text(&v["error"])) }))
                    .collect(),
                status: r["status"].as_u64().unwrap() as u16,
            })
            .collect()
    }

    /// Asks the library whether `body` with `headers` verifies under `secret`.
    pub async fn verify(&self, secret: &str, headers: &BTreeMap<String, String>, body: &[u8]) -> Result<(), String> {
        let asked = serde_json::json!({ "secret": secret, "headers": headers, "body_b64": STANDARD.encode(body) });
        let reply: serde_json::Value =
            reqwest::Client::new().post(self.url("/_verify")).json(&asked).send().await.unwrap().json().await.unwrap();
        if reply["ok"] == true { Ok(()) } else { Err(reply["error"].as_str().unwrap_or_default().to_owned()) }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
