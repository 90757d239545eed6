//! The relay's HTTP API as the CLI calls it: the admin token, typed JSON
//! calls, and problem+json replies turned into failures.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::args::Cli;

/// A failure, with the exit code it deserves: 1 failed, 2 bad input.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn failed(message: impl Into<String>) -> Self {
        Self { code: 1, message: message.into() }
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self { code: 2, message: message.into() }
    }
}

/// A whole deployment or run id: a UUID's 36 characters.
const FULL_ID_LEN: usize = 36;

pub struct Relay {
    pub http: reqwest::Client,
    base: url::Url,
    pub token: String,
    /// `--team`, sent as `?team=` with every request.
    team: Option<String>,
}

impl Relay {
    pub fn new(cli: &Cli) -> Result<Self, Failure> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A person's or service account's token first, then the sign-in
        // `borealis login` kept for this relay, then the admin token.
        let personal = std::env::var("BOREALIS_TOKEN").ok().filter(|t| !t.trim().is_empty());
        let personal = personal.or_else(|| crate::login::stored(&cli.relay).map(|login| login.token));
        let token = match (personal, &cli.token) {
            (Some(token), _) => token.trim().to_owned(),
            (None, Some(token)) => token.clone(),
            (None, None) => {
                // The relay's data dir, as the relay names it (in its image,
                // and under its chart), else the default one here.
                let data_dir = std::env::var_os("BOREALIS_DATA_DIR").filter(|d| !d.is_empty());
                let data_dir = data_dir.map_or_else(|| std::path::PathBuf::from("borealis-data"), Into::into);
                std::fs::read_to_string(data_dir.join("admin-token")).map(|t| t.trim().to_owned()).map_err(|_| {
                    Failure::bad_input(
                        "no token: run borealis login, or set BOREALIS_TOKEN (a personal or service account's \
                         token), or pass --token or set BOREALIS_ADMIN_TOKEN (the admin token), or run where \
                         the relay's data dir ($BOREALIS_DATA_DIR, else ./borealis-data) holds admin-token",
                    )
                })?
            }
        };
        Self::with_token(cli, token)
    }

    /// A client that presents `token` (empty: none, for the routes anyone may call).
    pub fn with_token(cli: &Cli, token: String) -> Result<Self, Failure> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &cli.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| Failure::bad_input(format!("--ca-file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Failure::bad_input(format!("--ca-file {}: {e}", path.display())))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| Failure::failed(format!("HTTP client: {e}")))?;
        Ok(Self { http, base: cli.relay.clone(), token, team: cli.team.clone() })
    }

    /// The relay's URL for `path`, which may carry a `?query`.
    pub fn url(&self, path: &str) -> url::Url {
        let (path, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}{path}"));
        url.set_query(query);
        if let Some(team) = &self.team {
            url.query_pairs_mut().append_pair("team", team);
        }
        url
    }

    pub fn unreachable(&self, err: reqwest::Error) -> Failure {
        let mut cause: &dyn std::error::Error = &err;
        while let Some(next) = cause.source() {
            cause = next;
        }
        Failure::failed(format!("cannot reach the relay at {}: {cause}", self.base))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.send(self.http.get(self.url(path)).bearer_auth(&self.token)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.send(self.http.delete(self.url(path)).bearer_auth(&self.token)).await
    }

    /// POSTs `body` as JSON.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, Failure> {
        self.send(self.http.post(self.url(path)).bearer_auth(&self.token).json(body)).await
    }

    /// POSTs with no body (a decision, a cancel).
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.send(self.http.post(self.url(path)).bearer_auth(&self.token)).await
    }

    /// PATCHes with `body` as JSON.
    pub async fn patch<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, Failure> {
        self.send(self.http.patch(self.url(path)).bearer_auth(&self.token).json(body)).await
    }

    /// PUTs `body` as JSON.
    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T, Failure> {
        self.send(self.http.put(self.url(path)).bearer_auth(&self.token).json(body)).await
    }

    /// PUTs `text` as the body.
    pub async fn put_text<T: DeserializeOwned>(&self, path: &str, text: String) -> Result<T, Failure> {
        self.send(self.http.put(self.url(path)).bearer_auth(&self.token).body(text)).await
    }

    /// The full id of the deployment (`what` is "deployment") or webhook run
    /// ("run") that `given` names: the one of the newest whose id starts with
    /// it, when it is the start of an id; else itself, for the relay to say
    /// whether there is one.
    pub async fn resolve(&self, what: &str, given: &str) -> Result<String, Failure> {
        let a_start =
            !given.is_empty() && given.len() < FULL_ID_LEN && given.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if !a_start {
            return Ok(given.to_owned());
        }
        let ids: Vec<String> = if what == "deployment" {
            let list: borealis_api::DeploymentList = self.get("/api/v1/deployments").await?;
            list.deployments.into_iter().map(|d| d.id).collect()
        } else {
            let list: borealis_api::WebhookRunList = self.get("/api/v1/webhook-runs").await?;
            list.runs.into_iter().map(|r| r.id).collect()
        };
        let matching: Vec<&String> = ids.iter().filter(|id| id.starts_with(given)).collect();
        match matching.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Failure::bad_input(format!(
                "no {what} id starts with {given:?} among the newest {}; give more of it, or the whole id",
                ids.len()
            ))),
            several => {
                let shown: Vec<&str> = several.iter().take(5).map(|id| id.as_str()).collect();
                Err(Failure::bad_input(format!(
                    "{given:?} starts {} {what} ids ({}{}): give more of it",
                    several.len(),
                    shown.join(", "),
                    if several.len() > 5 { ", ..." } else { "" }
                )))
            }
        }
    }

    /// GETs `path` with a long poll until `finished` says so.
    pub async fn wait_until_finished<T: DeserializeOwned>(
        &self,
        path: &str,
        finished: impl Fn(&T) -> bool,
    ) -> Result<T, Failure> {
        let path = format!("{path}?wait=30s");
        loop {
            let current = self.get(&path).await?;
            if finished(&current) {
                return Ok(current);
            }
        }
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, Failure> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| Failure::failed(format!("the relay sent invalid JSON: {e}")));
        }
        Err(problem_failure(status, &bytes))
    }
}

/// Turns a problem+json reply into a failure; 400-class input errors exit 2.
pub fn problem_failure(status: reqwest::StatusCode, body: &[u8]) -> Failure {
    let detail = serde_json::from_slice::<borealis_api::Problem>(body)
        .map(|problem| problem.detail)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_owned());
    let message = format!("{detail} ({status})");
    match status.as_u16() {
        400 | 404 | 409 | 413 | 422 => Failure::bad_input(message),
        _ => Failure::failed(message),
    }
}

/// `text` as one path segment.
pub fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
