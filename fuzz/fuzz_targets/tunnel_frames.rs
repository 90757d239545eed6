//! What the relay does with the bytes an agent sends on the tunnel: the
//! gRPC request body of a `Forward` or `Control` call, decoded by tonic's
//! framing with the relay's own codec (`codec::TunnelCodec`) and message
//! limit (`MAX_FRAME_BYTES`, no compression), into `AgentFrame`s or
//! `AgentControl`s; then, for each response head, the relay's conversion
//! (`headers::agent_response_head`: status, header names and values,
//! hop-by-hop headers dropped) and the response it builds from it.
//!
//! Not covered: the order of frames on a call (that logic lives in the
//! async handlers of `proxy.rs` and `tunnel.rs`, with no pure function to
//! call), and the agent's side.
//!
//! Input: byte 0 picks the message type (bit 0: control) and how the body
//! arrives: in chunks of `7 * (byte >> 1)` bytes, or whole when that is 0,
//! so frames split across HTTP/2 data frames are decoded too. The rest is
//! the body: 5-byte gRPC prefixes (flag, big-endian length) and messages.
//!
//! Checked, besides "never panics": an accepted head keeps the status the
//! agent sent, keeps only headers it sent, passes no hop-by-hop header on,
//! and makes a response the relay can build.
#![no_main]

use std::convert::Infallible;
use std::sync::LazyLock;

use borealis_egress::headers::agent_response_head;
use borealis_protocol::codec::TunnelCodec;
use borealis_protocol::v1::{self, agent_frame};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::StreamBody;
use libfuzzer_sys::fuzz_target;
use tonic::Streaming;
use tonic::codec::Codec;

static RUNTIME: LazyLock<tokio::runtime::Runtime> =
    LazyLock::new(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"));

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "keep-alive",
];

fn body(
    data: &[u8],
    chunk: usize,
) -> StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>> {
    let frames: Vec<_> = if chunk == 0 {
        vec![Ok(Frame::data(Bytes::copy_from_slice(data)))]
    } else {
        data.chunks(chunk).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect()
    };
    StreamBody::new(futures_util::stream::iter(frames))
}

fn response_head(head: &v1::ResponseHead) {
    let Ok((status, headers)) = agent_response_head(head.status, &head.headers) else { return };
    assert_eq!(
        u32::from(status.as_u16()),
        head.status,
        "the agent sent status {}, the relay answers {status}",
        head.status
    );
    let connection_named: Vec<String> = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .filter_map(|h| http::HeaderValue::from_bytes(&h.value).ok())
        .filter_map(|v| v.to_str().map(|v| v.to_owned()).ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()).collect::<Vec<_>>())
        .collect();
    for (name, value) in &headers {
        assert!(!HOP_BY_HOP.contains(&name.as_str()), "hop-by-hop header {name} passed on");
        assert!(!connection_named.iter().any(|n| n == name.as_str()), "{name}, named by Connection, passed on");
        assert!(
            head.headers.iter().any(|h| h.name.eq_ignore_ascii_case(name.as_str()) && h.value == value.as_bytes()),
            "{name}: {value:?} was not sent"
        );
    }
    // What proxy.rs does with them: a response, and the length it expects.
    let mut reply = http::Response::builder().status(status);
    if let Some(map) = reply.headers_mut() {
        *map = headers;
    }
    let _expected: Option<u64> = reply
        .headers_ref()
        .and_then(|h| h.get(http::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok()?.parse().ok());
    reply.body(()).expect("status and headers were validated");
}

fn agent_frame(frame: v1::AgentFrame) {
    match frame.frame {
        Some(agent_frame::Frame::ResponseHead(head)) => response_head(&head),
        Some(agent_frame::Frame::Failure(failure)) => {
            let code = failure.error_code();
            let _ = (code.slug(), code.fault(), code.is_retryable());
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, rest @ ..] = data else { return };
    let chunk = 7 * usize::from(selector >> 1);
    let limit = Some(borealis_protocol::MAX_FRAME_BYTES);
    RUNTIME.block_on(async {
        if selector & 1 == 0 {
            let decoder = TunnelCodec::<v1::RelayFrame, v1::AgentFrame>::default().decoder();
            let mut inbound = Streaming::new_request(decoder, body(rest, chunk), None, limit);
            while let Ok(Some(frame)) = inbound.message().await {
                agent_frame(frame);
            }
        } else {
            let decoder = TunnelCodec::<v1::RelayControl, v1::AgentControl>::default().decoder();
            let mut inbound = Streaming::new_request(decoder, body(rest, chunk), None, limit);
            while let Ok(Some(_control)) = inbound.message().await {}
        }
    });
});
