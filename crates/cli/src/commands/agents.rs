use borealis_api::{AgentCredentials, AgentList, AgentRevoked, CreateAgent};

use crate::args::AgentsCommand;
use crate::client::{Failure, Relay, urlencode};
use crate::render;

pub async fn run(relay: &Relay, json: bool, command: &AgentsCommand) -> Result<(), Failure> {
    match command {
        AgentsCommand::Create { id } => {
            let reply: AgentCredentials = relay.post("/api/v1/agents", &CreateAgent { id: id.clone() }).await?;
            if json {
                render::json(&reply);
            } else {
                render::credentials(&[
                    ("agent_id", &reply.agent_id),
                    ("client_id", &reply.client_id),
                    ("client_secret", &reply.client_secret),
                ]);
            }
        }
        AgentsCommand::List => {
            let reply: AgentList = relay.get("/api/v1/agents").await?;
            if json { render::json(&reply) } else { render::agents(&reply) }
        }
        AgentsCommand::Revoke { id } => {
            let reply: AgentRevoked = relay.delete(&format!("/api/v1/agents/{}", urlencode(id))).await?;
            if json {
                render::json(&reply);
            } else {
                say!("revoked agent {id}; {} live session(s) closed", reply.sessions_closed);
            }
        }
    }
    Ok(())
}
