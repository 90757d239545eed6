//! A webhook rendered into the request it sends: its URI, headers and body
//! through [`template`], each problem named by the field it is in. It lives
//! apart from the template engine, so that the engine knows nothing of the
//! deployment file.

use crate::deployment::Webhook;
use crate::template::{self, RenderLimits, Slot, TemplateError, Values};

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

/// Every field of `webhook` that reads a secret `values` withholds, as
/// [`template::check_secret_uses`] finds them.
pub fn check_webhook_secrets(webhook: &Webhook, values: &Values) -> Vec<FieldError> {
    let path = &webhook.location.path;
    let headers = webhook.headers.iter().enumerate().map(|(i, h)| (format!("{path}.headers[{i}].value"), &h.value));
    std::iter::once((format!("{path}.uriTemplate"), &webhook.uri_template))
        .chain(headers)
        .chain(webhook.body_template.iter().map(|b| (format!("{path}.bodyTemplate.inline"), b)))
        .filter_map(|(field, text)| {
            template::check_secret_uses(text, values).err().map(|error| FieldError { field, error })
        })
        .collect()
}

/// Renders a webhook's URI, headers and body within the default
/// [`RenderLimits`]; every problem is reported.
pub fn render_webhook(webhook: &Webhook, values: &Values, mask: bool) -> Result<RenderedRequest, Vec<FieldError>> {
    render_webhook_with(webhook, values, mask, &RenderLimits::default())
}

/// Renders a webhook's URI, headers and body within `limits`; every problem
/// is reported.
pub fn render_webhook_with(
    webhook: &Webhook,
    values: &Values,
    mask: bool,
    limits: &RenderLimits,
) -> Result<RenderedRequest, Vec<FieldError>> {
    let path = &webhook.location.path;
    let mut errors = Vec::new();
    let mut field = |field: String, result: Result<String, TemplateError>| match result {
        Ok(text) => Some(text),
        Err(error) => {
            errors.push(FieldError { field, error });
            None
        }
    };
    let render = |text: &str, slot: Slot| template::render_with(text, slot, values, mask, limits);
    let url = field(format!("{path}.uriTemplate"), render(&webhook.uri_template, Slot::Uri));
    let headers: Vec<Option<(String, String)>> = webhook
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            field(format!("{path}.headers[{i}].value"), render(&h.value, Slot::HeaderValue)).map(|v| (h.key.clone(), v))
        })
        .collect();
    let json = webhook.body_template.as_deref().is_some_and(|b| b.trim_start().starts_with(['{', '[']))
        || webhook.headers.iter().any(|h| h.key.eq_ignore_ascii_case("content-type") && h.value.contains("json"));
    let body = webhook
        .body_template
        .as_ref()
        .map(|b| field(format!("{path}.bodyTemplate.inline"), render(b, Slot::Body { json })));
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
    let request = RenderedRequest {
        method: webhook.method.clone(),
        url: url.expect("no error"),
        headers: headers.into_iter().map(|h| h.expect("no error")).collect(),
        body: body.map(|b| b.expect("no error")),
    };
    let size = request.url.len()
        + request.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + request.body.as_ref().map_or(0, String::len);
    if size > limits.request_bytes {
        return Err(vec![FieldError {
            field: path.clone(),
            error: TemplateError::RequestTooLarge { size: size as u64, limit: limits.request_bytes as u64 },
        }]);
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::Secret;
    use crate::deployment::{HeaderTemplate, Location, NetworkMode};
    use crate::template::{Keyring, SecretUse, Uses, check};

    fn values() -> Values {
        let mut v = Values::default();
        v.context.insert("environment".into(), "staging & prod\"quoted\"".into());
        v.context.insert("count".into(), "5".into());
        v.secrets.insert("token".into(), Secret::new("s3cr3t"));
        v
    }

    fn webhook(uri: &str, header: &str, body: &str) -> Webhook {
        Webhook {
            name: "hook".into(),
            method: "POST".into(),
            uri_template: uri.into(),
            network_mode: NetworkMode::Direct,
            agent_identifier: None,
            headers: vec![HeaderTemplate { key: "X-Run".into(), value: header.into() }],
            body_template: Some(body.into()),
            retry_count: 0,
            disable_callback: false,
            signing: None,
            location: Location { path: "webhooks[0]".into(), line: 1, column: 1 },
        }
    }

    fn body_error(body: &str) -> String {
        let errors = render_webhook(&webhook("https://ci/x", "run", body), &values(), false).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].to_string()
    }

    #[test]
    fn bombs_are_refused_in_the_field_they_are_in() {
        let field = "webhooks[0].bodyTemplate.inline: placeholder ";
        let err = body_error("{{ range(10000)|join(range(10000)|join) }}");
        assert!(err.starts_with(field) && err.contains("function calls are not supported"), "{err}");
        let e = "context.environment";
        let bomb = format!("{{{{ {e}|replace(\"\", {e})|replace(\"\", {e})|replace(\"\", {e}) }}}}");
        check(&bomb).unwrap();
        let err = body_error(&bomb);
        assert!(err.starts_with(field) && err.ends_with("over the 64 KiB limit of one field"), "{bomb}: {err}");
        let errors = render_webhook(&webhook("https://ci/x", "{{ \"x\" * 3 }}", "ok"), &values(), false).unwrap_err();
        assert!(errors[0].to_string().starts_with("webhooks[0].headers[0].value: placeholder {{ \"x\" * 3 }}: the *"));
    }

    #[test]
    fn a_field_over_its_limit_is_named() {
        let small = RenderLimits { field_bytes: 16, ..RenderLimits::default() };
        let errors =
            render_webhook_with(&webhook("https://ci/x", "{{context.environment}}", "ok"), &values(), false, &small)
                .unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "webhooks[0].headers[0].value: renders at least 22 bytes, over the 16 bytes limit of one field"
        );
    }

    #[test]
    fn the_whole_request_is_checked() {
        let limits = RenderLimits { request_bytes: 50, ..RenderLimits::default() };
        let hook = webhook("https://ci/{{context.count}}", "{{secrets.token}}", &"b".repeat(40));
        let errors = render_webhook_with(&hook, &values(), false, &limits).unwrap_err();
        assert_eq!(
            errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["webhooks[0]: the rendered request is 63 bytes, over the 50 bytes limit"]
        );
        assert!(render_webhook(&hook, &values(), false).is_ok());
        let err = TemplateError::RequestTooLarge { size: 300 * 1024, limit: 256 * 1024 };
        assert_eq!(err.to_string(), "the rendered request is 300 KiB, over the 256 KiB limit");
    }

    #[test]
    fn a_secret_outside_its_use_is_named_with_its_field() {
        let mut keys = Keyring::default();
        keys.insert("team_key", Secret::new("team-signing-key"), Uses::from([SecretUse::Signing]));
        let v = keys.values(SecretUse::Webhooks, None, BTreeMap::new(), BTreeMap::new());
        let hook = webhook("https://ci/x", "{{secrets.team_key}}", "ok");
        let expected =
            "webhooks[0].headers[0].value: secret \"team_key\" may not be used in webhooks (it is marked for signing)";
        assert_eq!(render_webhook(&hook, &v, false).unwrap_err()[0].to_string(), expected);
        // The same, found when the file is read.
        assert_eq!(check_webhook_secrets(&hook, &v).iter().map(ToString::to_string).collect::<Vec<_>>(), [expected]);
    }
}
