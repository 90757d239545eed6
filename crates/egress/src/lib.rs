//! Outbound HTTP under a destination policy.
//!
//! Both ends of Borealis make HTTP calls on someone else's behalf: the relay
//! in direct mode, the agent inside a private network. Each call is bounded
//! by a [`Policy`]:
//!
//! - [`guard`]: the relay's address guard. Refuses loopback, private,
//!   link-local (cloud metadata), CGNAT, ULA and similar addresses unless a
//!   range is allow-listed.
//! - [`allow`]: the agent's allow-list of hosts, ports, domains and CIDRs.
//! - [`resolve`]: the DNS resolver that applies the policy to every resolved
//!   address, so the address that is checked is the address connected to.
//! - [`client`]: [`Egress`], the HTTP client that sends one request under a
//!   policy, never follows redirects, and classifies failures ([`EgressError`]).

pub mod allow;
pub mod client;
mod decision;
pub mod guard;
pub mod headers;
mod policy;
pub mod resolve;

pub use allow::{AllowList, AllowRule};
pub use client::{Egress, EgressError, EgressOptions, Fault};
pub use decision::{NameDecision, Refusal};
pub use guard::AddressGuard;
pub use policy::Policy;
pub use reqwest;
