//! Signatures of outgoing calls, as Standard Webhooks (standardwebhooks.com)
//! defines them.
//!
//! A signed call carries three headers:
//! - `webhook-id`: the message's id, the same on every retry of it;
//! - `webhook-timestamp`: unix seconds of this attempt;
//! - `webhook-signature`: `v1,<base64 of HMAC-SHA256 over "{id}.{timestamp}.{body}">`,
//!   one per key, space-separated (several keys during a rotation).
//!
//! A key comes from a secret's text: `whsec_` followed by base64 is decoded
//! (the form Standard Webhooks' libraries generate and read); any other text
//! is used as its UTF-8 bytes. This module holds no I/O: the caller gives the
//! id, the time, the exact body bytes and the keys.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::hmac;

/// The prefix of a Standard Webhooks secret: the rest is base64 of the key.
pub const SECRET_PREFIX: &str = "whsec_";
/// The message id, stable across retries of one message.
pub const WEBHOOK_ID: &str = "webhook-id";
/// Unix seconds of the attempt.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// `v1,<signature>`, one per key, space-separated.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// The three header names, which the relay sets and a file may not.
pub const HEADERS: [&str; 3] = [WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE];

/// Base64 as the reference libraries read it: the standard alphabet, with or
/// without padding.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether `name` is one of [`HEADERS`], in any case.
pub fn is_signing_header(name: &str) -> bool {
    HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Why a secret cannot be a signing key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("it starts with whsec_, but what follows is not base64: {0}")]
    NotBase64(String),
}

/// An HMAC-SHA256 key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningKey(hmac::Key);

impl SigningKey {
    /// `whsec_<base64>` is decoded; any other text is used as its UTF-8 bytes.
    pub fn from_secret(secret: &str) -> Result<Self, KeyError> {
        match secret.strip_prefix(SECRET_PREFIX) {
            Some(encoded) => {
                let bytes = LENIENT.decode(encoded.trim()).map_err(|e| KeyError::NotBase64(e.to_string()))?;
                Self::from_bytes(&bytes)
            }
            None => Self::from_bytes(secret.as_bytes()),
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(********)")
    }
}

/// The `webhook-signature` value: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
/// for each key, in order, space-separated. Empty with no keys.
pub fn sign(id: &str, timestamp: u64, body: &[u8], keys: &[SigningKey]) -> String {
    let timestamp = timestamp.to_string();
    let signatures: Vec<String> = keys
        .iter()
        .map(|SigningKey(key)| {
            let mut context = hmac::Context::with_key(key);
            for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
                context.update(part);
            }
            format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
        })
        .collect();
    signatures.join(" ")
}

/// The headers of one call: `webhook-id` always; with keys, also
/// `webhook-timestamp` and `webhook-signature`. `body` must be exactly the
/// bytes sent.
pub fn headers(id: &str, timestamp: u64, body: &[u8], keys: &[SigningKey]) -> Vec<(&'static str, String)> {
    let mut out = vec![(WEBHOOK_ID, id.to_owned())];
    if !keys.is_empty() {
        out.push((WEBHOOK_TIMESTAMP, timestamp.to_string()));
        out.push((WEBHOOK_SIGNATURE, sign(id, timestamp, body, keys)));
    }
    out
}

/// `text` as a `webhook-id` any header carries unchanged: bytes other than
/// ASCII letters, digits and `-._~:/` are percent-encoded (`start gate` is
/// `start%20gate`).
pub fn safe_id(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks specification and its
    /// reference libraries (checked against the Python `standardwebhooks`).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: u64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn key(secret: &str) -> SigningKey {
        SigningKey::from_secret(secret).unwrap()
    }

    #[test]
    fn the_specifications_test_vector() {
        assert_eq!(sign(ID, TIMESTAMP, BODY, &[key(SECRET)]), EXPECTED);
    }

    #[test]
    fn a_whsec_secret_reads_with_or_without_padding() {
        // 32 bytes: 44 characters of base64, one of them padding.
        let padded = format!("{SECRET_PREFIX}{}", STANDARD.encode([7u8; 32]));
        assert!(padded.ends_with('='));
        let unpadded = padded.trim_end_matches('=');
        let expected = sign(ID, TIMESTAMP, BODY, &[SigningKey::from_bytes(&[7u8; 32]).unwrap()]);
        assert_eq!(sign(ID, TIMESTAMP, BODY, &[key(&padded)]), expected);
        assert_eq!(sign(ID, TIMESTAMP, BODY, &[key(unpadded)]), expected);
    }

    #[test]
    fn every_part_of_the_message_is_signed() {
        let keys = [key(SECRET)];
        assert_ne!(sign(ID, TIMESTAMP, br#"{"test": 2432232315}"#, &keys), EXPECTED);
        assert_ne!(sign(ID, TIMESTAMP + 1, BODY, &keys), EXPECTED);
        assert_ne!(sign("msg_other", TIMESTAMP, BODY, &keys), EXPECTED);
    }

    #[test]
    fn a_secret_without_the_prefix_is_its_utf8_bytes() {
        let raw = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let as_text = sign(ID, TIMESTAMP, BODY, &[key(raw)]);
        assert_ne!(as_text, EXPECTED, "the text itself is the key, not its base64 decoding");
        assert_eq!(as_text, sign(ID, TIMESTAMP, BODY, &[SigningKey::from_bytes(raw.as_bytes()).unwrap()]));
    }

    #[test]
    fn a_rotation_signs_with_every_key_in_order() {
        let both = sign(ID, TIMESTAMP, BODY, &[key(SECRET), key("old key")]);
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], EXPECTED);
        assert_eq!(parts[1], sign(ID, TIMESTAMP, BODY, &[key("old key")]));
        assert!(parts[1].starts_with("v1,"));
    }

    #[test]
    fn headers_without_keys_carry_the_id_only() {
        assert_eq!(headers(ID, TIMESTAMP, BODY, &[]), [(WEBHOOK_ID, ID.to_owned())]);
        assert_eq!(
            headers(ID, TIMESTAMP, BODY, &[key(SECRET)]),
            [
                (WEBHOOK_ID, ID.to_owned()),
                (WEBHOOK_TIMESTAMP, "1614265330".to_owned()),
                (WEBHOOK_SIGNATURE, EXPECTED.to_owned())
            ]
        );
    }

    #[test]
    fn bad_secrets_are_refused_and_keys_never_print() {
        assert_eq!(SigningKey::from_secret("").unwrap_err(), KeyError::Empty);
        assert_eq!(SigningKey::from_secret("whsec_").unwrap_err(), KeyError::Empty);
        assert!(matches!(SigningKey::from_secret("whsec_not*base64").unwrap_err(), KeyError::NotBase64(_)));
        assert_eq!(format!("{:?}", key(SECRET)), "SigningKey(********)");
    }

    #[test]
    fn ids_are_made_header_safe() {
        assert_eq!(safe_id("d-1:prod/gate/confirm-rollout/start gate"), "d-1:prod/gate/confirm-rollout/start%20gate");
        assert_eq!(safe_id("é\"x"), "%C3%A9%22x");
        assert_eq!(safe_id("6f1c2a34-0000-4000-8000-000000000000"), "6f1c2a34-0000-4000-8000-000000000000");
    }

    #[test]
    fn signing_headers_are_recognised_in_any_case() {
        assert!(is_signing_header("Webhook-Signature") && is_signing_header("webhook-id"));
        assert!(!is_signing_header("webhook-ids"));
    }
}
