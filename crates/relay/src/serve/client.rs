//! The client's address behind a trusted balancer.
//!
//! A connection from an address in `--trusted-proxy` may start with a PROXY
//! protocol header (v1 or v2, as HAProxy's `send-proxy`/`send-proxy-v2` and
//! most cloud balancers send it), and its requests may carry
//! `X-Forwarded-For`. From any other peer neither is read, so a client can
//! never name its own address. `Forwarded` (RFC 7239) is not read: a
//! balancer that sets one of the two headers may pass the other through as
//! the client wrote it, so taking either would let a client choose. The decisions are pure
//! functions ([`preamble`], [`TrustedProxies::client`]); [`read_preamble`]
//! only feeds bytes to them.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderMap;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The PROXY protocol v2 signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The PROXY protocol v1 prefix.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest preamble read: a v1 line is at most 107 bytes; a v2 header
/// is 16 bytes, the addresses and TLVs, which balancers keep small.
pub const MAX_PREAMBLE: usize = 4096;
/// Forwarding entries looked at, from the right.
const MAX_HOPS: usize = 32;

/// The proxies whose word on the client's address is taken.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that reached the relay from `hop` (the
    /// connection's address, after any PROXY header): when `hop` is trusted,
    /// the right-most address in its forwarding headers that is not itself a
    /// trusted proxy; otherwise `hop`.
    pub fn client(&self, hop: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(hop) {
            return hop;
        }
        let mut client = hop;
        for entry in forwarded_for(headers).into_iter().rev().take(MAX_HOPS) {
            let Some(ip) = entry else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// The addresses a request's `X-Forwarded-For` names, left to right
/// (`None` for one that is not an address).
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(','))
        .map(|entry| parse_node(entry.trim()))
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    text.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).and_then(|ip| ip.parse().ok())
}

/// What the first bytes of a connection from a trusted proxy are.
#[derive(Debug, PartialEq, Eq)]
pub enum Preamble {
    /// Too few bytes to tell.
    Incomplete,
    /// No PROXY header: the connection's own bytes start at once.
    Absent,
    /// A PROXY header of `len` bytes, naming the client (`None` for the
    /// proxy's own connections: `LOCAL` or `UNKNOWN`, e.g. health checks).
    Found { len: usize, client: Option<SocketAddr> },
    /// A PROXY header that does not parse.
    Invalid(String),
}

