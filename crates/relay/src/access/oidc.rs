//! People signing in through an OpenID Connect provider: the authorization
//! code flow with PKCE. The provider is found by discovery (and found again
//! when its keys may have changed); the ID token is checked against its keys,
//! issuer, audience, expiry and the sign-in's nonce by `openidconnect`, and
//! the sign-in's `state` is checked here. What a sign-in must remember from
//! its start to its callback travels sealed in a cookie ([`Started`]), so any
//! replica can finish it.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64_STANDARD, URL_SAFE_NO_PAD as B64};
use borealis_egress::reqwest;
use borealis_store::Person;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGenderClaim, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, ClientId, ClientSecret, IdToken, IdTokenVerifier, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, ProviderMetadata,
};

use crate::config::OidcSettings;

/// How long a sign-in may take, from leaving for the provider to coming back.
pub const SIGN_IN_WITHIN: Duration = Duration::from_secs(600);
/// How long what discovery found is used before it is asked again.
const DISCOVERY_FRESH_FOR: Duration = Duration::from_secs(300);
/// The most groups taken from a token, and the longest group name.
const MAX_GROUPS: usize = 256;
const MAX_GROUP_BYTES: usize = 256;
/// The largest answer read from the provider.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// Claims past the standard ones, where the groups claim is found.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OtherClaims {
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for OtherClaims {}

type Token = IdToken<OtherClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// Discovery's answer past the core fields: where the device flow starts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct DeviceEndpoint {
    #[serde(default)]
    device_authorization_endpoint: Option<url::Url>,
}

impl AdditionalProviderMetadata for DeviceEndpoint {}

type Metadata = ProviderMetadata<
    DeviceEndpoint,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The grant a device flow's polls use.
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A device flow started at the provider: what the person is shown, and
/// what the poller sends back.
#[derive(Debug, Clone)]
pub struct DeviceStarted {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    /// Seconds between polls.
    pub interval: u64,
    /// Seconds the code is good for.
    pub expires_in: u64,
}

/// A device flow, polled once.
#[derive(Debug, Clone)]
pub enum DevicePoll {
    /// Not approved yet; `slow_down`: the provider asks for longer pauses.
    Pending {
        slow_down: bool,
    },
    Done(Person),
}

/// Why a sign-in did not sign anyone in. The detail is for the person
/// signing in and the log; it never holds a token or a secret.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// The provider could not be reached or found (a retry may pass).
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("the sign-in expired or was started elsewhere: sign in again")]
    Expired,
    #[error("the sign-in's state does not match the one it was started with: sign in again")]
    StateMismatch,
    #[error("the identity provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the identity provider's answer is not acceptable: {0}")]
    Invalid(String),
}

/// What a sign-in remembers from its start to its callback.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Started {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// The console page to go to once signed in.
    pub next: String,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

/// The relay as a client of the provider.
pub struct SignIn {
    settings: OidcSettings,
    redirect_uri: String,
    http: reqwest::Client,
    discovered: tokio::sync::Mutex<Option<(Metadata, std::time::Instant)>>,
}

