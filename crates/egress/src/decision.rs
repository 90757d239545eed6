//! What a destination check decides: returned by `allow` and `guard`, so it
//! sits below them and below `policy`, which uses both.

/// Why a destination was refused. Shown to operators, so it names the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub destination: String,
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "destination {} is not allowed: {}", self.destination, self.reason)
    }
}

impl std::error::Error for Refusal {}

/// What a check by name decided, before any DNS lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameDecision {
    /// A rule names this host (and port): any address it resolves to is fine.
    Allowed,
    /// No rule names it: every resolved address must pass the address check.
    CheckAddresses,
}
