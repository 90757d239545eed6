//! Masking of secret values in text that leaves the relay (replies and
//! errors that webhook endpoints echo), including the encoded forms an
//! endpoint or a client library is likely to give them.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

// The sets the relay's own templates encode with: a query value, a path segment.
use crate::template::{COMPONENT, PATH_SEGMENT as RELAY_PATH_SEGMENT};

use crate::Secret;
use crate::secret::MASK;

/// Values (and derived needles) shorter than this many bytes are not masked:
/// a two- or three-byte needle would mask ordinary words all over the text.
pub const MIN_LEN: usize = 4;

/// Masks, with [`MASK`], every occurrence of a set of secrets in text.
///
/// Masked, for each secret value of at least [`MIN_LEN`] bytes, matching
/// ASCII letters case-insensitively everywhere (so `%2f`/`%2F`, `\u00fc`/
/// `\u00FC`, and a value lower-cased by a host name parser all match), and
/// applied to the value as given and to its Unicode upper- and lower-cased
/// forms (`|upper`, `|lower`):
/// - the value itself;
/// - percent-encoded with each of these sets: all but RFC 3986 unreserved
///   (space as `%20` and as `+`), all but unreserved and `/` (Python's
///   `quote`), JavaScript's `encodeURIComponent`, HTML forms
///   (`application/x-www-form-urlencoded`), the relay's path segment set,
///   the WHATWG URL sets (fragment, query, special query, path, path segment,
///   userinfo), and only controls, space and non-ASCII;
/// - JSON-string-escaped as `serde_json` does it, and with any combination of
///   non-ASCII as `\uXXXX` (surrogate pairs above U+FFFF), `/` as `\/`, and
///   `<>&` U+2028 U+2029 as `\uXXXX` (Go's HTML-safe form);
/// - base64, standard and URL-safe alphabet, padded and not, at each of the
///   three byte alignments it can have inside a longer encoded string (Basic
///   auth is `base64("user:" + secret)`). Inside a longer string the
///   characters that straddle the secret's first and last bytes stay visible;
///   each carries at most 4 bits of that byte, and none of its other bytes.
///
/// Where occurrences overlap (two secrets, or two forms of one), their union
/// is masked, so no part of any occurrence stays visible. Masking may also
/// hit unrelated text that happens to equal a needle, e.g. a short base64
/// fragment; masking too much is the safe side.
///
/// Not guaranteed:
/// - values shorter than [`MIN_LEN`] bytes, and case-mapped forms that
///   shrink below it (the lower case of `KK` with Kelvin signs is `kk`);
/// - any other transformation: reversed, hashed, truncated, split across
///   lines or chunks, encoded twice or in a combination not listed, other
///   encodings (hex, HTML entities, punycode of a host name, quoted-printable,
///   other percent-encode sets or JSON escape choices), a `\` that a URL
///   parser turned into `/`, or a value compressed or encrypted.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// `None` when there is nothing to mask, so `scrub` costs nothing.
    automaton: Option<AhoCorasick>,
    needles: usize,
}

