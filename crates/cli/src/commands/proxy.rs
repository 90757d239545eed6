//! `proxy`: one request through the relay, streamed; the reply is the
//! destination's, printed as it comes.

use std::io::Write;

use futures_util::StreamExt;

use crate::args::ProxyArgs;
use crate::client::{Failure, Relay, problem_failure};

pub async fn run(relay: &Relay, args: &ProxyArgs) -> Result<(), Failure> {
    let method = reqwest::Method::from_bytes(args.method.as_bytes())
        .map_err(|_| Failure::bad_input(format!("invalid method {:?}", args.method)))?;
    let mut url = relay.url("/api/v1/proxy");
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("url", &args.url);
        if let Some(agent) = &args.agent {
            query.append_pair("agent", agent);
        }
        if let Some(timeout) = &args.timeout {
            query.append_pair("timeout", timeout);
        }
    }
    // The admin token rides in Proxy-Authorization so that -H 'Authorization: ...' reaches the destination.
    let mut request = relay.http.request(method, url).header("proxy-authorization", format!("Bearer {}", relay.token));
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| Failure::bad_input(format!("invalid header {header:?}: expected \"Name: value\"")))?;
        request = request.header(name.trim(), value.trim());
    }
    if let Some(data) = &args.data {
        let body = match data.strip_prefix('@') {
            Some("-") => {
                let mut buffer = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer)
                    .map_err(|e| Failure::bad_input(format!("stdin: {e}")))?;
                buffer
            }
            Some(path) => std::fs::read(path).map_err(|e| Failure::bad_input(format!("-d @{path}: {e}")))?,
            None => data.clone().into_bytes(),
        };
        request = request.body(body);
    }
    let response = request.send().await.map_err(|e| relay.unreachable(e))?;
    if response.headers().contains_key("borealis-error") {
        let status = response.status();
        let body = response.bytes().await.map_err(|e| relay.unreachable(e))?;
        return Err(problem_failure(status, &body));
    }
    let mut stdout = std::io::stdout().lock();
    let write_failed = |e: std::io::Error| -> Failure { crate::out::gone(e) };
    if args.include {
        writeln!(stdout, "{:?} {}", response.version(), response.status()).map_err(write_failed)?;
        for (name, value) in response.headers() {
            writeln!(stdout, "{name}: {}", String::from_utf8_lossy(value.as_bytes())).map_err(write_failed)?;
        }
        writeln!(stdout).map_err(write_failed)?;
    }
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Failure::failed(format!("the reply broke off: {e}")))?;
        stdout.write_all(&chunk).map_err(write_failed)?;
    }
    stdout.flush().map_err(write_failed)?;
    Ok(())
}
