//! Logging for the Borealis binaries: one line per event on stderr, as text
//! or as JSON, filtered by `BOREALIS_LOG` (an `EnvFilter`, default `info`).
//!
//! - [`LogFormat::Text`]: tracing-subscriber's default format, coloured only
//!   when stderr is a terminal.
//! - [`LogFormat::Json`]: one JSON object per line with `timestamp`,
//!   `level`, `target`, `message` and the event's fields at the top level
//!   (no span list).
//!
//! # Logging strings a peer chose
//!
//! The text format does not escape `\n` or `\r` anywhere, and escapes ESC
//! only in the message: a `%`-Display field holding `"x\n2030-01-01 INFO
//! forged"` would write a forged line (checked against tracing-subscriber
//! 0.3.23 by this crate's tests). So a string the peer controls (an id, a
//! URL, a reason, an error carrying a peer's message) is logged:
//!
//! - as a plain `&str` value, `url = head.url.as_str()`: text shows it
//!   quoted and escaped (`url="a\nb"`), JSON as the string itself;
//! - or with `?` for other types, `error = ?err`: Debug escapes it, but JSON
//!   then carries the Debug text (for a string: with its quotes).
//!
//! Never with `%`, and never formatted into the message. JSON lines are
//! always safe: serde_json escapes every control character.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variable holding the filter, e.g. `info,borealis_agent=debug`.
pub const FILTER_ENV: &str = "BOREALIS_LOG";

/// How log lines are written. In a configuration it is the string `text`
/// or `json`, read with the same rule as the flag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format {text:?}: expected text or json")),
        }
    }
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<LogFormat> for String {
    fn from(format: LogFormat) -> Self {
        format.to_string()
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Installs the process's logger: `format` on stderr, filtered by
/// `BOREALIS_LOG` (default `info`). Call once, first thing in `main`.
///
/// # Panics
///
/// If a global logger is already installed.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    subscriber(format, filter, std::io::stderr, std::io::stderr().is_terminal()).init();
}

/// The subscriber [`init`] installs, writing to `writer` instead of stderr
/// (for tests that read the log).
pub fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W, ansi: bool) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder.with_ansi(false).json().flatten_event(true).with_current_span(false).with_span_list(false).finish(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `log` writes in `format`.
    fn capture(format: LogFormat, log: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = subscriber(format, EnvFilter::new("info"), move || writer.clone(), false);
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(buffer.0.lock().expect("buffer lock").clone()).expect("UTF-8 log")
    }

    const HOSTILE: &str = "a\nb\x1b[31m";

    /// One record, one line, no raw ESC.
    fn assert_one_clean_line(output: &str) {
        assert!(output.ends_with('\n'), "{output:?}");
        let record = &output[..output.len() - 1];
        assert!(!record.contains(['\n', '\r']), "a raw line break inside the record: {output:?}");
        assert!(!record.contains('\x1b'), "a raw ESC in the record: {output:?}");
    }

    #[test]
    fn text_escapes_debug_and_str_fields() {
        let output = capture(LogFormat::Text, || tracing::info!(value = ?HOSTILE, "debug"));
        assert_one_clean_line(&output);
        assert!(output.contains(r#"value="a\nb\u{1b}[31m""#), "{output}");

        let output = capture(LogFormat::Text, || tracing::info!(value = HOSTILE, "str"));
        assert_one_clean_line(&output);
        assert!(output.contains(r#"value="a\nb\u{1b}[31m""#), "{output}");
    }

    /// Why the crate's rule exists: if this starts failing, tracing-subscriber
    /// escapes Display fields itself and the rule could be relaxed.
    #[test]
    fn text_does_not_escape_display_fields() {
        let output = capture(LogFormat::Text, || tracing::info!(value = %HOSTILE, "display"));
        assert!(output.contains(HOSTILE), "{output:?}");
    }

    #[test]
    fn json_is_one_object_per_line_whatever_the_field() {
        let output = capture(LogFormat::Json, || {
            tracing::info!(value = ?HOSTILE, "debug");
            tracing::info!(value = %HOSTILE, "display");
            tracing::info!(value = HOSTILE, request = "r-1", "str");
        });
        let lines: Vec<serde_json::Value> =
            output.lines().map(|line| serde_json::from_str(line).expect("a JSON object per line")).collect();
        assert_eq!(lines.len(), 3, "{output}");
        assert!(!output.contains('\x1b'), "{output:?}");
        assert_eq!(lines[0]["value"], format!("{HOSTILE:?}"));
        assert_eq!(lines[1]["value"], HOSTILE);
        let last = &lines[2];
        assert_eq!(last["value"], HOSTILE);
        assert_eq!(last["request"], "r-1");
        assert_eq!(last["message"], "str");
        assert_eq!(last["level"], "INFO");
        assert_eq!(last["target"], module_path!());
        assert!(last["timestamp"].is_string(), "{last}");
        assert!(last.get("fields").is_none() && last.get("spans").is_none(), "{last}");
    }

    #[test]
    fn formats_parse_and_print() {
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        let err = "yaml".parse::<LogFormat>().unwrap_err();
        assert!(err.contains("text") && err.contains("json") && err.contains("yaml"), "{err}");
        assert_eq!(LogFormat::Json.to_string(), "json");
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }
}