impl Scrubber {
    /// Builds every needle once; [`Scrubber::scrub`] is then one pass.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Scrubber {
        // Keyed by ASCII lower case: matching ignores ASCII case anyway.
        let mut needles = BTreeSet::new();
        for secret in secrets {
            let value = secret.expose();
            if value.len() < MIN_LEN {
                continue;
            }
            for form in [value.to_owned(), value.to_uppercase(), value.to_lowercase()] {
                for needle in representations(&form) {
                    if needle.len() >= MIN_LEN {
                        needles.insert(needle.to_ascii_lowercase());
                    }
                }
            }
        }
        if needles.is_empty() {
            return Scrubber::default();
        }
        // Standard semantics, because only an overlapping search reports a
        // needle that starts inside another match (leftmost-longest would
        // skip it and leave its tail visible); `scrub` masks the union.
        // A contiguous NFA: its build is linear in the needles' length,
        // where the DFA the builder picks for few needles grows with their
        // length times the alphabet (seconds for one 4 KiB secret).
        let automaton = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(true)
            .build(&needles)
            .expect("needles are short and few enough for an automaton");
        Scrubber { automaton: Some(automaton), needles: needles.len() }
    }

    /// Whether there is nothing to mask (no secret of [`MIN_LEN`] bytes).
    pub fn is_empty(&self) -> bool {
        self.automaton.is_none()
    }

    /// `text` with every occurrence of a needle replaced by [`MASK`];
    /// overlapping occurrences become a single mask. Borrowed if unchanged.
    pub fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let Some(automaton) = &self.automaton else { return Cow::Borrowed(text) };
        // Reported in order of their end, so sort by start before merging.
        // Needles are UTF-8 and only ASCII bytes fold, so spans cut at char
        // boundaries.
        let mut spans: Vec<(usize, usize)> =
            automaton.find_overlapping_iter(text).map(|m| (m.start(), m.end())).collect();
        spans.sort_unstable();
        let mut spans = spans.into_iter();
        let Some((mut start, mut end)) = spans.next() else { return Cow::Borrowed(text) };
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        for (s, e) in spans {
            if s < end {
                end = end.max(e);
                continue;
            }
            out.push_str(&text[copied..start]);
            out.push_str(MASK);
            copied = end;
            (start, end) = (s, e);
        }
        out.push_str(&text[copied..start]);
        out.push_str(MASK);
        out.push_str(&text[end..]);
        Cow::Owned(out)
    }
}

// The needles themselves would be the secrets: show only their number.
impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber").field("needles", &self.needles).finish()
    }
}

/// Python's `urllib.parse.quote` with its default `safe="/"`.
const COMPONENT_KEEP_SLASH: &AsciiSet = &COMPONENT.remove(b'/');
/// JavaScript's `encodeURIComponent`.
const JS_COMPONENT: &AsciiSet = &COMPONENT.remove(b'!').remove(b'\'').remove(b'(').remove(b')').remove(b'*');
/// What a URL parser does at the least: controls and space (and non-ASCII).
const MINIMAL: &AsciiSet = &CONTROLS.add(b' ');
// The WHATWG URL sets, as the `url` crate spells them.
const FRAGMENT: &AsciiSet = &MINIMAL.add(b'"').add(b'<').add(b'>').add(b'`');
const QUERY: &AsciiSet = &MINIMAL.add(b'"').add(b'#').add(b'<').add(b'>');
const SPECIAL_QUERY: &AsciiSet = &QUERY.add(b'\'');
const PATH: &AsciiSet = &FRAGMENT.add(b'#').add(b'?').add(b'{').add(b'}');
const PATH_SEGMENT: &AsciiSet = &PATH.add(b'/').add(b'%');
const SPECIAL_PATH_SEGMENT: &AsciiSet = &PATH_SEGMENT.add(b'\\');
const USERINFO: &AsciiSet =
    &PATH.add(b'/').add(b':').add(b';').add(b'=').add(b'@').add(b'[').add(b'\\').add(b']').add(b'^').add(b'|');

const PERCENT_SETS: [&AsciiSet; 12] = [
    COMPONENT,
    COMPONENT_KEEP_SLASH,
    JS_COMPONENT,
    RELAY_PATH_SEGMENT,
    MINIMAL,
    FRAGMENT,
    QUERY,
    SPECIAL_QUERY,
    PATH,
    PATH_SEGMENT,
    SPECIAL_PATH_SEGMENT,
    USERINFO,
];

