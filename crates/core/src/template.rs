//! Placeholders in webhook templates: `{{armory.*}}`, `{{context.*}}` and
//! `{{secrets.*}}`.
//!
//! Undefined is an error that names the placeholder, never an empty string.
//! A substituted value cannot change the shape of the request: it is
//! percent-encoded in a URI's path, query or fragment, refused in a header
//! value if it holds a line break, and JSON-string-escaped inside a JSON
//! body. Simple paths are looked up directly (context keys may contain `-`);
//! anything else is a minijinja expression evaluated with strict undefined.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior, Value};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::Secret;
use crate::deployment::Webhook;
use crate::secret::MASK;

/// The values `{{armory.*}}` offers.
pub const ARMORY_KEYS: &[&str] =
    &["callbackUri", "applicationName", "environmentName", "deploymentId", "accountName", "namespace"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder {placeholder}: {reason}")]
    Unknown { placeholder: String, reason: String },
    #[error("placeholder {placeholder}: {reason}")]
    Invalid { placeholder: String, reason: String },
    #[error("a '{{{{' at character {0} is never closed with '}}}}'")]
    Unclosed(usize),
    #[error("template statements ({{% ... %}}) are not supported; use {{{{ placeholder }}}} only")]
    Statement,
    #[error("{0}")]
    Result(String),
}

/// What the placeholders of one run resolve to.
#[derive(Debug, Clone, Default)]
pub struct Values {
    pub armory: BTreeMap<String, String>,
    pub context: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, Secret>,
}

/// Where a template's text goes, which decides how values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Uri,
    HeaderValue,
    Body { json: bool },
}

enum Piece<'a> {
    Text(&'a str),
    Placeholder { expr: &'a str, raw: &'a str, offset: usize },
}

fn pieces(text: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(found) = text[rest..].find('{').map(|i| rest + i) {
        match text.as_bytes().get(found + 1) {
            Some(b'{') => {
                let close = text[found + 2..].find("}}").ok_or(TemplateError::Unclosed(found))? + found + 2;
                out.push(Piece::Text(&text[rest..found]));
                out.push(Piece::Placeholder {
                    expr: text[found + 2..close].trim(),
                    raw: &text[found..close + 2],
                    offset: found,
                });
                rest = close + 2;
            }
            Some(b'%') => return Err(TemplateError::Statement),
            _ => {
                out.push(Piece::Text(&text[rest..found + 1]));
                rest = found + 1;
            }
        }
    }
    out.push(Piece::Text(&text[rest..]));
    Ok(out)
}

/// `ns.key` with a key of letters, digits, `_` and `-`.
fn simple_path(expr: &str) -> Option<(&str, &str)> {
    let (ns, key) = expr.split_once('.')?;
    let ns_ok = !ns.is_empty() && ns.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let key_ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (ns_ok && key_ok).then_some((ns, key))
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// Checks a template without values: syntax, namespaces, `armory` keys.
pub fn check(text: &str) -> Result<(), TemplateError> {
    for piece in pieces(text)? {
        let Piece::Placeholder { expr, raw, .. } = piece else { continue };
        let unknown = |reason: String| TemplateError::Unknown { placeholder: raw.to_owned(), reason };
        match simple_path(expr) {
            Some(("armory", key)) if !ARMORY_KEYS.contains(&key) => {
                return Err(unknown(format!("armory offers {}", ARMORY_KEYS.join(", "))));
            }
            Some(("armory" | "context" | "secrets", _)) => {}
            Some((ns, _)) => return Err(unknown(format!("{ns:?} is not a namespace; use armory, context or secrets"))),
            None => {
                environment()
                    .compile_expression(expr)
                    .map_err(|e| TemplateError::Invalid { placeholder: raw.to_owned(), reason: e.to_string() })?;
            }
        }
    }
    Ok(())
}

fn lookup(expr: &str, raw: &str, values: &Values, mask: bool) -> Result<String, TemplateError> {
    let unknown = |reason: String| TemplateError::Unknown { placeholder: raw.to_owned(), reason };
    if let Some((ns, key)) = simple_path(expr) {
        return match ns {
            "armory" => values.armory.get(key).cloned().ok_or_else(|| unknown(format!("armory offers {}", ARMORY_KEYS.join(", ")))),
            "context" => values.context.get(key).cloned().ok_or_else(|| {
                unknown(format!(
                    "the context has no key {key:?} (set it in runWebhook.context, the file's context, or --context {key}=VALUE)"
                ))
            }),
            "secrets" => match values.secrets.get(key) {
                Some(_) if mask => Ok(MASK.to_owned()),
                Some(secret) => Ok(secret.expose().to_owned()),
                None => Err(unknown(format!("no secret named {key:?} (store one with: borealis secrets set {key})"))),
            },
            other => Err(unknown(format!("{other:?} is not a namespace; use armory, context or secrets"))),
        };
    }
    let env = environment();
    let compiled = env
        .compile_expression(expr)
        .map_err(|e| TemplateError::Invalid { placeholder: raw.to_owned(), reason: e.to_string() })?;
    let secrets: BTreeMap<String, String> = values
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), if mask { MASK.to_owned() } else { v.expose().to_owned() }))
        .collect();
    let scope = minijinja::context! {
        armory => Value::from_object(values.armory.clone()),
        context => Value::from_object(values.context.clone()),
        secrets => Value::from_object(secrets),
    };
    let value = compiled.eval(scope).map_err(|e| unknown(e.to_string()))?;
    if value.is_undefined() || value.is_none() {
        return Err(unknown("it evaluates to nothing".into()));
    }
    Ok(value.to_string())
}

