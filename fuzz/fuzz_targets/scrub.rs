//! The scrubber (`borealis_core::Scrubber`) over any secrets and any text.
//!
//! Input: UTF-8 split at NUL; the last part is the text, the parts before
//! it (up to 8) are the secrets.
//!
//! Checked, besides "never panics": for every secret of at least
//! `scrub::MIN_LEN` bytes, the scrubbed text holds neither the secret, in
//! any ASCII case, nor a few of its encoded forms (serde_json's escaping,
//! form encoding, standard base64). Text left unchanged is returned borrowed. A form with a `*` in it
//! is not held to this: the mask itself is `********`, so such a form can
//! appear where nothing leaked.
#![no_main]

use std::borrow::Cow;
use std::sync::Mutex;

use base64::Engine;
use borealis_core::scrub::MIN_LEN;
use borealis_core::{Scrubber, Secret};
use libfuzzer_sys::fuzz_target;

static LAST: Mutex<Option<(Vec<String>, Scrubber)>> = Mutex::new(None);

fn forms(secret: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).expect("a string serializes");
    vec![
        secret.to_owned(),
        json[1..json.len() - 1].to_owned(),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        base64::engine::general_purpose::STANDARD.encode(secret),
    ]
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts: Vec<&str> = text.split('\0').collect();
    let text = parts.pop().unwrap_or("");
    parts.truncate(8);
    // Building the automaton is most of the cost, and most mutations change
    // only the text, so the last scrubber is kept for the same secrets.
    let mut last = LAST.lock().unwrap();
    if last.as_ref().is_none_or(|(kept, _)| kept != &parts) {
        let secrets: Vec<Secret> = parts.iter().map(|s| Secret::new(*s)).collect();
        let scrubber = Scrubber::new(&secrets);
        let _ = format!("{scrubber:?}");
        *last = Some((parts.iter().map(|s| s.to_string()).collect(), scrubber));
    }
    let (_, scrubber) = last.as_ref().unwrap();
    let out = scrubber.scrub(text);
    let lower = out.to_ascii_lowercase();
    for secret in parts.iter().filter(|s| s.len() >= MIN_LEN) {
        for form in forms(secret) {
            if form.contains('*') {
                continue;
            }
            assert!(
                !lower.contains(&form.to_ascii_lowercase()),
                "secret {secret:?} (as {form:?}) is still in the scrubbed text {out:?}"
            );
        }
    }
    if let Cow::Borrowed(_) = out {
        assert!(
            parts.iter().filter(|s| s.len() >= MIN_LEN).all(|s| !text.contains(*s)),
            "a secret left in borrowed text"
        );
    }
});
