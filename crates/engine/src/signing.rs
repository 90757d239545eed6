//! Standard Webhooks headers on every outgoing call: webhook runs, Flagger
//! hooks and driver calls all pick their keys with [`keys`] and stamp their
//! request with a [`Stamp`]; the signing itself is
//! [`borealis_core::signing`].
//!
//! Keys: the call's own `signing:` if it has one, else the relay's
//! `webhook_signing_secret`, else none (the call carries `webhook-id` only).
//! Either way a key is a stored secret marked for signing: a file names its
//! keys and never holds them, and cannot pick one marked for other uses.

use std::collections::BTreeMap;
use std::time::SystemTime;

use borealis_core::deployment::{DeploymentFile, Driver, Signing};
use borealis_core::render;
use borealis_core::signing::{self, SigningKey};
use borealis_core::template::{Keyring, SecretUse};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::vault::Vault;

/// The keys that sign a call with `own` signing (or none), from `secrets`
/// (as the vault gave them). A file's keys must be marked for signing; the
/// relay's `default`, which the operator names, signs whatever its marks
/// (templates can never read it). An error names the field or the option.
pub fn keys(default: Option<&str>, own: Option<&Signing>, secrets: &Keyring) -> Result<Vec<SigningKey>, String> {
    let key = |name: &str, from: &dyn Fn() -> String| {
        let found = if default == Some(name) {
            secrets.get(name).map(Ok)
        } else {
            secrets.get_for(name, SecretUse::Signing, None)
        };
        let secret = match found {
            Some(Ok(secret)) => secret,
            Some(Err(why)) => return Err(format!("{} names secret {name:?}, which {why}", from())),
            None => {
                return Err(format!(
                    "{} names secret {name:?}, which is not stored (borealis secrets set {name} --use signing)",
                    from()
                ));
            }
        };
        SigningKey::from_secret(secret.expose())
            .map_err(|e| format!("{} names secret {name:?}, which cannot be a signing key: {e}", from()))
    };
    match (own, default) {
        (Some(own), _) => own.secrets.iter().map(|name| key(name, &|| own.location.path.clone())).collect(),
        (None, Some(name)) => Ok(vec![key(name, &|| "the relay's webhook_signing_secret".to_owned())?]),
        (None, None) => Ok(Vec::new()),
    }
}

/// Every secret problem of a deployment file: each `signing:` (webhooks,
/// Flagger hooks, webhook drivers) must name stored, usable secrets marked
/// for signing, and so must the relay's default if a call in the file has
/// none of its own; and the webhooks' templates may read only secrets
/// marked for webhooks, never the relay's own signing key (`default`).
pub fn check_file(default: Option<&str>, file: &DeploymentFile, secrets: &Keyring) -> Vec<String> {
    let drivers = file.targets.iter().filter_map(|t| match &t.driver {
        Driver::Webhook { signing, .. } => Some(signing.as_ref()),
        Driver::Record => None,
    });
    let signings: Vec<Option<&Signing>> = file
        .webhooks
        .iter()
        .map(|w| w.signing.as_ref())
        .chain(file.hooks.iter().map(|h| h.signing.as_ref()))
        .chain(drivers)
        .collect();
    let mut problems: Vec<String> =
        signings.iter().flatten().filter_map(|s| keys(default, Some(s), secrets).err()).collect();
    if signings.iter().any(Option::is_none)
        && let Err(problem) = keys(default, None, secrets)
    {
        problems.push(problem);
    }
    let values = secrets.values(SecretUse::Webhooks, default, BTreeMap::new(), BTreeMap::new());
    for webhook in &file.webhooks {
        problems.extend(render::check_webhook_secrets(webhook, &values).iter().map(ToString::to_string));
    }
    problems
}

/// [`keys`], reading the vault only when a key is needed.
pub async fn keys_from_vault(
    vault: &Vault,
    team: &str,
    default: Option<&str>,
    own: Option<&Signing>,
) -> Result<Vec<SigningKey>, String> {
    if own.is_none() && default.is_none() {
        return Ok(Vec::new());
    }
    let secrets = vault.keyring(team).await.map_err(|e| format!("the signing secrets cannot be read: {e}"))?;
    keys(default, own, &secrets)
}

/// The Standard Webhooks headers of one attempt, made now.
#[derive(Debug, Clone)]
pub struct Stamp(Vec<(HeaderName, HeaderValue)>);

impl Stamp {
    /// `webhook-id` (`id`, made header-safe), and with `keys` also
    /// `webhook-timestamp` (now) and `webhook-signature` over exactly `body`.
    pub fn new(id: &str, body: &[u8], keys: &[SigningKey]) -> Self {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let id = signing::safe_id(id);
        let headers = signing::headers(&id, now, body, keys)
            .into_iter()
            .map(|(name, value)| {
                // Safe ids, digits and base64 are always valid header values.
                (HeaderName::from_static(name), HeaderValue::from_str(&value).expect("a header-safe value"))
            })
            .collect();
        Self(headers)
    }

