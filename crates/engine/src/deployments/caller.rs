//! The outgoing calls of deployments: Flagger hooks, webhook drivers and
//! metric queries, direct or through an agent, each signed like a webhook.
//!
//! Every call goes through [`Caller::call`], and every text that comes back
//! from one (the reply's body, or why there is none) is scrubbed of every
//! stored secret there, before any caller can store, log or show it: an
//! endpoint that echoes the request cannot put a header's secret in a
//! deployment's history.

use std::sync::Arc;
use std::time::Duration;

use borealis_core::deployment::Signing;
use borealis_core::team::{AgentRef, DEFAULT_TEAM};
use borealis_core::template::Keyring;

use crate::outcall::{Failure, Keep, Outcall, Reply};
use crate::signing::{self, Stamp};
use crate::transport::Transport;
use crate::vault::Vault;

/// What hooks, drivers and metric queries need to make calls, for one
/// team: its agents carry them, its secrets fill and sign them.
#[derive(Clone)]
pub struct Caller {
    team: String,
    transport: Arc<dyn Transport>,
    vault: Arc<Vault>,
    signing_default: Option<String>,
    /// Largest body either way.
    pub max_body_bytes: u64,
    /// First delay between a hook's retries.
    pub retry_base_delay: Duration,
}

/// How much of a hook's or a driver's reply is read (and dropped), so the
/// connection is reused.
const ACK_BYTES: usize = 64 * 1024;

impl Caller {
    pub fn new(
        transport: Arc<dyn Transport>,
        vault: Arc<Vault>,
        signing_default: Option<String>,
        max_body_bytes: u64,
        retry_base_delay: Duration,
    ) -> Self {
        let team = DEFAULT_TEAM.to_owned();
        Self { team, transport, vault, signing_default, max_body_bytes, retry_base_delay }
    }

    /// The same caller, for `team`'s calls.
    pub fn for_team(&self, team: &str) -> Arc<Self> {
        Arc::new(Self { team: team.to_owned(), ..self.clone() })
    }

    pub fn team(&self) -> &str {
        &self.team
    }

    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The team's secrets, with the relay's own signing key.
    pub async fn keyring(&self) -> Result<Keyring, crate::vault::VaultError> {
        self.vault.keyring(&self.team).await
    }

    /// The team's agent `name`.
    pub fn agent(&self, name: Option<&String>) -> Option<AgentRef> {
        name.map(|name| AgentRef::new(self.team.clone(), name.clone()))
    }

    /// The relay's own signing key, which no template may read.
    pub fn signing_default(&self) -> Option<&str> {
        self.signing_default.as_deref()
    }

    /// Makes `call`. What comes back is scrubbed of every stored secret; if
    /// the secrets cannot be read to scrub it with, the text is withheld.
    pub async fn call(&self, call: Outcall) -> Result<Reply, Failure> {
        let answer = call.send(&*self.transport, self.max_body_bytes).await;
        let scrub = match self.vault.current_scrubber().await {
            Ok(scrubber) => move |text: String| scrubber.scrub(&text).into_owned(),
            Err(err) => {
                let withheld = format!("(withheld: the secrets to mask it with cannot be read: {err})");
                return match answer {
                    Ok(reply) => Ok(Reply { body: Err(withheld), ..reply }),
                    Err(failure) => Err(Failure { detail: withheld, ..failure }),
                };
            }
        };
        match answer {
            Ok(reply) => Ok(Reply { body: reply.body.map(&scrub).map_err(&scrub), ..reply }),
            Err(failure) => Err(Failure { detail: scrub(failure.detail), ..failure }),
        }
    }

    /// POSTs JSON, direct or through an agent; the reply's status, or why none.
    /// The call carries `webhook-id: <id>` and, signed by `signing` or else the
    /// relay's `webhook_signing_secret`, this attempt's timestamp and signature.
    pub async fn post_json(
        &self,
        agent: Option<&str>,
        url: &str,
        body: &serde_json::Value,
        timeout: Duration,
        id: &str,
        signing: Option<&Signing>,
    ) -> Result<u16, Failure> {
        let agent = agent.map(|name| AgentRef::new(self.team.clone(), name));
        let call = Outcall::post_json(agent, url, body, (timeout, Keep::Whole(ACK_BYTES)));
        self.post(call, id, signing).await
    }

    /// Sends `call` (a POST built by its caller) stamped as
    /// [`Caller::post_json`] stamps its calls; the reply's status, or why none.
    pub async fn post(&self, call: Outcall, id: &str, signing: Option<&Signing>) -> Result<u16, Failure> {
        let keys = signing::keys_from_vault(&self.vault, &self.team, self.signing_default.as_deref(), signing)
            .await
            .map_err(Failure::unsendable)?;
        let stamp = Stamp::new(id, &call.body[..], &keys);
        self.call(call.stamped(&stamp)).await.map(|reply| reply.status)
    }

    /// How much of a driver's reply is kept.
    pub fn ack() -> Keep {
        Keep::Whole(ACK_BYTES)
    }
}
