//! Calls a test makes itself, as a client of the relay.

use std::time::Duration;

/// A TCP connection to `to` from the loopback address `from` (127.0.0.2
/// and up stand for other clients); an error after 5 s without one.
pub async fn connect_from(from: [u8; 4], to: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((from, 0)))?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connecting to {to}"))))
}

/// `POST <base>/oauth/token` with client credentials (`base` is either
/// listener): the reply's status and JSON body.
pub async fn token_reply(base: &str, client_id: &str, client_secret: &str) -> (u16, serde_json::Value) {
    let reply = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{base}/oauth/token"))
        .form(&[("grant_type", "client_credentials"), ("client_id", client_id), ("client_secret", client_secret)])
        .send()
        .await
        .unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap_or_default())
}
