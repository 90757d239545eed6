//! The relay-agent tunnel protocol, generated from `proto/borealis/tunnel/v1`.
//!
//! `v1` holds the messages and the `Tunnel` client and server. The helpers
//! here are the few conversions both sides need, so that each side speaks the
//! same limits and codes.

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("borealis.tunnel.v1");
}

/// The protocol version this build speaks, sent in `Hello`.
/// Version 2 added small bodies carried in the heads.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest body chunk either side puts in one frame.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// Largest body that travels inside a request or response head.
pub const MAX_INLINE_BODY_BYTES: usize = MAX_CHUNK_BYTES;

/// Largest encoded frame either side accepts (a chunk plus headers, with room).
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// gRPC metadata key on every call: `Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";

/// Path of the token endpoint, served on the agents' listener too.
pub const TOKEN_PATH: &str = "/oauth/token";

impl v1::ErrorCode {
    /// A short stable name, used in metrics, logs and HTTP problem types.
    pub fn slug(self) -> &'static str {
        use v1::ErrorCode::*;
        match self {
            Unspecified | Internal => "internal",
            DestinationNotAllowed => "destination-not-allowed",
            ConnectFailed => "connect-failed",
            Timeout => "timeout",
            Cancelled => "cancelled",
            BodyTooLarge => "body-too-large",
            InvalidRequest => "invalid-request",
            UpstreamFailed => "upstream-failed",
        }
    }

    /// Whether another try may succeed. A refusal of the request itself
    /// (not allowed, malformed, too large) gets the same answer again; the
    /// destination, the path to it and our own faults may pass.
    pub fn is_retryable(self) -> bool {
        use v1::ErrorCode::*;
        match self {
            DestinationNotAllowed | InvalidRequest | BodyTooLarge => false,
            ConnectFailed | Timeout | UpstreamFailed | Cancelled | Internal | Unspecified => true,
        }
    }
}

impl v1::Failure {
    pub fn new(code: v1::ErrorCode, message: impl Into<String>) -> Self {
        Self { code: code as i32, message: message.into() }
    }

    /// The code, with unknown values (from a newer peer) read as internal.
    pub fn error_code(&self) -> v1::ErrorCode {
        v1::ErrorCode::try_from(self.code).unwrap_or(v1::ErrorCode::Internal)
    }
}
