//! Results: a table on the terminal, `latest.md` and `latest.json`.

use std::path::Path;

use serde_json::json;

#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub case: String,
    pub requests_per_second: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub errors: u64,
    /// CPU seconds per 1000 requests.
    pub relay_cpu_per_1k: Option<f64>,
    pub agent_cpu_per_1k: Option<f64>,
    pub relay_peak_mib: Option<f64>,
    pub agent_peak_mib: Option<f64>,
    pub note: String,
}

impl Row {
    /// A row of what the load generator measured: rate, latency and
    /// errors, with its first error as the note; the other columns empty.
    pub fn of_load(scenario: &str, case: impl Into<String>, result: &crate::load::LoadResult) -> Self {
        Self {
            scenario: scenario.into(),
            case: case.into(),
            requests_per_second: Some(result.per_second()),
            p50_ms: Some(result.millis(0.5)),
            p99_ms: Some(result.millis(0.99)),
            max_ms: Some(result.max_millis()),
            errors: result.errors,
            relay_cpu_per_1k: None,
            agent_cpu_per_1k: None,
            relay_peak_mib: None,
            agent_peak_mib: None,
            note: result.first_error.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub measured: f64,
    pub limit: f64,
    pub unit: &'static str,
    pub at_least: bool,
    /// The limit itself misses: the measure must be above it (or below).
    pub strict: bool,
}

impl Target {
    pub fn at_least(name: &str, measured: f64, limit: f64, unit: &'static str) -> Self {
        Self { name: name.into(), measured, limit, unit, at_least: true, strict: false }
    }

    /// More than the limit: reaching it is not enough, as for a gain.
    pub fn above(name: &str, measured: f64, limit: f64, unit: &'static str) -> Self {
        Self { strict: true, ..Self::at_least(name, measured, limit, unit) }
    }

    pub fn at_most(name: &str, measured: f64, limit: f64, unit: &'static str) -> Self {
        Self { name: name.into(), measured, limit, unit, at_least: false, strict: false }
    }

    pub fn met(&self) -> bool {
        match (self.at_least, self.strict) {
            (true, false) => self.measured >= self.limit,
            (true, true) => self.measured > self.limit,
            (false, false) => self.measured <= self.limit,
            (false, true) => self.measured < self.limit,
        }
    }

    /// The goal in words and as a sign.
    fn goal(&self) -> (&'static str, &'static str) {
        match (self.at_least, self.strict) {
            (true, false) => ("at least", "≥"),
            (true, true) => ("above", ">"),
            (false, false) => ("at most", "≤"),
            (false, true) => ("below", "<"),
        }
    }
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
}

const HEADER: [&str; 12] = [
    "scenario",
    "case",
    "req/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "errors",
    "relay CPU s/1k",
    "agent CPU s/1k",
    "relay peak MiB",
    "agent peak MiB",
    "note",
];

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map(|v| format!("{v:.decimals$}")).unwrap_or_else(|| "-".into())
}

fn cells(row: &Row) -> [String; 12] {
    [
        row.scenario.clone(),
        row.case.clone(),
        cell(row.requests_per_second, 0),
        cell(row.p50_ms, 3),
        cell(row.p99_ms, 3),
        cell(row.max_ms, 1),
        row.errors.to_string(),
        cell(row.relay_cpu_per_1k, 3),
        cell(row.agent_cpu_per_1k, 3),
        cell(row.relay_peak_mib, 1),
        cell(row.agent_peak_mib, 1),
        row.note.clone(),
    ]
}

impl Report {
    pub fn print_last(&self) {
        if let Some(row) = self.rows.last() {
            println!("{}", cells(row).join(" | "));
        }
    }

    pub fn print_targets(&self) {
        println!();
        for target in &self.targets {
            let (goal, _) = target.goal();
            let verdict = if target.met() { "met" } else { "MISSED" };
            println!(
                "{verdict:>6}  {}: {:.2} {} ({goal} {} {})",
                target.name, target.measured, target.unit, target.limit, target.unit
            );
        }
    }

    pub fn write(&self, dir: &Path, cores: usize, commit: &str, duration: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut md = format!(
            "# Benchmark results\n\nCommit `{commit}`, {cores} cores, {duration} per load case, everything on loopback.\n\n| {} |\n|{}\n",
            HEADER.join(" | "),
            " --- |".repeat(HEADER.len())
        );
        for row in &self.rows {
            md.push_str(&format!("| {} |\n", cells(row).join(" | ")));
        }
        md.push_str("\n| target | measured | goal | |\n| --- | --- | --- | --- |\n");
        for t in &self.targets {
            let (_, goal) = t.goal();
            md.push_str(&format!(
                "| {} | {:.2} {} | {goal} {} {} | {} |\n",
                t.name,
                t.measured,
                t.unit,
                t.limit,
                t.unit,
                if t.met() { "met" } else { "missed" }
            ));
        }
        std::fs::write(dir.join("latest.md"), md)?;
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "scenario": r.scenario, "case": r.case, "requestsPerSecond": r.requests_per_second,
                    "p50Ms": r.p50_ms, "p99Ms": r.p99_ms, "maxMs": r.max_ms, "errors": r.errors,
                    "relayCpuSecondsPer1000": r.relay_cpu_per_1k, "agentCpuSecondsPer1000": r.agent_cpu_per_1k,
                    "relayPeakMiB": r.relay_peak_mib, "agentPeakMiB": r.agent_peak_mib, "note": r.note,
                })
            })
            .collect();
        let targets: Vec<serde_json::Value> = self
            .targets
            .iter()
            .map(|t| json!({ "name": t.name, "measured": t.measured, "limit": t.limit, "unit": t.unit, "atLeast": t.at_least, "strict": t.strict, "met": t.met() }))
            .collect();
        let value =
            json!({ "commit": commit, "cores": cores, "durationPerCase": duration, "rows": rows, "targets": targets });
        std::fs::write(dir.join("latest.json"), serde_json::to_string_pretty(&value)? + "\n")?;
        Ok(())
    }
}