/// Characters a value may not carry unescaped into a path segment.
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'%');
/// Everything but unreserved characters, for query and fragment values.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[derive(Clone, Copy)]
enum UriPart {
    /// Before the path: scheme, host, port, or a placeholder that is the base URL.
    Prefix,
    Path,
    Component,
}

fn uri_part(template: &str, offset: usize) -> UriPart {
    let Some(scheme_end) = template.find("://") else { return UriPart::Prefix };
    let authority = scheme_end + 3;
    if offset < authority {
        return UriPart::Prefix;
    }
    let path_start = template[authority..].find(['/', '?', '#']).map_or(template.len(), |i| authority + i);
    if offset < path_start {
        return UriPart::Prefix;
    }
    match template.find(['?', '#']) {
        Some(q) if offset > q => UriPart::Component,
        _ => UriPart::Path,
    }
}

/// Whether `offset` in a JSON template lies inside a string literal.
fn in_json_string(template: &str, offset: usize, placeholders: &[(usize, usize)]) -> bool {
    let mut inside = false;
    let mut escaped = false;
    let mut i = 0;
    let bytes = template.as_bytes();
    while i < offset {
        if let Some(&(_, end)) = placeholders.iter().find(|(start, _)| *start == i) {
            i = end;
            continue;
        }
        match bytes[i] {
            _ if escaped => escaped = false,
            b'\\' if inside => escaped = true,
            b'"' => inside = !inside,
            _ => {}
        }
        i += 1;
    }
    inside
}

