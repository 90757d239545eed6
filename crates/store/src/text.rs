//! Text as every backend can store it. Both backends bind every text value
//! through [`storable`], so what a peer sends is stored (and read back) the
//! same on SQLite and PostgreSQL, and no peer can make a write fail by the
//! characters it chose.
//!
//! PostgreSQL's `text` refuses exactly one character of a Rust `&str`: NUL
//! (U+0000), which it cannot hold in a string at all; a bind containing one
//! fails the whole statement ("invalid byte sequence for encoding UTF8:
//! 0x00"). Every other scalar value is accepted by a UTF8 database (invalid
//! UTF-8 and lone surrogates cannot occur in a `&str`); a database created
//! in another server encoding (`SQL_ASCII`, `LATIN1`, ...) would also refuse
//! what that encoding lacks, which is why the schema assumes `UTF8`, the
//! default. SQLite stores a NUL, but text with one is truncated by some
//! readers of it, so it gets the same replacement there.

use std::borrow::Cow;

/// What a NUL becomes in stored text: the replacement character, as lossy
/// UTF-8 decoding uses for what cannot be shown. It is visible to operators
/// and changes nothing else: an escape such as `\u{0}` would have to escape
/// the backslash too to be told apart from text that spelt it, changing
/// every stored text with a backslash.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

/// `text` with every NUL replaced by [`NUL_REPLACEMENT`]; borrowed (no copy)
/// when it has none, which is nearly always. Bound for every text column
/// and every text compared with one (a key looked up is mapped as it was
/// when stored), on both backends.
pub fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', NUL_REPLACEMENT.encode_utf8(&mut [0; 3])))
    } else {
        Cow::Borrowed(text)
    }
}

/// [`storable`] of an optional text (a nullable column).
pub fn storable_opt<S: AsRef<str> + ?Sized>(text: Option<&S>) -> Option<Cow<'_, str>> {
    text.map(|text| storable(text.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nul_changes() {
        assert!(matches!(storable("plain \\u{0} text ✓"), Cow::Borrowed("plain \\u{0} text ✓")));
        assert_eq!(storable("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
        assert_eq!(storable_opt(Some("\0")).as_deref(), Some("\u{FFFD}"));
        assert_eq!(storable_opt::<str>(None), None);
    }
}
