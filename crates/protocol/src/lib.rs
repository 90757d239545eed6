//! The relay-agent tunnel protocol, generated from `proto/borealis/tunnel/v1`.
//!
//! `v1` holds the messages and the `Tunnel` client and server. The helpers
//! here are the few conversions both sides need, so that each side speaks the
//! same limits and codes.

pub mod batch;
pub mod codec;
pub mod lanes;

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("borealis.tunnel.v1");
}

/// The protocol version this build speaks, sent in `Hello`. The package
/// (`borealis.tunnel.v1`) is the wire-compatibility line; this number is
/// what a peer must do with those messages (see `docs/tunnel-protocol.md`).
/// Version 2 added small bodies carried in the heads.
pub const PROTOCOL_VERSION: u32 = 2;

/// Standby calls an agent keeps when a session starts. It keeps one more
/// each time a request comes as an offer (none was idle), up to what
/// `Welcome.standby_calls` grants, so a quiet agent holds few calls and a
/// busy one as many as its load needs.
pub const STANDBY_CALLS_AT_START: u32 = 2;

/// Largest body chunk either side puts in one frame.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// Largest body that travels inside a request or response head.
pub const MAX_INLINE_BODY_BYTES: usize = MAX_CHUNK_BYTES;

/// Largest encoded frame either side accepts (a chunk plus headers, with room).
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// Longest id or name a peer sends: `Hello.agent_id`, `Hello.version`,
/// `Hello.instance`, and the `request_id` and `session_id` of a call's first
/// frame.
pub const MAX_NAME_BYTES: usize = 256;

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

    /// Whose fault a failure with this code is.
    pub fn fault(self) -> Fault {
        use v1::ErrorCode::*;
        match self {
            DestinationNotAllowed | InvalidRequest | BodyTooLarge => Fault::Caller,
            ConnectFailed | Timeout | UpstreamFailed | Cancelled => Fault::Upstream,
            Internal | Unspecified => Fault::Internal,
        }
    }

    /// Whether another try may succeed: a refusal of the request itself gets
    /// the same answer again; the destination, the path to it (an agent that
    /// went away) and our own faults may pass.
    pub fn is_retryable(self) -> bool {
        self.fault() != Fault::Caller
    }
}

/// Whose fault a failure is, which decides whether a retry may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request or its configuration: a retry gives the same answer.
    Caller,
    /// The destination or the path to it: a retry may succeed.
    Upstream,
    /// Ours.
    Internal,
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
