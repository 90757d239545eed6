use borealis_api::{ClientCredentials, ClientRevoked, CreateClient};

use crate::args::ClientsCommand;
use crate::client::{Failure, Relay, urlencode};
use crate::render;

pub async fn run(relay: &Relay, json: bool, command: &ClientsCommand) -> Result<(), Failure> {
    match command {
        ClientsCommand::Create { name } => {
            let reply: ClientCredentials = relay.post("/api/v1/clients", &CreateClient { name: name.clone() }).await?;
            if json {
                render::json(&reply);
            } else {
                render::credentials(&[
                    ("name", &reply.name),
                    ("client_id", &reply.client_id),
                    ("client_secret", &reply.client_secret),
                ]);
            }
        }
        ClientsCommand::Revoke { name } => {
            let reply: ClientRevoked = relay.delete(&format!("/api/v1/clients/{}", urlencode(name))).await?;
            if json {
                render::json(&reply);
            } else {
                say!("revoked callback client {name}; its tokens are refused from now on");
            }
        }
    }
    Ok(())
}
