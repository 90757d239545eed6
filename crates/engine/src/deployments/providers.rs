//! The one query an analysis step makes of a metric provider: Prometheus'
//! instant query, `GET <url>/api/v1/query?query=...&time=...`.
//!
//! A provider with an agent is queried through that agent's tunnel, so the
//! agent's allow-list applies; without one, direct under the address guard.
//! Both go through the [`Caller`], like every other outgoing call.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use borealis_core::deployment::Target;
use borealis_core::template::{self, SecretUse, Slot};
use borealis_store::MetricProvider;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::caller::Caller;
use crate::outcall::{Keep, Outcall};

/// Asks `provider` for the value of `query` at `time`: one number, or why
/// not. Its headers read only secrets marked for providers; what it answers
/// comes back scrubbed of every secret ([`Caller::call`]).
pub async fn query(caller: &Caller, provider: &MetricProvider, query: &str, time: SystemTime) -> Result<f64, String> {
    let secrets = caller.keyring().await.map_err(|e| e.to_string())?;
    let values = secrets.values(SecretUse::Providers, caller.signing_default(), BTreeMap::new(), BTreeMap::new());
    let (url, pairs) = request(provider, query, time, &values, false)?;
    let mut headers = HeaderMap::new();
    for (key, value) in pairs {
        let name = HeaderName::from_bytes(key.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
        headers.insert(name, value);
    }
    let via = match &provider.agent {
        Some(agent) => format!("provider {} (through agent {agent})", provider.name),
        None => format!("provider {}", provider.name),
    };
    let call = Outcall {
        agent: caller.agent(provider.agent.as_ref()),
        method: http::Method::GET,
        url: url.to_string(),
        headers,
        body: bytes::Bytes::new(),
        timeout: Duration::from_secs(30),
        keep: Keep::Whole(1024 * 1024),
    };
    let answer = caller.call(call).await.map_err(|e| format!("{via} could not be queried: {}", e.detail))?;
    let body = answer.body.map_err(|e| format!("{via}: {e}"))?;
    interpret(&via, answer.status, body.as_bytes())
}

/// The instant query's URL for `query` at `time`, and the provider's
/// headers rendered with `values` (masked, for showing, with `mask`).
pub fn request(
    provider: &MetricProvider,
    query: &str,
    time: SystemTime,
    values: &template::Values,
    mask: bool,
) -> Result<(url::Url, Vec<(String, String)>), String> {
    let mut headers = Vec::with_capacity(provider.headers.len());
    for (key, value) in &provider.headers {
        let rendered = template::render(value, Slot::HeaderValue, values, mask)
            .map_err(|e| format!("provider {} header {key}: {e}", provider.name))?;
        headers.push((key.clone(), rendered));
    }
    let mut url = url::Url::parse(&provider.url).map_err(|e| format!("provider {} url: {e}", provider.name))?;
    let path = format!("{}/api/v1/query", url.path().trim_end_matches('/'));
    url.set_path(&path);
    let seconds = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    url.query_pairs_mut().append_pair("query", query).append_pair("time", &format!("{seconds:.3}"));
    Ok((url, headers))
}

/// A judgment run's window.
pub struct Window {
    pub start: SystemTime,
    pub end: SystemTime,
    pub interval_seconds: u64,
}

/// What `{{armory.*}}` holds in a query of deployment `id` over `window`.
pub fn window_values(application: &str, id: &str, target: &Target, window: &Window) -> BTreeMap<String, String> {
    let millis = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
    let (start, end) = (millis(window.start), millis(window.end));
    let mut armory: BTreeMap<String, String> = BTreeMap::new();
    armory.insert("applicationName".into(), application.to_owned());
    armory.insert("environmentName".into(), target.name.clone());
    armory.insert("deploymentId".into(), id.to_owned());
    if let Some(account) = &target.account {
        armory.insert("accountName".into(), account.clone());
    }
    if let Some(namespace) = &target.namespace {
        armory.insert("namespace".into(), namespace.clone());
    }
    armory.insert("startTimeIso8601".into(), crate::clock::rfc3339(window.start));
    armory.insert("startTimeEpochSeconds".into(), (start / 1000).to_string());
    armory.insert("startTimeEpochMillis".into(), start.to_string());
    armory.insert("endTimeIso8601".into(), crate::clock::rfc3339(window.end));
    armory.insert("endTimeEpochSeconds".into(), (end / 1000).to_string());
    armory.insert("endTimeEpochMillis".into(), end.to_string());
    armory.insert("intervalMillis".into(), (window.interval_seconds * 1000).to_string());
    armory.insert("intervalSeconds".into(), window.interval_seconds.to_string());
    armory.insert("promQlStepInterval".into(), format!("{}s", ((end - start) / 1000).max(1)));
    armory
}

/// Prometheus' answer, as one number or a reason it is not one.
fn interpret(via: &str, status: u16, body: &[u8]) -> Result<f64, String> {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let prom_error = parsed.as_ref().filter(|v| v["status"] == "error").map(|v| {
        format!("{}: {}", v["errorType"].as_str().unwrap_or("error"), v["error"].as_str().unwrap_or("no detail"))
    });
    if !(200..300).contains(&status) {
        let detail = prom_error.unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        return Err(format!("{via} answered HTTP {status}: {detail}"));
    }
    if let Some(detail) = prom_error {
        return Err(format!("{via} answered status error: {detail}"));
    }
    let Some(v) = parsed else { return Err(format!("{via} answered something that is not Prometheus JSON")) };
    let data = &v["data"];
    let value = match data["resultType"].as_str() {
        Some("scalar") => data["result"][1].as_str().map(str::to_owned),
        Some("vector") => {
            let result = data["result"].as_array().cloned().unwrap_or_default();
            match result.len() {
                0 => return Err(format!("{via}: the query returned an empty result")),
                1 => result[0]["value"][1].as_str().map(str::to_owned),
                n => return Err(format!("{via}: the query returned {n} series, not a single number")),
            }
        }
        Some(other) => return Err(format!("{via}: the query returned a {other}, not a single number")),
        None => return Err(format!("{via} answered without a resultType")),
    };
    let Some(text) = value else { return Err(format!("{via}: the result holds no value")) };
    match text.parse::<f64>() {
        Ok(n) if n.is_nan() => Err(format!("{via}: the query returned NaN")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{via}: the query returned {text:?}, not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::interpret;

    #[test]
    fn only_a_single_number_passes() {
        let ok = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"4.5"]}]}}"#;
        assert_eq!(interpret("p", 200, ok), Ok(4.5));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#;
        assert_eq!(interpret("p", 200, scalar), Ok(2.0));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(interpret("p", 200, empty).unwrap_err().contains("empty result"));
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert!(interpret("p", 200, nan).unwrap_err().contains("NaN"));
        let text = br#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        assert!(interpret("p", 200, text).unwrap_err().contains("a string, not a single number"));
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(interpret("p", 400, bad).unwrap_err(), "p answered HTTP 400: bad_data: parse error");
        assert!(interpret("p", 500, b"boom").unwrap_err().contains("HTTP 500: boom"));
    }
}
