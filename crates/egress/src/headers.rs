//! Which headers a proxy passes on (RFC 9110 §7.6.1).

use borealis_protocol::v1;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};

const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

/// Drops hop-by-hop headers, including those a `Connection` header names.
pub fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let hop =
            HOP_BY_HOP.contains(name) || name.as_str() == "keep-alive" || named.iter().any(|n| n == name.as_str());
        if !hop {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// An agent's response head named a status that is no HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the invalid status {0}")]
pub struct InvalidStatus(pub u32);

/// What the relay makes of an agent's `ResponseHead`: its status, and the
/// headers a proxy passes on. A status outside 100-999 is refused (it is
/// never truncated to 16 bits); a header whose name or value is not valid
/// HTTP is dropped, as hop-by-hop ones are. Pure, so that
/// `fuzz/fuzz_targets/tunnel_frames.rs` can run it on any frame.
pub fn agent_response_head(status: u32, headers: &[v1::Header]) -> Result<(StatusCode, HeaderMap), InvalidStatus> {
    // Not `status as u16`: that reads 65736 as 200.
    let code = u16::try_from(status).ok().and_then(|s| StatusCode::from_u16(s).ok()).ok_or(InvalidStatus(status))?;
    let mut map = HeaderMap::with_capacity(headers.len());
    for header in headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(header.name.as_bytes()), HeaderValue::from_bytes(&header.value))
        {
            map.append(name, value);
        }
    }
    Ok((code, end_to_end(&map)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "close, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("proxy-authorization", "Bearer admin".parse().unwrap());
        headers.insert("keep-alive", "5".parse().unwrap());
        headers.insert("authorization", "Bearer upstream".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        let kept = end_to_end(&headers);
        let names: Vec<&str> = kept.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["authorization", "x-multi"]);
        assert_eq!(kept.get_all("x-multi").iter().count(), 2);
    }

    /// Found by fuzz/fuzz_targets/tunnel_frames.rs's check that a head keeps
    /// its status: the relay read a status as `status as u16`, so 65736
    /// became 200 and 65940 became 404.
    #[test]
    fn an_agent_status_over_16_bits_is_refused_not_truncated() {
        assert_eq!(agent_response_head(65736, &[]).unwrap_err(), InvalidStatus(65736));
        assert_eq!(agent_response_head(65940, &[]).unwrap_err(), InvalidStatus(65940));
        assert_eq!(agent_response_head(u32::MAX, &[]).unwrap_err(), InvalidStatus(u32::MAX));
        for bad in [0, 99, 1000] {
            assert!(agent_response_head(bad, &[]).is_err(), "{bad}");
        }
        assert_eq!(agent_response_head(204, &[]).unwrap().0, StatusCode::NO_CONTENT);
    }

    #[test]
    fn agent_headers_keep_valid_end_to_end_ones() {
        let header =
            |name: &str, value: &[u8]| v1::Header { name: name.into(), value: bytes::Bytes::copy_from_slice(value) };
        let sent = [
            header("Content-Type", b"text/plain"),
            header("connection", b"x-private"),
            header("x-private", b"1"),
            header("bad name", b"1"),
            header("x-bad-value", b"a\r\nb"),
            header("x-multi", b"a"),
            header("x-multi", b"b"),
        ];
        let (status, kept) = agent_response_head(200, &sent).unwrap();
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = kept.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "x-multi"]);
        assert_eq!(kept.get_all("x-multi").iter().count(), 2);
    }
}
