//! Template checking and rendering under small limits: `template::check`,
//! `render_with` for every slot, and `render::render_webhook_with`.
//!
//! Input: three bytes, then UTF-8 text split at NUL. Byte 0: bits 0-1 the
//! slot (URI, header value, body, JSON body), bit 2 mask, bit 3 a whole
//! webhook instead of one field. Byte 1: the field limit, `1 + 8 * b`.
//! Byte 2: fuel, `40 * b`. The first part is the template (the URI for a
//! webhook); each later part is tagged by its first character: `c` a context
//! entry `key=value`, `s` a secret `name=value`, `h` a header `key:value`,
//! `b` the body.
//!
//! Checked, besides "never panics":
//! - a rendered field is at most the field limit, a request at most the
//!   request limit;
//! - rendering never allocates more than [`ALLOC_BUDGET`] at a time, so a
//!   template that passes the bound check cannot build something large and
//!   be refused only afterwards (the limits are small, so real work is tiny);
//! - a header value whose template holds no line break renders to none;
//! - masked, no character of a secret reaches the output: the secrets below
//!   are made of private-use characters, which are taken out of the input,
//!   and so is every `\u` escape (a string literal's `\uE001` writes one;
//!   no filter a placeholder may use makes one from other characters), so
//!   the only way one reaches the output is a secret leaking.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use borealis_core::Secret;
use borealis_core::deployment::{HeaderTemplate, Location, NetworkMode, Webhook};
use borealis_core::render;
use borealis_core::template::{self, ARMORY_KEYS, RenderLimits, Slot, Values};
use libfuzzer_sys::fuzz_target;

/// Counts live and peak bytes, so the target can see what rendering allocates.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most one rendering may hold at once, above what was live before it.
/// Fields are at most about 2 KiB here and inputs a few KiB, so honest work
/// needs a small fraction of this.
const ALLOC_BUDGET: usize = 16 << 20;

/// Secrets whose every character is private-use (removed from the input).
const HIDDEN: [(&str, &str); 2] =
    [("token", "\u{E000}\u{E001}\u{E002}\u{E003}"), ("other", "\u{E010}\u{E011}\u{E012}\u{E013}\u{E014}")];

fn is_hidden(c: char) -> bool {
    ('\u{E000}'..='\u{F8FF}').contains(&c)
}

fn measured<T>(what: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result = what();
    (result, PEAK.load(Ordering::Relaxed).saturating_sub(before))
}

fn check_masked(out: &str) {
    assert!(!out.chars().any(is_hidden), "a masked rendering shows a secret's characters: {out:?}");
}

fuzz_target!(|data: &[u8]| {
    let [flags, field, fuel, rest @ ..] = data else { return };
    let text: String = String::from_utf8_lossy(rest).chars().map(|c| if is_hidden(c) { 'x' } else { c }).collect();
    let text = text.replace("\\u", "\\_");
    let mask = flags & 4 != 0;
    let field_bytes = 1 + usize::from(*field) * 8;
    let limits = RenderLimits { field_bytes, request_bytes: field_bytes * 3, fuel: u64::from(*fuel) * 40 };

    let mut parts = text.split('\0');
    let first = parts.next().unwrap_or("");
    let mut values = Values::default();
    for key in ARMORY_KEYS {
        values.armory.insert((*key).to_owned(), format!("https://relay.example/{key}"));
    }
    values.context.insert("environment".into(), "staging & \"prod\"\r\n".into());
    for (name, value) in HIDDEN {
        values.secrets.insert(name.into(), Secret::new(value));
    }
    let mut headers = Vec::new();
    let mut body = None;
    for part in parts {
        let mut chars = part.chars();
        let tag = chars.next();
        let rest = chars.as_str();
        match tag {
            Some('c') => {
                let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
                values.context.insert(k.into(), v.into());
            }
            Some('s') => {
                let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
                // A fuzzed secret could equal template text, so only the
                // hidden ones are held to the masking check.
                if !values.secrets.contains_key(k) {
                    values.secrets.insert(k.into(), Secret::new(v));
                }
            }
            Some('h') => {
                let (k, v) = rest.split_once(':').unwrap_or((rest, ""));
                headers.push(HeaderTemplate { key: k.into(), value: v.into() });
            }
            Some('b') => body = Some(rest.to_owned()),
            _ => {}
        }
    }

    if flags & 8 == 0 {
        let _ = template::check(first);
        let slot = match flags & 3 {
            0 => Slot::Uri,
            1 => Slot::HeaderValue,
            2 => Slot::Body { json: false },
            _ => Slot::Body { json: true },
        };
        let (result, peak) = measured(|| template::render_with(first, slot, &values, mask, &limits));
        assert!(peak <= ALLOC_BUDGET, "rendering held {peak} bytes at once for a {field_bytes}-byte field");
        if let Ok(out) = result {
            assert!(out.len() <= field_bytes, "rendered {} bytes, over the {field_bytes}-byte field limit", out.len());
            if slot == Slot::HeaderValue && !first.contains(['\r', '\n', '\0']) {
                assert!(!out.contains(['\r', '\n', '\0']), "a header value gained a line break: {out:?}");
            }
            if mask {
                check_masked(&out);
            }
        }
    } else {
        let webhook = Webhook {
            name: "fuzz".into(),
            method: "POST".into(),
            uri_template: first.to_owned(),
            network_mode: NetworkMode::Direct,
            agent_identifier: None,
            headers,
            body_template: body,
            retry_count: 0,
            disable_callback: false,
            signing: None,
            location: Location { path: "webhooks[0]".into(), line: 1, column: 1 },
        };
        let (result, peak) = measured(|| render::render_webhook_with(&webhook, &values, mask, &limits));
        assert!(peak <= ALLOC_BUDGET, "rendering held {peak} bytes at once for {field_bytes}-byte fields");
        match result {
            Ok(request) => {
                let fields = std::iter::once(&request.url)
                    .chain(request.headers.iter().map(|(_, v)| v))
                    .chain(request.body.as_ref());
                for field in fields.clone() {
                    assert!(field.len() <= field_bytes, "a field rendered {} bytes, over {field_bytes}", field.len());
                    if mask {
                        check_masked(field);
                    }
                }
                let size = request.url.len()
                    + request.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                    + request.body.as_ref().map_or(0, String::len);
                assert!(size <= limits.request_bytes, "the request is {size} bytes, over {}", limits.request_bytes);
                for ((_, value), template) in request.headers.iter().zip(&webhook.headers) {
                    if !template.value.contains(['\r', '\n', '\0']) {
                        assert!(!value.contains(['\r', '\n', '\0']), "a header value gained a line break: {value:?}");
                    }
                }
                if !mask {
                    let url = url::Url::parse(&request.url).expect("a rendered URI that passed is a URL");
                    assert!(matches!(url.scheme(), "http" | "https"));
                }
            }
            Err(errors) => assert!(!errors.is_empty(), "a failed rendering names no error"),
        }
    }
});