/// Every form of `value` listed on [`Scrubber`], possibly with repeats.
fn representations(value: &str) -> Vec<String> {
    let mut out = vec![value.to_owned()];
    for set in PERCENT_SETS {
        let encoded = utf8_percent_encode(value, set).to_string();
        // `%` itself is encoded here, so each `%20` is a space.
        if set == COMPONENT {
            out.push(encoded.replace("%20", "+"));
        }
        out.push(encoded);
    }
    out.push(url::form_urlencoded::byte_serialize(value.as_bytes()).collect());
    let quoted = serde_json::to_string(value).expect("a string serializes");
    out.push(quoted[1..quoted.len() - 1].to_owned());
    for ascii in [false, true] {
        for slash in [false, true] {
            for html in [false, true] {
                out.push(json_escape(value, JsonEscape { ascii, slash, html }));
            }
        }
    }
    base64_cores(value.as_bytes(), &mut out);
    out
}

#[derive(Clone, Copy)]
struct JsonEscape {
    /// Non-ASCII as `\uXXXX` (Python's default, PHP's).
    ascii: bool,
    /// `/` as `\/` (PHP's default).
    slash: bool,
    /// `<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX` (Go's default).
    html: bool,
}

/// A JSON string's content; what is always escaped matches `serde_json`.
fn json_escape(value: &str, how: JsonEscape) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    let mut units = [0u16; 2];
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '/' if how.slash => out.push_str("\\/"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' if how.html => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if c < ' ' || (how.ascii && !c.is_ascii()) => {
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The base64 characters that depend on `bytes` alone, at each alignment.
fn base64_cores(bytes: &[u8], out: &mut Vec<String>) {
    let engines: [(&GeneralPurpose, &GeneralPurpose); 2] =
        [(&STANDARD, &STANDARD_NO_PAD), (&URL_SAFE, &URL_SAFE_NO_PAD)];
    for (padded, bare) in engines {
        for filler in 0..3 {
            let mut data = vec![0u8; filler];
            data.extend_from_slice(bytes);
            // Character i holds bits 6i..6i+6: those before `first` hold
            // filler bits, those from `whole` on hold bits of what follows.
            let first = (8 * filler).div_ceil(6);
            let whole = 8 * data.len() / 6;
            let encoded = bare.encode(&data);
            // Followed by more data; then at the end, unpadded and padded.
            out.push(encoded[first..whole].to_owned());
            out.push(encoded[first..].to_owned());
            out.push(padded.encode(&data)[first..].to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRICKY: &str = "p+ss/w=rd \"q\\ ü€😀";
    const PLAIN: &str = "hunter2Hunter";

    fn pct(value: &str, set: &'static AsciiSet) -> String {
        utf8_percent_encode(value, set).to_string()
    }

    fn json(value: &str) -> String {
        let quoted = serde_json::to_string(value).unwrap();
        quoted[1..quoted.len() - 1].to_owned()
    }

    /// Each textual representation of `value`, named.
    fn textual(value: &str) -> Vec<(&'static str, String)> {
        vec![
            ("raw", value.to_owned()),
            ("upper", value.to_uppercase()),
            ("lower", value.to_lowercase()),
            ("ascii upper", value.to_ascii_uppercase()),
            ("percent %20", pct(value, COMPONENT)),
            ("percent lowercase hex", pct(value, COMPONENT).to_lowercase()),
            ("percent +", pct(value, COMPONENT).replace("%20", "+")),
            ("form", url::form_urlencoded::byte_serialize(value.as_bytes()).collect()),
            ("path segment", pct(value, RELAY_PATH_SEGMENT)),
            ("minimal", pct(value, MINIMAL)),
            ("percent of upper", pct(&value.to_uppercase(), COMPONENT)),
            ("json", json(value)),
            ("json ascii", json_escape(value, JsonEscape { ascii: true, slash: false, html: false })),
            (
                "json ascii uppercase hex",
                json_escape(value, JsonEscape { ascii: true, slash: false, html: false }).to_uppercase(),
            ),
            ("json slash", json(value).replace('/', "\\/")),
            ("json of lower", json(&value.to_lowercase())),
            ("base64", STANDARD.encode(value)),
            ("base64 unpadded", STANDARD_NO_PAD.encode(value)),
            ("base64url", URL_SAFE.encode(value)),
            ("base64url unpadded", URL_SAFE_NO_PAD.encode(value)),
        ]
    }

    fn contains_ignoring_ascii_case(haystack: &str, needle: &str) -> bool {
        haystack.to_ascii_lowercase().contains(&needle.to_ascii_lowercase())
    }

    #[test]
    fn json_escaping_matches_serde_and_python() {
        let plain = JsonEscape { ascii: false, slash: false, html: false };
        for value in [TRICKY, PLAIN, "\u{1}\u{1f}\u{7f}\u{8}\u{c}\n\r\t"] {
            assert_eq!(json_escape(value, plain), json(value));
        }
        let ascii = JsonEscape { ascii: true, slash: false, html: false };
        assert_eq!(json_escape("ü€😀", ascii), "\\u00fc\\u20ac\\ud83d\\ude00");
        let go = JsonEscape { ascii: false, slash: false, html: true };
        assert_eq!(json_escape("<a&b>", go), "\\u003ca\\u0026b\\u003e");
    }

    #[test]
    fn every_textual_representation_is_masked_in_context() {
        for secret in [TRICKY, PLAIN] {
            let scrubber = Scrubber::new([&Secret::new(secret)]);
            for (name, rep) in textual(secret) {
                let text = format!("before {rep} after");
                let out = scrubber.scrub(&text);
                assert_eq!(out, format!("before {MASK} after"), "{name} of {secret:?}: {rep}");
                // Nothing of it can be recovered: the output holds no form of it.
                for (other, form) in textual(secret) {
                    assert!(!contains_ignoring_ascii_case(&out, &form), "{name}: {other} visible in {out}");
                }
            }
        }
    }

    /// What is left of base64(prefix + secret + suffix), asserted exactly:
    /// only characters that carry bits of the prefix or suffix stay.
    fn assert_base64_masked(scrubber: &Scrubber, prefix: &str, secret: &str, suffix: &str) {
        for (engine, name) in [(&STANDARD, "standard"), (&URL_SAFE, "url-safe"), (&STANDARD_NO_PAD, "unpadded")] {
            let encoded = engine.encode(format!("{prefix}{secret}{suffix}"));
            let start = (8 * prefix.len()).div_ceil(6);
            let end = 8 * (prefix.len() + secret.len()) / 6;
            let expected = if suffix.is_empty() {
                format!("Basic {}{MASK} ok", &encoded[..start])
            } else {
                format!("Basic {}{MASK}{} ok", &encoded[..start], &encoded[end..])
            };
            let text = format!("Basic {encoded} ok");
            let out = scrubber.scrub(&text);
            assert_eq!(out, expected, "{name} {prefix:?} + {secret:?} + {suffix:?}");
        }
    }

    #[test]
    fn base64_is_masked_at_every_alignment() {
        let secrets = [TRICKY, PLAIN, "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh", "k3y-ü"];
        for secret in secrets {
            let scrubber = Scrubber::new([&Secret::new(secret)]);
            for user in ["", "u", "us", "usr", "user"] {
                assert_base64_masked(&scrubber, &format!("{user}:"), secret, "");
            }
            assert_base64_masked(&scrubber, "", secret, "");
            assert_base64_masked(&scrubber, "x", secret, "y");
            assert_base64_masked(&scrubber, "xy", secret, "yz");
            assert_base64_masked(&scrubber, "xyz", secret, "y");
        }
    }

    #[test]
    fn base64_of_a_case_mapped_secret_is_masked() {
        let scrubber = Scrubber::new([&Secret::new(PLAIN)]);
        let encoded = STANDARD.encode(format!("user:{}", PLAIN.to_uppercase()));
        assert!(!scrubber.scrub(&encoded).contains(&encoded[8..]));
    }

    #[test]
    fn overlapping_secrets_leave_no_part_visible() {
        let scrubber = Scrubber::new([&Secret::new("abcdef"), &Secret::new("cdefgh")]);
        assert_eq!(scrubber.scrub("x abcdefgh y"), format!("x {MASK} y"));
        assert_eq!(scrubber.scrub("x cdefgh abcdef y"), format!("x {MASK} {MASK} y"));
        assert_eq!(scrubber.scrub("x ABCDEFgh y"), format!("x {MASK} y"));
        // A needle that starts inside a longer, earlier match.
        let scrubber = Scrubber::new([&Secret::new("abcdefgh"), &Secret::new("fghijk")]);
        assert_eq!(scrubber.scrub("abcdefghijk!"), format!("{MASK}!"));
        // Repeats stay separate masks.
        let scrubber = Scrubber::new([&Secret::new("abcd")]);
        assert_eq!(scrubber.scrub("abcdabcd"), format!("{MASK}{MASK}"));
    }

    #[test]
    fn unchanged_text_and_empty_scrubbers_borrow() {
        let empty = Scrubber::new([]);
        assert!(empty.is_empty());
        assert!(matches!(empty.scrub("anything hunter2"), Cow::Borrowed("anything hunter2")));
        let short = Scrubber::new([&Secret::new("abc"), &Secret::new("")]);
        assert!(short.is_empty());
        assert!(matches!(short.scrub("abc"), Cow::Borrowed("abc")));
        let scrubber = Scrubber::new([&Secret::new(TRICKY), &Secret::new(PLAIN)]);
        assert!(!scrubber.is_empty());
        let text = "a reply without secrets: p+ss, hunter, ü€ and {\"ok\": true}";
        assert!(matches!(scrubber.scrub(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn case_mapped_forms_too_short_are_not_needles() {
        // Two Kelvin signs are 6 bytes; their lower case, "kk", is 2.
        let scrubber = Scrubber::new([&Secret::new("\u{212a}\u{212a}")]);
        assert_eq!(scrubber.scrub("kk \u{212a}\u{212a}"), format!("kk {MASK}"));
    }

    #[test]
    fn debug_shows_no_needle() {
        let scrubber = Scrubber::new([&Secret::new(PLAIN)]);
        let debug = format!("{scrubber:?}");
        assert!(debug.starts_with("Scrubber { needles: "), "{debug}");
        assert!(!contains_ignoring_ascii_case(&debug, PLAIN));
    }

    #[test]
    fn what_the_relay_and_url_parsers_send_is_masked() {
        use crate::template::{Slot, Values, render};
        let mut values = Values::default();
        values.secrets.insert("s".into(), Secret::new(TRICKY));
        let scrubber = Scrubber::new(values.secrets.values());
        let json = Slot::Body { json: true };
        let cases = [
            ("https://h/a/{{secrets.s}}/b", Slot::Uri, "https://h/a/********/b"),
            ("https://h/a?q={{secrets.s}}&r=1", Slot::Uri, "https://h/a?q=********&r=1"),
            (r#"{"k": "{{secrets.s}}"}"#, json, r#"{"k": "********"}"#),
            ("{{ secrets.s | upper }}", Slot::HeaderValue, "********"),
            (r#"{"k": "{{ secrets.s | lower }}"}"#, json, r#"{"k": "********"}"#),
        ];
        for (template, slot, expected) in cases {
            let rendered = render(template, slot, &values, false).unwrap();
            assert_eq!(scrubber.scrub(&rendered), expected, "{template} -> {rendered}");
        }
        let mut url = url::Url::parse("https://user@h/a").unwrap();
        url.set_password(Some(TRICKY)).unwrap();
        url.path_segments_mut().unwrap().push(TRICKY);
        url.set_fragment(Some(TRICKY));
        assert_eq!(scrubber.scrub(url.as_str()), "https://user:********@h/a/********#********");
        let url = url::Url::parse(&format!("https://h/a?q={TRICKY}")).unwrap();
        assert_eq!(scrubber.scrub(url.as_str()), "https://h/a?q=********");
        let url = url::Url::parse_with_params("https://h/a", [("q", TRICKY)]).unwrap();
        assert_eq!(scrubber.scrub(url.as_str()), "https://h/a?q=********");
    }
}
