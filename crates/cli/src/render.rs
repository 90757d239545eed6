//! What the CLI prints: tables and views of the API's replies, with text
//! from agents and external systems made safe for a terminal.

use borealis_api::{AgentList, Deployment, DeploymentList, MetricProviderList, SecretList, WebhookRun, WebhookRunList};

/// A reply as pretty JSON, for `--json`.
pub fn json(reply: &impl serde::Serialize) {
    say!("{}", serde_json::to_string_pretty(reply).expect("json"));
}

/// Text from agents and external systems with its control characters
/// escaped, so it cannot move the cursor, recolour or forge lines on the
/// operator's terminal. `keep_lines` keeps newlines and tabs (a Markdown
/// message printed on its own).
pub fn safe(text: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' if keep_lines => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&c.escape_unicode().to_string())
            }
            c => out.push(c),
        }
    }
    out
}

pub fn table<const N: usize>(rows: Vec<[String; N]>) {
    let rows: Vec<[String; N]> = rows.into_iter().map(|row| row.map(|cell| safe(&cell, false))).collect();
    let widths: Vec<usize> = (0..N).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:width$}")).collect();
        say!("{}", line.join("  ").trim_end());
    }
}

/// An optional field as a cell: `-` when absent.
fn cell(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

/// New credentials, under the names the operator guide uses
/// (`client_id`, `client_secret`), and the warning that they show once.
pub fn credentials(fields: &[(&str, &str)]) {
    for (label, value) in fields {
        say!("{label}: {value}");
    }
    eprintln!("Keep the client secret now: it is not shown again.");
}

pub fn agents(reply: &AgentList) {
    let mut rows = vec![
        ["AGENT", "CONNECTED", "INSTANCE", "VERSION", "REMOTE", "REPLICA", "CONNECTED SINCE", "LAST HEARTBEAT"]
            .map(String::from),
    ];
    for agent in &reply.agents {
        let id = agent.agent_id.clone();
        if agent.instances.is_empty() {
            rows.push([
                id.clone(),
                "no".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for instance in &agent.instances {
            let state = if instance.draining { "draining" } else { "yes" };
            rows.push([
                id.clone(),
                state.into(),
                instance.instance.clone(),
                instance.version.clone(),
                cell(instance.remote_addr.as_deref()),
                instance.replica.clone(),
                instance.connected_since.clone(),
                instance.last_heartbeat.clone(),
            ]);
        }
    }
    table(rows);
}

pub fn secrets(reply: &SecretList) {
    for secret in &reply.secrets {
        let uses: Vec<&str> = secret.uses.iter().map(|u| crate::args::SecretUseArg::from_api(*u).name()).collect();
        say!("{}  {}  {}", secret.name, secret.updated_at, uses.join(","));
    }
}

pub fn providers(reply: &MetricProviderList) {
    let mut rows = vec![["NAME", "TYPE", "URL", "AGENT"].map(String::from)];
    for p in &reply.providers {
        rows.push([p.name.clone(), p.kind.clone(), p.url.clone(), cell(p.agent.as_deref())]);
    }
    table(rows);
}

pub fn deployments(reply: &DeploymentList) {
    let mut rows = vec![["DEPLOYMENT", "APPLICATION", "STATE", "CREATED", "TARGETS"].map(String::from)];
    for d in &reply.deployments {
        let targets: Vec<String> = d.targets.iter().map(|t| format!("{}={}", t.name, t.state.as_str())).collect();
        rows.push([
            d.id.clone(),
            d.application.clone(),
            d.state.as_str().to_owned(),
            d.created_at.clone(),
            targets.join(" "),
        ]);
    }
    table(rows);
}

pub fn deployment(d: &Deployment) {
    say!("deployment {} ({}): {}", d.id, safe(&d.application, false), d.state.as_str());
    if let Some(reason) = &d.reason {
        say!("  {}", safe(reason, false));
    }
    if let Some(by) = &d.started_by {
        say!("  started by {}", safe(by, false));
    }
    for (what, values) in [("artifacts", &d.artifacts), ("context", &d.context)] {
        if !values.is_empty() {
            let shown: Vec<String> =
                values.iter().map(|(k, v)| format!("{}={}", safe(k, false), safe(v, false))).collect();
            say!("  {what}: {}", shown.join(" "));
        }
    }
    say!();
    let mut rows = vec![["TARGET", "STATE", "STEP", "REASON"].map(String::from)];
    for t in &d.targets {
        rows.push([t.name.clone(), t.state.as_str().to_owned(), cell(t.step.as_deref()), cell(t.reason.as_deref())]);
    }
    table(rows);
    let judgments: Vec<_> = d.targets.iter().flat_map(|t| &t.analysis_runs).collect();
    if !judgments.is_empty() {
        say!();
        let mut rows = vec![["ANALYSIS", "RUN", "AT", "RESULT"].map(String::from)];
        for j in judgments {
            let result = format!("{}: {}", if j.passed { "passed" } else { "failed" }, j.summary);
            rows.push([cell(j.step.as_deref()), format!("{}/{}", j.run, j.of), j.at.clone(), safe(&result, false)]);
        }
        table(rows);
    }
    let runs: Vec<_> = d.targets.iter().flat_map(|t| &t.webhook_runs).collect();
    if !runs.is_empty() {
        say!();
        let mut rows = vec![["RUN", "WEBHOOK", "STATE", "MESSAGE"].map(String::from)];
        for r in runs {
            let message = r.md_message.as_deref().or(r.reason.as_deref()).unwrap_or("-").replace('\n', " ");
            rows.push([r.id.clone(), r.webhook.clone(), r.state.as_str().to_owned(), message]);
        }
        table(rows);
    }
    say!();
    for e in &d.events {
        let target = e.target.as_ref().map(|t| format!(" [{t}]")).unwrap_or_default();
        say!("{}{} {}: {}", e.at, safe(&target, false), e.kind, safe(&e.message, false));
    }
}

pub fn runs(reply: &WebhookRunList) {
    let mut rows = vec![["RUN", "WEBHOOK", "ENVIRONMENT", "STATE", "ATTEMPTS", "CREATED", "MESSAGE"].map(String::from)];
    for run in &reply.runs {
        let message =
            run.md_message.as_deref().or(run.reason.as_deref()).unwrap_or("-").lines().next().unwrap_or("-").to_owned();
        rows.push([
            run.id.clone(),
            run.webhook.clone(),
            cell(run.environment.as_deref()),
            run.state.as_str().to_owned(),
            run.attempts.to_string(),
            run.created_at.clone(),
            message,
        ]);
    }
    table(rows);
}

pub fn run(run: &WebhookRun) {
    for (label, value) in [
        ("run", Some(run.id.as_str())),
        ("webhook", Some(run.webhook.as_str())),
        ("environment", run.environment.as_deref()),
        ("state", Some(run.state.as_str())),
        ("agent", run.agent.as_deref()),
        ("deployment", run.deployment_id.as_deref()),
        ("callback URI", run.callback_uri.as_deref()),
        ("created", Some(run.created_at.as_str())),
        ("next attempt", run.next_attempt_at.as_deref()),
        ("deadline", run.deadline_at.as_deref()),
        ("finished", run.finished_at.as_deref()),
        ("reason", run.reason.as_deref()),
    ] {
        if let Some(value) = value {
            say!("{label:>13}: {}", safe(value, false));
        }
    }
    if let Some(Some(request)) = &run.request {
        say!("{:>13}: {} {}", "request", safe(&request.method, false), safe(&request.url, false));
    }
    let attempts = run.attempt_log.as_deref().unwrap_or_default();
    if !attempts.is_empty() {
        say!();
        let mut rows = vec![["ATTEMPT", "STARTED", "LATENCY", "STATUS", "RESULT"].map(String::from)];
        for attempt in attempts {
            let result = attempt.error.as_deref().or(attempt.reply.as_deref()).unwrap_or("").replace('\n', " ");
            let result: String = result.chars().take(100).collect();
            rows.push([
                attempt.number.to_string(),
                attempt.started_at.clone(),
                format!("{}ms", attempt.latency_ms),
                attempt.status.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                result,
            ]);
        }
        table(rows);
    }
    if let Some(message) = &run.md_message {
        say!();
        say!("{}", safe(message, true));
    }
}

/// A dry run's plan, target by target: each call, where it goes, and what
/// was found about it.
pub fn plan(plan: &borealis_api::Plan) {
    for warning in &plan.warnings {
        say!("warning: {}", safe(warning, false));
    }
    if let Some(application) = &plan.application {
        say!("application {}", safe(application, false));
    }
    for target in &plan.targets {
        let after = if target.depends_on.is_empty() {
            String::new()
        } else {
            format!(", after {}", safe(&target.depends_on.join(", "), false))
        };
        say!();
        say!("target {} (driver {}{after})", safe(&target.name, false), safe(&target.driver, false));
        if target.calls.is_empty() {
            say!("  no calls");
        }
        for call in &target.calls {
            planned_call(call);
        }
    }
    if let Some(call) = &plan.call {
        planned_call(call);
    }
    say!();
    say!("{}", if plan.ok { "ok: nothing found that would stop it" } else { "not ok: see the errors above" });
}

fn planned_call(call: &borealis_api::PlannedCall) {
    say!("  {} {} via {} ({})", call.kind, safe(&call.name, false), safe(&call.via, false), safe(&call.at, false));
    if let Some(request) = &call.request {
        say!("    {} {}", safe(&request.method, false), safe(&request.url, false));
        for (name, value) in &request.headers {
            say!("    {}: {}", safe(name, false), safe(value, false));
        }
        if let Some(body) = &request.body {
            let shown: String = body.chars().take(400).collect();
            let more = if shown.len() < body.len() { " …" } else { "" };
            say!("    body: {}{more}", safe(&shown, false));
        }
    }
    for finding in &call.findings {
        say!("    {}: {}", finding.severity, safe(&finding.message, false));
    }
}

/// Where a list goes on, said on standard error so that its output stays
/// the list alone.
pub fn older(next: Option<&str>) {
    if let Some(cursor) = next {
        eprintln!("older ones: add --after {cursor}");
    }
}
