use borealis_api::{CreateMetricProvider, HeaderPair, MetricProvider, MetricProviderDeleted, MetricProviderList};

use crate::args::ProvidersCommand;
use crate::client::{Failure, Relay, urlencode};
use crate::render;

pub async fn run(relay: &Relay, json: bool, command: &ProvidersCommand) -> Result<(), Failure> {
    match command {
        ProvidersCommand::Create(args) => {
            let mut headers = Vec::new();
            for header in &args.headers {
                let (key, value) = header
                    .split_once(':')
                    .ok_or_else(|| Failure::bad_input(format!("--header {header:?}: expected \"Name: value\"")))?;
                headers.push(HeaderPair { key: key.trim().to_owned(), value: value.trim().to_owned() });
            }
            let body = CreateMetricProvider {
                name: args.name.clone(),
                kind: args.kind.clone(),
                url: args.url.clone(),
                agent: args.agent.clone(),
                headers,
            };
            let reply: MetricProvider = relay.post("/api/v1/metric-providers", &body).await?;
            if json {
                render::json(&reply);
            } else {
                let via = args.agent.as_ref().map(|a| format!(" through agent {a}")).unwrap_or_default();
                say!("created metric provider {} ({} at {}{via})", args.name, args.kind, args.url);
            }
        }
        ProvidersCommand::List => {
            let reply: MetricProviderList = relay.get("/api/v1/metric-providers").await?;
            if json { render::json(&reply) } else { render::providers(&reply) }
        }
        ProvidersCommand::Delete { name } => {
            let _: MetricProviderDeleted =
                relay.delete(&format!("/api/v1/metric-providers/{}", urlencode(name))).await?;
            say!("deleted metric provider {name}");
        }
    }
    Ok(())
}