fn random(bytes: usize) -> String {
    B64.encode(borealis_core::secret::random_bytes(bytes))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HttpError(String);

impl SignIn {
    /// The provider groups whose people are organization admins.
    pub fn admin_groups(&self) -> &[String] {
        &self.settings.admin_groups
    }

    /// A client whose callback is `<public_base>/sign-in/oidc/callback`.
    pub fn new(settings: OidcSettings, public_base: &str) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // A redirect could send the client's secret elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()?;
        let redirect_uri = format!("{}/sign-in/oidc/callback", public_base.trim_end_matches('/'));
        Ok(Self { settings, redirect_uri, http, discovered: tokio::sync::Mutex::default() })
    }

    /// The provider's metadata and keys, by discovery; `fresh` asks again
    /// whatever was found before.
    async fn provider(&self, fresh: bool) -> Result<Metadata, SignInError> {
        let mut found = self.discovered.lock().await;
        if let Some((metadata, at)) = found.as_ref()
            && !fresh
            && at.elapsed() < DISCOVERY_FRESH_FOR
        {
            return Ok(metadata.clone());
        }
        let issuer = IssuerUrl::new(self.settings.issuer.as_str().trim_end_matches('/').to_owned())
            .map_err(|e| SignInError::Unreachable(format!("issuer {}: {e}", self.settings.issuer)))?;
        let client = self.http.clone();
        let http = move |request: openidconnect::HttpRequest| {
            let client = client.clone();
            async move { send(&client, request).await }
        };
        let metadata = match Metadata::discover_async(issuer.clone(), &http).await {
            Ok(metadata) => metadata,
            // Some issuers are written with a trailing slash, and their
            // discovery document says so.
            Err(_) if self.settings.issuer.as_str().ends_with('/') => {
                let with_slash = IssuerUrl::new(self.settings.issuer.to_string())
                    .map_err(|e| SignInError::Unreachable(e.to_string()))?;
                Metadata::discover_async(with_slash, &http).await.map_err(|e| SignInError::Unreachable(chain(&e)))?
            }
            Err(err) => return Err(SignInError::Unreachable(chain(&err))),
        };
        *found = Some((metadata.clone(), std::time::Instant::now()));
        Ok(metadata)
    }

    /// Where to send the browser, and what to remember until it comes back.
    pub async fn start(&self, next: &str) -> Result<(url::Url, Started), SignInError> {
        let metadata = self.provider(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let started = Started {
            state: random(24),
            nonce: random(24),
            verifier: verifier.secret().clone(),
            next: next.to_owned(),
            expires_at: unix_now() + SIGN_IN_WITHIN.as_secs(),
        };
        let mut url = metadata.authorization_endpoint().url().clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.settings.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &self.settings.scopes.join(" "))
            .append_pair("state", &started.state)
            .append_pair("nonce", &started.nonce)
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", "S256");
        Ok((url, started))
    }

    /// The person the provider vouches for, from the callback's `code` and
    /// `state`, for the sign-in `started`.
    pub async fn finish(&self, started: &Started, code: &str, state: &str) -> Result<Person, SignInError> {
        if started.expires_at <= unix_now() {
            return Err(SignInError::Expired);
        }
        if !crate::auth::same_bytes(started.state.as_bytes(), state.as_bytes()) {
            return Err(SignInError::StateMismatch);
        }
        let metadata = self.provider(false).await?;
        let token = self.exchange(&metadata, code, &started.verifier).await?;
        let token: Token =
            token.parse().map_err(|e| SignInError::Invalid(format!("the ID token cannot be read: {e}")))?;
        let nonce = Nonce::new(started.nonce.clone());
        match self.person(&metadata, &token, &nonce) {
            Ok(person) => Ok(person),
            // Its keys may have changed since discovery: once more, freshly.
            Err(SignInError::Invalid(_)) => self.person(&self.provider(true).await?, &token, &nonce),
            Err(other) => Err(other),
        }
    }

    /// The code, exchanged at the token endpoint (the PKCE verifier sent):
    /// the ID token's text.
    async fn exchange(&self, metadata: &Metadata, code: &str, verifier: &str) -> Result<String, SignInError> {
        let verifier = PkceCodeVerifier::new(verifier.to_owned());
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", verifier.secret().as_str()),
        ];
        match self.token_request(metadata, &form).await? {
            Ok(value) => id_token_of(&value),
            Err(refusal) => Err(SignInError::Refused(refusal.to_string())),
        }
    }

    /// A device flow, started at the provider for the relay's client.
    pub async fn start_device(&self) -> Result<DeviceStarted, SignInError> {
        let metadata = self.provider(false).await?;
        let Some(endpoint) = metadata.additional_metadata().device_authorization_endpoint.clone() else {
            return Err(SignInError::Unreachable(
                "the provider offers no device flow (device_authorization_endpoint)".into(),
            ));
        };
        let scope = self.settings.scopes.join(" ");
        let value =
            match self.post_form(("device authorization endpoint", endpoint), &[("scope", scope.as_str())]).await? {
                Ok(value) => value,
                Err(refusal) => return Err(SignInError::Refused(refusal.to_string())),
            };
        let text = |key: &str| value[key].as_str().map(str::to_owned);
        let (Some(device_code), Some(user_code), Some(verification_uri)) =
            (text("device_code"), text("user_code"), text("verification_uri"))
        else {
            return Err(SignInError::Invalid("the device authorization answer lacks its codes".into()));
        };
        Ok(DeviceStarted {
            device_code,
            user_code,
            verification_uri,
            verification_uri_complete: text("verification_uri_complete"),
            interval: value["interval"].as_u64().unwrap_or(5).clamp(1, 60),
            expires_in: value["expires_in"].as_u64().unwrap_or(600),
        })
    }

    /// Asks once whether the person approved device flow `device_code`.
    pub async fn poll_device(&self, device_code: &str) -> Result<DevicePoll, SignInError> {
        let metadata = self.provider(false).await?;
        let form = [("grant_type", DEVICE_GRANT), ("device_code", device_code)];
        let value = match self.token_request(&metadata, &form).await? {
            Ok(value) => value,
            Err(refusal) if refusal.error == "authorization_pending" => {
                return Ok(DevicePoll::Pending { slow_down: false });
            }
            Err(refusal) if refusal.error == "slow_down" => return Ok(DevicePoll::Pending { slow_down: true }),
            Err(refusal) => return Err(SignInError::Refused(refusal.to_string())),
        };
        let token: Token = id_token_of(&value)?
            .parse()
            .map_err(|e| SignInError::Invalid(format!("the ID token cannot be read: {e}")))?;
        // A device flow's ID token carries no nonce: none was sent.
        let no_nonce = |_: Option<&Nonce>| -> Result<(), String> { Ok(()) };
        match self.person(&metadata, &token, no_nonce) {
            Ok(person) => Ok(DevicePoll::Done(person)),
            Err(SignInError::Invalid(_)) => {
                self.person(&self.provider(true).await?, &token, no_nonce).map(DevicePoll::Done)
            }
            Err(other) => Err(other),
        }
    }

    /// A form POSTed to the token endpoint.
    async fn token_request(
        &self,
        metadata: &Metadata,
        form: &[(&str, &str)],
    ) -> Result<Result<serde_json::Value, Refusal>, SignInError> {
        let Some(endpoint) = metadata.token_endpoint() else {
            return Err(SignInError::Unreachable("the provider names no token endpoint".into()));
        };
        self.post_form(("token endpoint", endpoint.url().clone()), form).await
    }

    /// `form` POSTed to `endpoint`, the client authenticated with HTTP
    /// Basic: the JSON answer, or the provider's refusal.
    async fn post_form(
        &self,
        (name, endpoint): (&'static str, url::Url),
        form: &[(&str, &str)],
    ) -> Result<Result<serde_json::Value, Refusal>, SignInError> {
        let encode = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let basic = B64_STANDARD.encode(format!(
            "{}:{}",
            encode(&self.settings.client_id),
            encode(self.settings.client_secret.expose())
        ));
        let reply = self
            .http
            .post(endpoint)
            .header(http::header::AUTHORIZATION, format!("Basic {basic}"))
            .header(http::header::ACCEPT, "application/json")
            .form(form)
            .send()
            .await
            .map_err(|e| {
                SignInError::Unreachable(format!("its {name}: {}", borealis_egress::client::root_cause(&e)))
            })?;
        let status = reply.status();
        let body = read_limited(reply).await.map_err(SignInError::Unreachable)?;
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if status.is_success() {
            return Ok(Ok(value));
        }
        Ok(Err(Refusal {
            endpoint: name,
            status: status.as_u16(),
            error: value["error"].as_str().unwrap_or("no error code").chars().take(64).collect(),
            description: value["error_description"].as_str().map(|d| d.chars().take(200).collect()),
        }))
    }

    /// The ID token checked (signature, issuer, audience, expiry, nonce),
    /// and the person it names.
    fn person(
        &self,
        metadata: &Metadata,
        token: &Token,
        nonce: impl openidconnect::NonceVerifier,
    ) -> Result<Person, SignInError> {
        let verifier: IdTokenVerifier<'_, CoreJsonWebKey> = IdTokenVerifier::new_confidential_client(
            ClientId::new(self.settings.client_id.clone()),
            ClientSecret::new(self.settings.client_secret.expose().to_owned()),
            metadata.issuer().clone(),
            metadata.jwks().clone(),
        );
        let claims = token.claims(&verifier, nonce).map_err(|e| SignInError::Invalid(format!("the ID token: {e}")))?;
        let subject = claims.subject().as_str().to_owned();
        let name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_owned())
            .or_else(|| claims.email().map(|e| e.as_str().to_owned()))
            .or_else(|| claims.preferred_username().map(|u| u.as_str().to_owned()))
            .unwrap_or_else(|| subject.clone());
        let groups = groups_of(claims.additional_claims().rest.get(&self.settings.groups_claim));
        Ok(Person { subject, name, groups })
    }

    /// The cookie value that carries `started`: its JSON and a tag under
    /// the key replicas share.
    pub fn seal(auth: &crate::auth::Authority, started: &Started) -> String {
        let body = B64.encode(serde_json::to_vec(started).expect("a sign-in serializes"));
        let tag = auth.tag("oidc-sign-in", &body);
        format!("{body}.{tag}")
    }

    /// The sign-in a cookie value carries, if its tag holds.
    pub fn unseal(auth: &crate::auth::Authority, value: &str) -> Option<Started> {
        let (body, tag) = value.split_once('.')?;
        if !auth.tag_holds("oidc-sign-in", body, tag) {
            return None;
        }
        serde_json::from_slice(&B64.decode(body).ok()?).ok()
    }
}

