use borealis_api::{PutSecret, SecretDeleted, SecretList, SecretStored};

use crate::args::{SecretUseArg, SecretsCommand};
use crate::client::{Failure, Relay, urlencode};
use crate::render;

pub async fn run(relay: &Relay, json: bool, command: &SecretsCommand) -> Result<(), Failure> {
    match command {
        SecretsCommand::Set { name, uses } => {
            let mut value = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)
                .map_err(|e| Failure::bad_input(format!("reading the secret from stdin: {e}")))?;
            let value = value.strip_suffix('\n').map(|v| v.strip_suffix('\r').unwrap_or(v)).unwrap_or(&value);
            if value.is_empty() {
                return Err(Failure::bad_input(
                    "no secret value on standard input (try: printf %s VALUE | borealis secrets set NAME)",
                ));
            }
            let path = format!("/api/v1/secrets/{}", urlencode(name));
            if uses.is_empty() {
                let _: SecretStored = relay.put_text(&path, value.to_owned()).await?;
                say!("stored secret {name}");
            } else {
                let mut marks: Vec<_> = uses.iter().map(|u| u.to_api()).collect();
                marks.sort();
                marks.dedup();
                let names: Vec<&str> = marks.iter().map(|m| SecretUseArg::from_api(*m).name()).collect();
                let request = PutSecret { value: value.to_owned(), uses: Some(marks) };
                let _: SecretStored = relay.put(&path, &request).await?;
                say!("stored secret {name} (for {})", names.join(", "));
            }
        }
        SecretsCommand::List => {
            let reply: SecretList = relay.get("/api/v1/secrets").await?;
            if json { render::json(&reply) } else { render::secrets(&reply) }
        }
        SecretsCommand::Delete { name } => {
            let _: SecretDeleted = relay.delete(&format!("/api/v1/secrets/{}", urlencode(name))).await?;
            say!("deleted secret {name}");
        }
    }
    Ok(())
}
