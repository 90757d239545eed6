//! What the forwarding tasks of a session share: the channel, the session's
//! id and token, and the cancels of its offered requests. The session
//! ([`crate::session`]) makes one; forwarding ([`crate::forward`]) uses it.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use borealis_protocol::v1::tunnel_client::TunnelClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::connect::Token;

/// What the forwarding tasks of a session share.
pub struct SessionLink {
    pub channel: Channel,
    pub session_id: String,
    pub token: RwLock<Token>,
    /// Offered requests of this session by id, to cancel them on the
    /// relay's word.
    pub cancels: Mutex<HashMap<String, CancellationToken>>,
    /// Fires when the session is over: idle standby calls stop waiting.
    pub ended: CancellationToken,
    /// Fires when the session takes no new work (a child of `ended`): no
    /// new standby calls are opened.
    pub draining: CancellationToken,
}

impl SessionLink {
    pub fn client(&self) -> TunnelClient<Channel> {
        tunnel_client(self.channel.clone())
    }

    pub fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        authorize(request, &self.token.read().expect("token lock").value);
    }
}

pub(crate) fn tunnel_client(channel: Channel) -> TunnelClient<Channel> {
    TunnelClient::new(channel)
        .max_decoding_message_size(borealis_protocol::MAX_FRAME_BYTES)
        .max_encoding_message_size(borealis_protocol::MAX_FRAME_BYTES)
}

pub(crate) fn authorize<T>(request: &mut tonic::Request<T>, token: &borealis_core::Secret) {
    if let Ok(value) = format!("Bearer {}", token.expose()).parse() {
        request.metadata_mut().insert(borealis_protocol::AUTHORIZATION, value);
    }
}