/// What the provider said when it refused a request.
#[derive(Debug, Clone)]
struct Refusal {
    /// Which of its endpoints refused.
    endpoint: &'static str,
    status: u16,
    error: String,
    description: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "its {} answered {} ({}", self.endpoint, self.status, self.error)?;
        if let Some(description) = &self.description {
            write!(f, ": {description}")?;
        }
        f.write_str(")")
    }
}

/// The ID token of a token endpoint's answer.
fn id_token_of(value: &serde_json::Value) -> Result<String, SignInError> {
    value["id_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| SignInError::Invalid("the token endpoint's answer holds no ID token".into()))
}

/// A groups claim's names: a list of strings, or one string; bounded.
fn groups_of(claim: Option<&serde_json::Value>) -> Vec<String> {
    let names: Vec<String> = match claim {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    };
    names.into_iter().filter(|g| !g.is_empty() && g.len() <= MAX_GROUP_BYTES).take(MAX_GROUPS).collect()
}

/// An error with its causes, as one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        text.push_str(&format!(": {next}"));
        cause = next.source();
    }
    text
}

/// The body of `reply`, at most [`MAX_REPLY_BYTES`].
async fn read_limited(mut reply: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = reply.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(format!("its answer is larger than {MAX_REPLY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// One request of discovery (the configuration, the keys), by reqwest.
async fn send(
    client: &reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let reply = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError(borealis_egress::client::root_cause(&e).to_string()))?;
    let mut response = http::Response::builder().status(reply.status());
    if let Some(headers) = response.headers_mut() {
        *headers = reply.headers().clone();
    }
    let body = read_limited(reply).await.map_err(HttpError)?;
    response.body(body).map_err(|e| HttpError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_groups_claim_is_a_list_or_one_name_and_is_bounded() {
        assert_eq!(groups_of(Some(&serde_json::json!(["a", "b", 3, ""]))), ["a", "b"]);
        assert_eq!(groups_of(Some(&serde_json::json!("ops"))), ["ops"]);
        assert!(groups_of(Some(&serde_json::json!({"a": 1}))).is_empty());
        assert!(groups_of(None).is_empty());
        let many: Vec<String> = (0..1000).map(|i| format!("g{i}")).collect();
        assert_eq!(groups_of(Some(&serde_json::json!(many))).len(), MAX_GROUPS);
        assert!(groups_of(Some(&serde_json::json!(["x".repeat(300)]))).is_empty());
    }
}
