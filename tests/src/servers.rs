//! HTTP servers that stand for the systems behind the relay and the agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `router` on 127.0.0.1:0 until the test's runtime ends.
pub async fn serve(router: Router) -> SocketAddr {
    crate::tls::install_crypto();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A server that counts every request it gets.
#[derive(Clone, Default)]
pub struct Upstream {
    pub hits: Arc<AtomicUsize>,
    active: Arc<AtomicUsize>,
    most_active: Arc<AtomicUsize>,
    released: tokio_util::sync::CancellationToken,
}

impl Upstream {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The most requests this server was ever working on at once.
    pub fn most_active(&self) -> usize {
        self.most_active.load(Ordering::SeqCst)
    }

    /// The requests this server is working on now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Lets every `GET /hold` answer, now and from now on.
    pub fn release(&self) {
        self.released.cancel();
    }
}

/// Starts the test upstream. Routes:
/// - `ANY /echo`: 200, echoes the body; `x-echo-method`, `x-echo-authorization`.
/// - `GET /status/{code}`: that status, `x-test: yes`, body `status {code}`.
/// - `GET /fast`: `fast`. `GET /slow`: after 300 ms. `GET /stall`: after 10 s.
/// - `GET /hold`: `released`, once the test calls [`Upstream::release`].
/// - `GET /bytes/{n}`: `n` bytes, streamed in 64 KiB chunks.
/// - `GET /chunked/{n}`: the same without a `content-length`.
/// - `POST /sink`: reads the body as it streams (any size); answers its length.
pub async fn upstream() -> (SocketAddr, Upstream) {
    let state = Upstream::default();
    let router = Router::new()
        .route("/echo", any(echo))
        .route("/status/{code}", get(status))
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow"
            }),
        )
        .route(
            "/stall",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .route(
            "/hold",
            get(|State(state): State<Upstream>| async move {
                state.released.cancelled().await;
                "released"
            }),
        )
        .route("/bytes/{n}", get(bytes))
        .route("/chunked/{n}", get(chunked))
        .route("/sink", axum::routing::post(sink))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count))
        .with_state(state.clone());
    (serve(router).await, state)
}

async fn count(State(state): State<Upstream>, request: Request, next: axum::middleware::Next) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let now = state.active.fetch_add(1, Ordering::SeqCst) + 1;
    state.most_active.fetch_max(now, Ordering::SeqCst);
    let response = next.run(request).await;
    state.active.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn echo(method: axum::http::Method, headers: HeaderMap, body: Bytes) -> Response {
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap_or("").to_owned()).unwrap_or_default();
    ([("x-echo-method", method.to_string()), ("x-echo-authorization", auth)], body).into_response()
}

async fn sink(body: Body) -> Result<String, StatusCode> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut length = 0u64;
    while let Some(chunk) = stream.next().await {
        length += chunk.map_err(|_| StatusCode::BAD_REQUEST)?.len() as u64;
    }
    Ok(length.to_string())
}

async fn status(Path(code): Path<u16>) -> Response {
    let status = StatusCode::from_u16(code).unwrap();
    (status, [("x-test", "yes")], format!("status {code}")).into_response()
}

async fn bytes(Path(n): Path<u64>) -> Response {
    ([("content-length", n.to_string())], chunked(Path(n)).await).into_response()
}

/// `n` bytes of `x` in 64 KiB chunks, of undeclared length.
async fn chunked(Path(n): Path<u64>) -> Body {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(CHUNK as u64);
            Some((Ok::<_, std::io::Error>(chunk.slice(..take as usize)), left - take))
        }
    });
    Body::from_stream(stream)
}

/// A raw HTTP/1.1 endpoint that sends a response head, then one chunk every
/// 100 ms, forever; it reports through the returned receiver when the
/// client closes the connection.
pub async fn drip() -> (SocketAddr, tokio::sync::mpsc::Receiver<()>) {
    raw_endpoint(true).await
}

/// A raw HTTP/1.1 endpoint that reads a request and never answers; it
/// reports through the returned receiver when the client closes the
/// connection.
pub async fn silent() -> (SocketAddr, tokio::sync::mpsc::Receiver<()>) {
    raw_endpoint(false).await
}

async fn raw_endpoint(drips: bool) -> (SocketAddr, tokio::sync::mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed, observed) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
                if drips && socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        read = socket.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { break },
                        () = tokio::time::sleep(Duration::from_millis(100)), if drips => {
                            if socket.write_all(b"5\r\ndrip\n\r\n").await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = closed.send(()).await;
            });
        }
    });
    (addr, observed)
}

/// A minimal HTTP CONNECT proxy; counts the tunnels it opened.
pub async fn connect_proxy() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let count = tunnels.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head);
                let Some(target) = text.strip_prefix("CONNECT ").and_then(|rest| rest.split_whitespace().next()) else {
                    let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n").await;
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, tunnels)
}

/// A request as a [`recorder`] saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub body: serde_json::Value,
}

/// Decides the status for the `n`th request (from 0) to `path`.
pub type Answer = Arc<dyn Fn(&str, usize) -> u16 + Send + Sync>;

/// Records every request in order and answers by `answer`.
pub async fn recorder(answer: Answer) -> (SocketAddr, Arc<std::sync::Mutex<Vec<Recorded>>>) {
    let seen: Arc<std::sync::Mutex<Vec<Recorded>>> = Arc::default();
    let log = seen.clone();
    let router = Router::new().fallback(move |uri: axum::http::Uri, body: Bytes| {
        let log = log.clone();
        let answer = answer.clone();
        async move {
            let path = uri.path().to_owned();
            let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let count = {
                let mut log = log.lock().unwrap();
                let count = log.iter().filter(|r| r.path == path).count();
                log.push(Recorded { path: path.clone(), body });
                count
            };
            StatusCode::from_u16(answer(&path, count)).unwrap()
        }
    });
    (serve(router).await, seen)
}
