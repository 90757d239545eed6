//! Pure logic shared by every Borealis component. No I/O lives here.
//!
//! - [`secret`]: [`Secret`], a string whose `Debug`, `Display` and
//!   serialization never show its value.
//! - [`duration`]: parsing of human durations such as `24h` or `500ms`.

pub mod duration;
pub mod secret;

pub use secret::Secret;