    /// Puts the headers on `headers`, replacing any of the three names
    /// already there: the relay owns them.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in signing::HEADERS {
            headers.remove(name);
        }
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// The headers as text, to record with the request.
    pub fn pairs(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.0.iter().map(|(name, value)| (name.to_string(), value.to_str().unwrap_or_default().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borealis_core::deployment::Location;

    fn secrets() -> Keyring {
        use borealis_core::Secret;
        use borealis_core::template::Uses;
        let mut keys = Keyring::default();
        let signing = Uses::from([SecretUse::Signing]);
        keys.insert("new", Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), signing.clone());
        keys.insert("old", Secret::new("plain text key"), signing.clone());
        keys.insert("broken", Secret::new("whsec_***"), signing);
        keys.insert("api_token", Secret::new("a webhook's token"), SecretUse::default_uses());
        keys
    }

    fn own(names: &[&str]) -> Signing {
        Signing {
            secrets: names.iter().map(|n| n.to_string()).collect(),
            location: Location { path: "webhooks[0].signing".into(), line: 7, column: 5 },
        }
    }

    #[test]
    fn a_calls_own_signing_wins_over_the_relays_default() {
        let mut config: Option<&str> = None;
        assert!(keys(config, None, &secrets()).unwrap().is_empty());
        config = Some("old");
        assert_eq!(keys(config, None, &secrets()).unwrap().len(), 1);
        assert_eq!(keys(config, Some(&own(&["new", "old"])), &secrets()).unwrap().len(), 2);
    }

    #[test]
    fn missing_or_unusable_secrets_are_named() {
        let mut config: Option<&str> = None;
        let err = keys(config, Some(&own(&["new", "gone"])), &secrets()).unwrap_err();
        assert_eq!(
            err,
            "webhooks[0].signing names secret \"gone\", which is not stored (borealis secrets set gone --use signing)"
        );
        let err = keys(config, Some(&own(&["api_token"])), &secrets()).unwrap_err();
        assert_eq!(
            err,
            "webhooks[0].signing names secret \"api_token\", which may not be used for signing (it is marked for webhooks)"
        );
        // The relay's own key, which the operator names, signs whatever its
        // marks (a plain-text key is a key, as "old" shows).
        assert_eq!(keys(Some("api_token"), None, &secrets()).unwrap().len(), 1);
        let err = keys(config, Some(&own(&["broken"])), &secrets()).unwrap_err();
        assert!(
            err.starts_with(
                "webhooks[0].signing names secret \"broken\", which cannot be a signing key: it starts with whsec_"
            ),
            "{err}"
        );
        assert!(!err.contains("***"), "the value is not shown: {err}");
        config = Some("gone");
        let err = keys(config, None, &secrets()).unwrap_err();
        assert!(err.starts_with("the relay's webhook_signing_secret names secret \"gone\""), "{err}");
    }

    #[test]
    fn a_deployment_file_is_checked_for_every_signing() {
        let text = "\
webhooks:
  - {name: a, method: POST, uriTemplate: 'https://x/', networkMode: direct, signing: {secret: '{{secrets.gone}}'}}
analysis:
  webhooks:
    - {name: gate, type: confirm-rollout, url: 'http://x/', signing: {secrets: ['{{secrets.new}}', '{{secrets.broken}}']}}
targets:
  prod:
    driver:
      webhook: {url: 'http://x/actions'}
";
        let file = borealis_core::deployment::parse(text).unwrap().file;
        let mut config: Option<&str> = None;
        let problems = check_file(config, &file, &secrets());
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("webhooks[0].signing names secret \"gone\""), "{problems:?}");
        assert!(problems[1].starts_with("analysis.webhooks[0].signing names secret \"broken\""), "{problems:?}");
        config = Some("missing");
        let problems = check_file(config, &file, &secrets());
        assert!(
            problems[2].starts_with("the relay's webhook_signing_secret"),
            "the driver uses the default: {problems:?}"
        );
    }

    #[test]
    fn a_files_templates_read_only_webhook_secrets_and_never_the_relays_key() {
        let text = "\
webhooks:
  - name: a
    method: POST
    uriTemplate: 'https://x/{{secrets.api_token}}'
    networkMode: direct
    headers:
      - {key: X-Ok, value: '{{secrets.api_token}}'}
      - {key: X-Key, value: 'Bearer {{ secrets.old | upper }}'}
    bodyTemplate: {inline: '{{secrets.new}}'}
";
        let file = borealis_core::deployment::parse(text).unwrap().file;
        let problems = check_file(Some("new"), &file, &secrets());
        assert_eq!(
            problems,
            [
                "webhooks[0].headers[1].value: secret \"old\" may not be used in webhooks (it is marked for signing)",
                "webhooks[0].bodyTemplate.inline: secret \"new\" may not be used in webhooks (it is the relay's own signing key, webhook_signing_secret)",
            ]
        );
    }

    #[test]
    fn a_stamp_replaces_the_headers_it_owns() {
        let keys = keys(None, Some(&own(&["new"])), &secrets()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("webhook-signature", HeaderValue::from_static("v1,forged"));
        headers.insert("webhook-timestamp", HeaderValue::from_static("1"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let stamp = Stamp::new("d1:prod/gate/confirm-rollout/start gate", b"{}", &keys);
        stamp.apply(&mut headers);
        assert_eq!(headers["webhook-id"], "d1:prod/gate/confirm-rollout/start%20gate");
        let timestamp: u64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
        let expected = signing::sign("d1:prod/gate/confirm-rollout/start%20gate", timestamp, b"{}", &keys);
        assert_eq!(headers["webhook-signature"], expected.as_str());
        assert_eq!(headers.get_all("webhook-signature").iter().count(), 1);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(stamp.pairs().count(), 3);

        let mut unsigned = HeaderMap::new();
        unsigned.insert("webhook-signature", HeaderValue::from_static("v1,forged"));
        Stamp::new("run-1", b"", &[]).apply(&mut unsigned);
        assert_eq!(unsigned.len(), 1);
        assert_eq!(unsigned["webhook-id"], "run-1");
    }
}
