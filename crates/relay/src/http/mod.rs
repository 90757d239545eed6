//! The HTTP edge: routes, extractors, and the one place domain errors
//! become problems (RFC 9457).

pub mod problem;
pub mod proxy;

pub use crate::state::AppState;