/// Renders one template for `slot`. With `mask`, secrets render as `********`.
pub fn render(template: &str, slot: Slot, values: &Values, mask: bool) -> Result<String, TemplateError> {
    let parts = pieces(template)?;
    let spans: Vec<(usize, usize)> = parts
        .iter()
        .filter_map(|p| match p {
            Piece::Placeholder { raw, offset, .. } => Some((*offset, offset + raw.len())),
            Piece::Text(_) => None,
        })
        .collect();
    let mut out = String::with_capacity(template.len());
    for piece in parts {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder { expr, raw, offset } => {
                let value = lookup(expr, raw, values, mask)?;
                match slot {
                    Slot::Uri => match uri_part(template, offset) {
                        UriPart::Prefix => out.push_str(&value),
                        UriPart::Path => out.extend(utf8_percent_encode(&value, PATH_SEGMENT)),
                        UriPart::Component => out.extend(utf8_percent_encode(&value, COMPONENT)),
                    },
                    Slot::HeaderValue => {
                        if value.contains(['\r', '\n', '\0']) {
                            return Err(TemplateError::Invalid {
                                placeholder: raw.to_owned(),
                                reason: "its value contains a line break, which would split the header".into(),
                            });
                        }
                        out.push_str(&value);
                    }
                    Slot::Body { json: false } => out.push_str(&value),
                    Slot::Body { json: true } => {
                        let quoted = serde_json::to_string(&value).expect("a string serializes");
                        if in_json_string(template, offset, &spans) {
                            out.push_str(&quoted[1..quoted.len() - 1]);
                        } else if serde_json::from_str::<serde_json::Value>(&value)
                            .is_ok_and(|v| !v.is_object() && !v.is_array())
                        {
                            out.push_str(&value);
                        } else {
                            out.push_str(&quoted);
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A webhook's request with every placeholder resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenderedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// A template problem and the field it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub error: TemplateError,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.error)
    }
}

/// Renders a webhook's URI, headers and body; every problem is reported.
pub fn render_webhook(webhook: &Webhook, values: &Values, mask: bool) -> Result<RenderedRequest, Vec<FieldError>> {
    let path = &webhook.location.path;
    let mut errors = Vec::new();
    let mut field = |field: String, result: Result<String, TemplateError>| match result {
        Ok(text) => Some(text),
        Err(error) => {
            errors.push(FieldError { field, error });
            None
        }
    };
    let url = field(format!("{path}.uriTemplate"), render(&webhook.uri_template, Slot::Uri, values, mask));
    let headers: Vec<Option<(String, String)>> = webhook
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            field(format!("{path}.headers[{i}].value"), render(&h.value, Slot::HeaderValue, values, mask))
                .map(|v| (h.key.clone(), v))
        })
        .collect();
    let json = webhook.body_template.as_deref().is_some_and(|b| b.trim_start().starts_with(['{', '[']))
        || webhook.headers.iter().any(|h| h.key.eq_ignore_ascii_case("content-type") && h.value.contains("json"));
    let body = webhook
        .body_template
        .as_ref()
        .map(|b| field(format!("{path}.bodyTemplate.inline"), render(b, Slot::Body { json }, values, mask)));
    if let Some(url) = &url
        && !mask
        && let Err(e) = url::Url::parse(url).map_err(|e| e.to_string()).and_then(|u| {
            if matches!(u.scheme(), "http" | "https") {
                Ok(())
            } else {
                Err("only http and https are supported".into())
            }
        })
    {
        errors.push(FieldError {
            field: format!("{path}.uriTemplate"),
            error: TemplateError::Result(format!("renders to {url:?}, which is not a valid URL: {e}")),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(RenderedRequest {
        method: webhook.method.clone(),
        url: url.expect("no error"),
        headers: headers.into_iter().map(|h| h.expect("no error")).collect(),
        body: body.map(|b| b.expect("no error")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        let mut v = Values::default();
        v.armory.insert("callbackUri".into(), "https://relay.example/callbacks/abc".into());
        v.context.insert("environment".into(), "staging & prod\"quoted\"".into());
        v.context.insert("team-name".into(), "a/b c".into());
        v.context.insert("count".into(), "5".into());
        v.secrets.insert("token".into(), Secret::new("s3cr3t"));
        v
    }

    #[test]
    fn uri_values_are_encoded_by_position() {
        let url = render(
            "https://ci/{{context.team-name}}/x?cb={{armory.callbackUri}}&e={{context.environment}}",
            Slot::Uri,
            &values(),
            false,
        )
        .unwrap();
        assert_eq!(
            url,
            "https://ci/a%2Fb%20c/x?cb=https%3A%2F%2Frelay.example%2Fcallbacks%2Fabc&e=staging%20%26%20prod%22quoted%22"
        );
        assert_eq!(
            render("{{armory.callbackUri}}/callback", Slot::Uri, &values(), false).unwrap(),
            "https://relay.example/callbacks/abc/callback"
        );
    }

    #[test]
    fn header_values_refuse_line_breaks() {
        let mut v = values();
        v.context.insert("evil".into(), "x\r\nInjected: yes".into());
        let err = render("Bearer {{context.evil}}", Slot::HeaderValue, &v, false).unwrap_err();
        assert!(err.to_string().contains("line break"), "{err}");
        assert_eq!(render("Bearer {{secrets.token}}", Slot::HeaderValue, &v, false).unwrap(), "Bearer s3cr3t");
        assert_eq!(render("Bearer {{secrets.token}}", Slot::HeaderValue, &v, true).unwrap(), "Bearer ********");
    }

    #[test]
    fn json_bodies_escape_strings_and_keep_scalars() {
        let body = render(
            r#"{"env": "{{context.environment}}", "n": {{context.count}}, "t": {{context.team-name}}}"#,
            Slot::Body { json: true },
            &values(),
            false,
        )
        .unwrap();
        assert_eq!(body, r#"{"env": "staging & prod\"quoted\"", "n": 5, "t": "a/b c"}"#);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["env"], "staging & prod\"quoted\"");
    }

    #[test]
    fn undefined_is_an_error_that_names_the_placeholder() {
        let err = render("x {{context.missing}}", Slot::Body { json: false }, &values(), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown placeholder {{context.missing}}: the context has no key \"missing\" (set it in runWebhook.context, the file's context, or --context missing=VALUE)"
        );
        let err = render("{{secrets.nope}}", Slot::HeaderValue, &values(), false).unwrap_err();
        assert!(err.to_string().contains("borealis secrets set nope"), "{err}");
        assert!(check("{{armory.nope}}").unwrap_err().to_string().contains("armory offers callbackUri"));
        assert!(check("{{env.x}}").unwrap_err().to_string().contains("not a namespace"));
        assert_eq!(check("{% if x %}").unwrap_err(), TemplateError::Statement);
        assert!(matches!(check("{{ context.x "), Err(TemplateError::Unclosed(0))));
        assert_eq!(
            render("{{ context.environment | upper }}", Slot::Body { json: false }, &values(), false).unwrap(),
            "STAGING & PROD\"QUOTED\""
        );
        assert!(render("{{ context.nothere | upper }}", Slot::Body { json: false }, &values(), false).is_err());
    }
}
