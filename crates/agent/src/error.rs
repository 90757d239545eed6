//! How the agent fails, and whether another try may help.

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Our identity was refused: retrying cannot help.
    #[error("credentials rejected: {0}")]
    Rejected(String),
    /// A token the relay no longer takes (expired, or the credential revoked).
    #[error("token rejected: {0}")]
    TokenRejected(String),
    #[error("configuration: {0}")]
    Config(String),
    /// `--relay` names a server that does not hold the tunnel (the relay's
    /// HTTP API listener, say): retrying cannot help.
    #[error("{0}")]
    NotTheTunnel(String),
    #[error("relay unreachable: {0}")]
    Unreachable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl AgentError {
    /// Whether reconnecting may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AgentError::Unreachable(_) | AgentError::TokenRejected(_) | AgentError::Internal(_))
    }
}
