//! Where something stands in the file, and a complaint about it.

use std::fmt;

/// Where something stands in the file.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Location {
    /// A field path such as `webhooks[2].networkMode`.
    pub path: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// An error or warning about the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Diagnostic {
    pub path: String,
    pub message: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{} at {}:{}", self.message, self.line, self.column)
        } else {
            write!(f, "{}: {} at {}:{}", self.path, self.message, self.line, self.column)
        }
    }
}

impl Diagnostic {
    /// A complaint about what stands at `at`.
    pub(super) fn at(at: &Location, message: impl Into<String>) -> Diagnostic {
        Diagnostic { path: at.path.clone(), message: message.into(), line: at.line, column: at.column }
    }
}