/// Reads `bytes`, the start of a connection, as a PROXY header or none.
pub fn preamble(bytes: &[u8]) -> Preamble {
    let starts = |signature: &[u8]| {
        let n = bytes.len().min(signature.len());
        bytes[..n] == signature[..n]
    };
    let (v1, v2) = (starts(V1_PREFIX), starts(V2_SIGNATURE));
    if !v1 && !v2 {
        return Preamble::Absent;
    }
    if (v1 && bytes.len() < V1_PREFIX.len()) || (v2 && bytes.len() < V2_SIGNATURE.len()) {
        return Preamble::Incomplete;
    }
    use ppp::PartialResult;
    match ppp::HeaderResult::parse(bytes) {
        result if result.is_incomplete() => {
            if bytes.len() >= MAX_PREAMBLE {
                Preamble::Invalid(format!("a PROXY header longer than {MAX_PREAMBLE} bytes"))
            } else {
                Preamble::Incomplete
            }
        }
        ppp::HeaderResult::V1(Ok(header)) => {
            let client = match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                ppp::v1::Addresses::Unknown => None,
            };
            Preamble::Found { len: header.header.len(), client }
        }
        ppp::HeaderResult::V2(Ok(header)) => {
            let client = match (header.command, header.addresses) {
                (ppp::v2::Command::Local, _) => None,
                (_, ppp::v2::Addresses::IPv4(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
                (_, ppp::v2::Addresses::IPv6(a)) => Some(SocketAddr::from((a.source_address, a.source_port))),
                (_, _) => None,
            };
            Preamble::Found { len: header.len(), client }
        }
        ppp::HeaderResult::V1(Err(err)) => Preamble::Invalid(format!("PROXY v1 header: {err}")),
        ppp::HeaderResult::V2(Err(err)) => Preamble::Invalid(format!("PROXY v2 header: {err}")),
    }
}

/// Reads a trusted proxy's PROXY header, if it sends one. Returns the
/// stream with whatever was read past the header put back in front, and
/// the client the header names. The caller bounds the time it takes.
pub async fn read_preamble<S: AsyncRead + Unpin>(mut stream: S) -> io::Result<(Prefixed<S>, Option<SocketAddr>)> {
    let mut buffer = Vec::with_capacity(256);
    loop {
        match preamble(&buffer) {
            Preamble::Incomplete => {}
            Preamble::Absent => return Ok((Prefixed::new(buffer, stream), None)),
            Preamble::Found { len, client } => return Ok((Prefixed::new(buffer.split_off(len), stream), client)),
            Preamble::Invalid(reason) => return Err(io::Error::new(io::ErrorKind::InvalidData, reason)),
        }
        let mut chunk = [0u8; 512];
        let room = (MAX_PREAMBLE - buffer.len()).min(chunk.len());
        let read = stream.read(&mut chunk[..room]).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// A stream with bytes already read from it put back in front.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self { prefix, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarding_headers_count_only_from_a_trusted_hop() {
        let t = trusted();
        let forged = headers(&[("x-forwarded-for", "198.51.100.9")]);
        assert_eq!(t.client(ip("192.0.2.7"), &forged), ip("192.0.2.7"), "an untrusted peer names no one");
        assert_eq!(t.client(ip("10.1.1.1"), &forged), ip("198.51.100.9"));
        // The right-most untrusted entry: what the client wrote on the left is not believed.
        let chain = headers(&[("x-forwarded-for", "203.0.113.5, 198.51.100.9, 10.2.2.2")]);
        assert_eq!(t.client(ip("10.1.1.1"), &chain), ip("198.51.100.9"));
        let split = headers(&[("x-forwarded-for", "203.0.113.5"), ("x-forwarded-for", "198.51.100.9:4711")]);
        assert_eq!(t.client(ip("10.1.1.1"), &split), ip("198.51.100.9"));
        let garbage = headers(&[("x-forwarded-for", "203.0.113.5, unknown, 10.2.2.2")]);
        assert_eq!(t.client(ip("10.1.1.1"), &garbage), ip("10.2.2.2"), "stops at what it cannot read");
        let rfc7239 = headers(&[("forwarded", "for=203.0.113.5")]);
        assert_eq!(t.client(ip("::1"), &rfc7239), ip("::1"), "Forwarded is not read");
        let v6 = headers(&[("x-forwarded-for", "[2001:db8::7]:80")]);
        assert_eq!(t.client(ip("::1"), &v6), ip("2001:db8::7"));
        assert_eq!(t.client(ip("::ffff:10.1.1.1"), &HeaderMap::new()), ip("::ffff:10.1.1.1"));
        assert!(t.trusts(ip("::ffff:10.1.1.1")), "IPv4-mapped addresses are their IPv4 address");
    }

    #[test]
    fn proxy_headers_v1_and_v2_and_none() {
        assert_eq!(preamble(b""), Preamble::Incomplete);
        assert_eq!(preamble(b"PRO"), Preamble::Incomplete);
        assert_eq!(preamble(b"GET / HTTP/1.1\r\n"), Preamble::Absent);
        assert_eq!(preamble(b"\x16\x03\x01"), Preamble::Absent, "a TLS hello");
        let v1 = b"PROXY TCP4 192.0.2.1 10.0.0.1 5555 8080\r\nGET /";
        let found = Preamble::Found { len: v1.len() - 5, client: Some("192.0.2.1:5555".parse().unwrap()) };
        assert_eq!(preamble(v1), found);
        assert_eq!(preamble(&v1[..20]), Preamble::Incomplete);
        assert_eq!(preamble(b"PROXY UNKNOWN\r\n"), Preamble::Found { len: 15, client: None });
        assert!(matches!(preamble(b"PROXY TCP4 nonsense here 1 2\r\n"), Preamble::Invalid(_)));

        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x00, 0x50]);
        let len = v2.len();
        v2.extend_from_slice(b"GET /");
        assert_eq!(preamble(&v2), Preamble::Found { len, client: Some("192.0.2.9:8080".parse().unwrap()) });
        assert_eq!(preamble(&v2[..14]), Preamble::Incomplete);
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(preamble(&local), Preamble::Found { len: 16, client: None });
    }

    #[tokio::test]
    async fn what_follows_the_header_is_read_back() {
        let bytes = b"PROXY TCP4 192.0.2.1 10.0.0.1 5555 8080\r\nGET / HTTP/1.1\r\n\r\n".to_vec();
        let (mut stream, client) = read_preamble(&bytes[..]).await.unwrap();
        assert_eq!(client, Some("192.0.2.1:5555".parse().unwrap()));
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "GET / HTTP/1.1\r\n\r\n");
        let (mut stream, client) = read_preamble(&b"GET / HTTP/1.1\r\n\r\n"[..]).await.unwrap();
        assert_eq!(client, None);
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "GET / HTTP/1.1\r\n\r\n");
    }
}
