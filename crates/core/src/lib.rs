//! Pure logic shared by every Borealis component. No I/O lives here.
//!
//! - [`deployment`]: the deployment file (webhooks, targets, strategies,
//!   context) and its parser, whose errors carry a field path and a position.
//! - [`template`]: placeholders and the escaping that keeps substituted values
//!   from changing a request's shape.
//! - [`render`]: a webhook rendered into its request, each problem named by
//!   its field.
//! - [`secret`]: [`Secret`], a string whose `Debug`, `Display` and
//!   serialization never show its value.
//! - [`scrub`]: [`Scrubber`], which masks secrets in text, also when encoded
//!   (percent, JSON, base64) or case-mapped.
//! - [`duration`]: parsing of human durations such as `24h` or `500ms`.
//! - [`backoff`]: retry and reconnect delays, jittered and capped.
//! - [`signing`]: Standard Webhooks signatures of outgoing calls.
//! - [`team`]: what belongs to a team, and an agent named within its team.

pub mod backoff;
pub mod deployment;
pub mod duration;
pub mod render;
pub mod scrub;
pub mod secret;
pub mod signing;
pub mod team;
pub mod template;

pub use scrub::Scrubber;
pub use secret::Secret;
