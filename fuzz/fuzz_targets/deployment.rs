//! The deployment-file parser, as the relay runs it on a file it is sent
//! (`POST /api/v1/deployments`, `webhook run -f`): `parse`, then
//! `validate_deployment`, then what the relay reads off the parsed file.
//!
//! Beyond "never panics", a file that parses keeps the parser's promises:
//! every template in it passes `template::check`, every header key is a
//! header name and every method a method the engine can send, webhook names
//! are unique, and a failed parse names at least one error.
#![no_main]

use borealis_core::deployment::{self, Step};
use borealis_core::render;
use borealis_core::template::{self, ARMORY_KEYS, Values};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = match deployment::parse(text) {
        Ok(parsed) => parsed,
        Err(errors) => {
            assert!(!errors.is_empty(), "a failed parse names no error");
            for error in &errors {
                let _ = error.to_string();
            }
            return;
        }
    };
    for warning in &parsed.warnings {
        let _ = warning.to_string();
    }
    let file = &parsed.file;
    for error in deployment::validate_deployment(file) {
        let _ = error.to_string();
    }

    let mut names = std::collections::BTreeSet::new();
    for webhook in &file.webhooks {
        assert!(names.insert(webhook.name.as_str()), "duplicate webhook {:?} parsed", webhook.name);
        assert!(
            http::Method::from_bytes(webhook.method.as_bytes()).is_ok(),
            "method {:?} parsed but the engine cannot send it",
            webhook.method
        );
        assert!(template::check(&webhook.uri_template).is_ok(), "uriTemplate passed parse but not check");
        for header in &webhook.headers {
            assert!(
                http::HeaderName::from_bytes(header.key.as_bytes()).is_ok(),
                "header key {:?} parsed but is no header name",
                header.key
            );
            assert!(template::check(&header.value).is_ok(), "header value passed parse but not check");
        }
        if let Some(body) = &webhook.body_template {
            assert!(template::check(body).is_ok(), "bodyTemplate passed parse but not check");
        }
    }

    // What a run reads: every step, and each webhook rendered (masked, as a
    // dry run shows it) with the file's context and every armory value.
    for target in &file.targets {
        for step in file.steps_of(target) {
            if let Step::RunWebhook(run) = step {
                let _ = file.webhook(&run.name);
            }
        }
    }
    let _ = file.run_webhooks();
    let mut values = Values { context: file.context.clone(), ..Values::default() };
    for key in ARMORY_KEYS {
        values.armory.insert((*key).to_owned(), format!("https://relay.example/{key}"));
    }
    for webhook in &file.webhooks {
        let _ = render::render_webhook(webhook, &values, true);
    }
});
