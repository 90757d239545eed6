//! Idempotency keys, shared by runs and deployments: a key lives on the row
//! it created, so claiming it and creating the row are one insert.

/// A client's `Idempotency-Key` and a hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: String,
}
