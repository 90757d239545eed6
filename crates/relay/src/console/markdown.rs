//! `mdMessage` as the console shows it: CommonMark rendered to HTML, then
//! sanitized. External systems write these messages, so nothing in them
//! may run: no script, no event handler, no `javascript:` link, no image
//! (which would call out from the operator's browser); links carry
//! `rel="noopener noreferrer"`.

use std::collections::HashSet;
use std::sync::LazyLock;

/// The longest message rendered; the rest is cut (the API has it whole).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

static SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut builder = ammonia::Builder::default();
    builder
        .rm_tags(["img"])
        .url_schemes(HashSet::from(["http", "https", "mailto"]))
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer"));
    builder
});

/// Safe HTML for `text`.
pub fn render(text: &str) -> String {
    let mut end = text.len().min(MAX_MESSAGE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text[..end];
    let options = pulldown_cmark::Options::ENABLE_TABLES | pulldown_cmark::Options::ENABLE_STRIKETHROUGH;
    let mut html = String::with_capacity(text.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut html, pulldown_cmark::Parser::new_ext(text, options));
    SANITIZER.clean(&html).to_string()
}

/// Safe HTML for a one-line `text` (an event's message), without the
/// paragraph a block would get.
pub fn render_line(text: &str) -> String {
    let html = render(text);
    let trimmed = html.trim_end();
    match trimmed.strip_prefix("<p>").and_then(|h| h.strip_suffix("</p>")) {
        Some(inner) if !inner.contains("<p>") => inner.to_owned(),
        _ => html,
    }
}

#[cfg(test)]
mod tests {
    use super::{render, render_line};

    #[test]
    fn a_line_renders_without_its_paragraph() {
        assert_eq!(
            render_line("webhook smoke succeeded: **42** tests"),
            "webhook smoke succeeded: <strong>42</strong> tests"
        );
        assert_eq!(render_line("a <script>alert(1)</script> b"), "a  b");
        assert!(render_line("one\n\ntwo").contains("<p>two</p>"), "two paragraphs stay blocks");
    }

    #[test]
    fn markdown_renders_and_nothing_in_it_runs() {
        let html = render(
            "**bold** [docs](https://example.com/x) <script>alert(1)</script> <img src=x onerror=alert(2)> \
             [bad](javascript:alert(3)) <a href=\"https://e.com\" onclick=\"alert(4)\">raw</a>",
        );
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(html.contains(r#"<a href="https://example.com/x" rel="noopener noreferrer">docs</a>"#), "{html}");
        for gone in ["<script", "alert(1)", "<img", "onerror", "javascript:", "onclick"] {
            assert!(!html.contains(gone), "{gone} survived: {html}");
        }
    }

    #[test]
    fn a_huge_message_is_cut() {
        let html = render(&"é".repeat(super::MAX_MESSAGE_BYTES));
        assert!(html.len() < super::MAX_MESSAGE_BYTES + 100, "{}", html.len());
    }
}
