//! An external system as seed 003 describes one: it receives the webhook,
//! finds the callback URI (in a `Location` header or in the body), gets a
//! token with a plain form POST, and calls back with its verdict.
//!
//! The path decides what it does:
//! - `/pass...`: 202, then calls back `success: true`;
//! - `/fail...`: 202, then calls back `success: false`;
//! - `/silent...`: 202 and nothing more;
//! - `/hang...`: never answers (the test calls back itself);
//! - `/flaky/N...`: 503 for the first N requests, then as `/pass`;
//! - `/throttled/N...`: 429 with `Retry-After: 1` for the first N, then as `/pass`;
//! - `/reject...`: 403.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

/// One webhook call as the external system saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: String,
    pub callback_uri: Option<String>,
}

/// What a callback got back from the relay.
#[derive(Debug, Clone)]
pub struct CallbackReply {
    pub status: u16,
    pub body: String,
}

#[derive(Clone)]
pub struct External {
    relay_http: String,
    client_id: String,
    client_secret: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub callbacks: Arc<Mutex<Vec<CallbackReply>>>,
    flaky_seen: Arc<AtomicUsize>,
}

impl External {
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn callbacks(&self) -> Vec<CallbackReply> {
        self.callbacks.lock().unwrap().clone()
    }

    /// Gets a token as the seed's curl does: a plain form POST.
    pub async fn token(&self) -> String {
        let form =
            format!("grant_type=client_credentials&client_id={}&client_secret={}", self.client_id, self.client_secret);
        let reply = reqwest::Client::new()
            .post(format!("{}/oauth/token", self.relay_http))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "token request");
        reply.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
    }

    /// POSTs `body` to `<callback>` with a fresh token.
    pub async fn call_back(&self, callback: &str, body: serde_json::Value) -> CallbackReply {
        let token = self.token().await;
        let reply = reqwest::Client::new().post(callback).bearer_auth(token).json(&body).send().await.unwrap();
        let reply = CallbackReply { status: reply.status().as_u16(), body: reply.text().await.unwrap() };
        self.callbacks.lock().unwrap().push(reply.clone());
        reply
    }
}

/// The callback URI from a `Location` header, or the first
/// `"callbackUri": "..."` in the body (which need not be valid JSON).
fn find_callback(headers: &HeaderMap, body: &str) -> Option<String> {
    if let Some(location) = headers.get("location").and_then(|v| v.to_str().ok()) {
        return Some(location.to_owned());
    }
    let after = &body[body.find("callbackUri")? + "callbackUri".len()..];
    let start = after.find("http")?;
    let end = after[start..].find('"')? + start;
    Some(after[start..end].to_owned())
}

pub async fn start(relay_http: &str, client_id: &str, client_secret: &str) -> (SocketAddr, External) {
    let external = External {
        relay_http: relay_http.to_owned(),
        client_id: client_id.to_owned(),
        client_secret: client_secret.to_owned(),
        received: Arc::default(),
        callbacks: Arc::default(),
        flaky_seen: Arc::default(),
    };
    let router = Router::new().fallback(handle).with_state(external.clone());
    (crate::servers::serve(router).await, external)
}

async fn handle(State(external): State<External>, request: Request) -> impl IntoResponse {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let path = parts.uri.path().to_owned();
    let callback_uri = find_callback(&parts.headers, &body);
    external.received.lock().unwrap().push(Received {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body,
        callback_uri: callback_uri.clone(),
    });
    if path.starts_with("/hang") {
        std::future::pending::<()>().await;
    }
    let failing = |prefix: &str| {
        let failures: usize = path.strip_prefix(prefix)?.split('/').next()?.parse().ok()?;
        Some(external.flaky_seen.fetch_add(1, Ordering::SeqCst) < failures)
    };
    let verdict = if let Some(down) = failing("/flaky/") {
        if down {
            return (StatusCode::SERVICE_UNAVAILABLE, "down for now").into_response();
        }
        Some(true)
    } else if let Some(throttled) = failing("/throttled/") {
        if throttled {
            return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response();
        }
        Some(true)
    } else if path.starts_with("/reject") {
        return (StatusCode::FORBIDDEN, "not for you").into_response();
    } else if path.starts_with("/pass") {
        Some(true)
    } else if path.starts_with("/fail") {
        Some(false)
    } else {
        None
    };
    if let (Some(success), Some(callback)) = (verdict, callback_uri) {
        let message = if success { "All **42** tests passed" } else { "**3** tests failed: see the report" };
        tokio::spawn(async move {
            let callback = if callback.ends_with("/callback") { callback } else { format!("{callback}/callback") };
            external.call_back(&callback, serde_json::json!({ "success": success, "mdMessage": message })).await;
        });
    }
    (StatusCode::ACCEPTED, "accepted").into_response()
}
