//! Which headers a proxy passes on (RFC 9110 §7.6.1).

use http::HeaderMap;
use http::header::{self, HeaderName};

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
}
