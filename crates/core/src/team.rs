//! Teams own agents, secrets, metric providers, callback clients, runs and
//! deployments; names are unique within a team, so an agent is named by
//! its team and its identifier together.

/// The team every object belonged to before there were teams, and the one
/// a caller with no other acts in.
pub const DEFAULT_TEAM: &str = "default";

/// An agent as calls name it: its identifier within its team.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct AgentRef {
    pub team: String,
    pub name: String,
}

impl AgentRef {
    pub fn new(team: impl Into<String>, name: impl Into<String>) -> Self {
        Self { team: team.into(), name: name.into() }
    }
}

/// Its identifier, and its team unless that is `default`.
impl std::fmt::Display for AgentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.team == DEFAULT_TEAM {
            f.write_str(&self.name)
        } else {
            write!(f, "{} (team {})", self.name, self.team)
        }
    }
}
