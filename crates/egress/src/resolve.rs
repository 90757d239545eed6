//! DNS resolution that applies the policy to every address.
//!
//! reqwest connects only to the addresses this resolver returns, so a name
//! that resolves to a refused address cannot be reached by any trick of
//! timing (DNS rebinding): the checked address is the connected one.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::decision::Refusal;
use crate::policy::Policy;

pub(crate) struct PolicyResolver {
    pub(crate) policy: Arc<Policy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.name_allows_any_address(&host) {
                return Ok(Box::new(resolved.into_iter()) as Addrs);
            }
            let mut refusal: Option<Refusal> = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check_address(&host, addr.ip()) {
                    Ok(()) => true,
                    Err(err) => {
                        refusal.get_or_insert(err);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refusal) {
                (true, Some(refusal)) => Err(Box::new(refusal) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}
