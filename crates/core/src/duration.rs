//! Human durations (`24h`, `90s`, `500ms`, `1h 30m`) for configuration.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (examples: 24h, 90s, 500ms, 1h30m)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses `<number><unit>` terms, summed: units `ms`, `s`, `m`, `h`, `d`.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let fail = |reason| DurationError { input: input.to_owned(), reason };
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(fail("it is empty"));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(fail("expected a number"));
        }
        let value: u64 = rest[..digits].parse().map_err(|_| fail("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == ' ').unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "" => return Err(fail("a number needs a unit")),
            _ => return Err(fail("unknown unit")),
        };
        let term = unit
            .checked_mul(u32::try_from(value).map_err(|_| fail("number too large"))?)
            .ok_or_else(|| fail("too long"))?;
        total = total.checked_add(term).ok_or_else(|| fail("too long"))?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

/// Serde adapter: `#[serde(with = "borealis_core::duration::serde_human")]`.
pub mod serde_human {
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        super::parse(&text).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", value.as_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1m 5s").unwrap(), Duration::from_secs(65));
    }

    #[test]
    fn rejects_with_a_reason() {
        for (input, reason) in
            [("", "empty"), ("10", "needs a unit"), ("5y", "unknown unit"), ("h", "expected a number")]
        {
            let err = parse(input).unwrap_err().to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
        }
    }
}
