//! The YAML reader: every field checked where it stands, every error
//! collected, unknown fields refused (or, when asked, warned about) with the
//! known field they most look like.

use std::collections::BTreeMap;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoaderOptions, Node};

use super::diagnostic::{Diagnostic, Location};
use super::model::{
    Analysis, AnalysisQuery, Constraints, DecisionMode, DeploymentFile, Driver, FlaggerHook, HeaderTemplate, HookType,
    LookbackMethod, MAX_REQUIRED_APPROVALS, Metrics, NameRef, NetworkMode, Pause, RunWebhook, Signing, Step, Strategy,
    StrategyKind, Target, Webhook,
};
use super::validate::validate;
use crate::template;

/// A file that parsed, with what was noticed on the way.
#[derive(Debug)]
pub struct Parsed {
    pub file: DeploymentFile,
    pub warnings: Vec<Diagnostic>,
}

/// What an unknown field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownFields {
    /// An error: a misspelled key must not silently drop what it meant
    /// (`contraints:` is no gate at all).
    #[default]
    Refuse,
    /// A warning, for files written for a newer version (and for files
    /// stored before fields were refused, read again on resume).
    Warn,
}

impl UnknownFields {
    /// `Warn` when unknown fields are allowed, else `Refuse`.
    pub fn allowed_if(allow: bool) -> Self {
        if allow { Self::Warn } else { Self::Refuse }
    }
}

/// Parses and validates a deployment file, refusing unknown fields. On
/// failure every error found is returned, in file order.
pub fn parse(text: &str) -> Result<Parsed, Vec<Diagnostic>> {
    parse_with(text, UnknownFields::Refuse)
}

/// [`parse`], with unknown fields as `unknown` says. When the file fails,
/// the unknown fields are among the errors either way: a misspelled key
/// often explains another error (`agentIdentifer:` and "no agentIdentifier").
pub fn parse_with(text: &str, unknown: UnknownFields) -> Result<Parsed, Vec<Diagnostic>> {
    let prepared = quote_bare_placeholders(text);
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let root = match marked_yaml::parse_yaml_with_options(0, &prepared, options) {
        Ok(root) => root,
        Err(err) => return Err(vec![load_error(err)]),
    };
    let mut reader = Reader { unknown, ..Reader::default() };
    let file = reader.file(&root);
    validate(&file, &mut reader.errors, &mut reader.warnings);
    if reader.errors.is_empty() {
        Ok(Parsed { file, warnings: reader.warnings })
    } else {
        reader.errors.append(&mut reader.unknown_warned);
        reader.errors.sort_by_key(|d| (d.line, d.column));
        Err(reader.errors)
    }
}

/// The seed documents write `value: {{armory.callbackUri}}/callback`
/// unquoted, which YAML reads as a flow mapping. Such a value is quoted
/// before parsing; lines stay where they are.
fn quote_bare_placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body.strip_suffix('\r').unwrap_or(body), &line[body.len()..]),
            None => (line, ""),
        };
        let value_start = body
            .find(": {{")
            .map(|i| i + 2)
            .or_else(|| body.trim_start().starts_with("- {{").then(|| body.find("- {{").unwrap() + 2));
        match value_start {
            Some(start) if !body[..start].contains('#') => {
                let value = body[start..].trim_end();
                out.push_str(&body[..start]);
                out.push('\'');
                out.push_str(&value.replace('\'', "''"));
                out.push('\'');
            }
            _ => out.push_str(body),
        }
        out.push_str(newline);
    }
    out
}

fn load_error(err: marked_yaml::LoadError) -> Diagnostic {
    use marked_yaml::LoadError::*;
    let at = |m: &marked_yaml::Marker| (m.line(), m.column());
    let ((line, column), message) = match &err {
        TopLevelMustBeMapping(m) => {
            (at(m), "the file must be a YAML mapping (application:, targets:, webhooks:, ...)".to_owned())
        }
        TopLevelMustBeSequence(m) => (at(m), "unexpected top level".to_owned()),
        UnexpectedAnchor(m) => (at(m), "YAML anchors and aliases are not supported".to_owned()),
        MappingKeyMustBeScalar(m) => (at(m), "a mapping key must be a plain value".to_owned()),
        UnexpectedTag(m) => (at(m), "YAML tags are not supported".to_owned()),
        ScanError(m, scan) => (at(m), format!("invalid YAML: {}", scan.info())),
        DuplicateKey(inner) => (scalar_position(&inner.key), format!("duplicate key {:?}", inner.key.as_str())),
    };
    Diagnostic { path: String::new(), message, line, column }
}

#[derive(Default)]
struct Reader {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    unknown: UnknownFields,
    /// The unknown fields warned about, to report with errors.
    unknown_warned: Vec<Diagnostic>,
}

/// The known key `key` most likely meant, if one is close enough.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let key = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(&key, &k.to_ascii_lowercase()), *k))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

fn position(node: &Node) -> (usize, usize) {
    node.span().start().map(|m| (m.line(), m.column())).unwrap_or((0, 0))
}

fn scalar_position(node: &MarkedScalarNode) -> (usize, usize) {
    node.span().start().map(|m| (m.line(), m.column())).unwrap_or((0, 0))
}

fn location(path: &str, node: &Node) -> Location {
    let (line, column) = position(node);
    Location { path: path.to_owned(), line, column }
}

fn kind_of(node: &Node) -> &'static str {
    match node {
        Node::Scalar(_) => "a value",
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
    }
}

impl Reader {
    fn error(&mut self, path: &str, node: &Node, message: impl Into<String>) {
        let (line, column) = position(node);
        self.errors.push(Diagnostic { path: path.to_owned(), message: message.into(), line, column });
    }

    fn warn(&mut self, path: &str, line: usize, column: usize, message: impl Into<String>) {
        self.warnings.push(Diagnostic { path: path.to_owned(), message: message.into(), line, column });
    }

    /// A mapping; keys outside `known` are refused or warned about.
    fn mapping<'n>(&mut self, path: &str, node: &'n Node, known: &[&str]) -> Option<&'n MarkedMappingNode> {
        let Some(map) = node.as_mapping() else {
            self.error(path, node, format!("expected a mapping, found {}", kind_of(node)));
            return None;
        };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let (line, column) = scalar_position(key);
                let path = join(path, key.as_str());
                let hint = match closest(key.as_str(), known) {
                    Some(meant) => format!("did you mean {meant}?"),
                    None => format!("known here: {}", known.join(", ")),
                };
                match self.unknown {
                    UnknownFields::Refuse => {
                        let message = format!("unknown field ({hint})");
                        self.errors.push(Diagnostic { path, message, line, column });
                    }
                    UnknownFields::Warn => {
                        let message = format!("unknown field, ignored ({hint})");
                        let warning = Diagnostic { path, message, line, column };
                        self.unknown_warned.push(warning.clone());
                        self.warnings.push(warning);
                    }
                }
            }
        }
        Some(map)
    }

    fn list<'n>(&mut self, path: &str, node: &'n Node) -> Option<&'n [Node]> {
        match node {
            Node::Sequence(seq) => Some(seq.as_slice()),
            // An empty value where a list may stand.
            Node::Scalar(s) if s.as_str().is_empty() || s.as_str() == "~" || s.as_str() == "null" => Some(&[]),
            _ => {
                self.error(path, node, format!("expected a list, found {}", kind_of(node)));
                None
            }
        }
    }

    fn string(&mut self, path: &str, node: &Node) -> Option<String> {
        match node.as_scalar() {
            Some(s) => Some(s.as_str().to_owned()),
            None => {
                self.error(path, node, format!("expected a value, found {}", kind_of(node)));
                None
            }
        }
    }

    fn required_string(&mut self, path: &str, map: &MarkedMappingNode, parent: &Node, key: &str) -> Option<String> {
        match map.get_node(key) {
            Some(node) => match self.string(&join(path, key), node) {
                Some(text) if text.trim().is_empty() => {
                    self.error(&join(path, key), node, "must not be empty");
                    None
                }
                other => other,
            },
            None => {
                self.error(&join(path, key), parent, format!("{key} is required"));
                None
            }
        }
    }

    fn optional_string(&mut self, path: &str, map: &MarkedMappingNode, key: &str) -> Option<String> {
        let node = map.get_node(key)?;
        self.string(&join(path, key), node).filter(|s| !s.is_empty())
    }

    fn bool(&mut self, path: &str, node: &Node) -> Option<bool> {
        match node.as_scalar().map(|s| s.as_str()) {
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                self.error(path, node, format!("expected true or false, found {other:?}"));
                None
            }
            None => {
                self.error(path, node, format!("expected true or false, found {}", kind_of(node)));
                None
            }
        }
    }

    fn number(&mut self, path: &str, node: &Node, max: u64) -> Option<u64> {
        let text = node.as_scalar().map(|s| s.as_str().to_owned()).unwrap_or_default();
        match text.parse::<u64>() {
            Ok(n) if n <= max => Some(n),
            _ => {
                self.error(path, node, format!("expected a whole number from 0 to {max}, found {text:?}"));
                None
            }
        }
    }

    /// A string-to-string dictionary (`context`). An empty list counts as empty.
    fn dictionary(&mut self, path: &str, node: &Node) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match node {
            Node::Mapping(map) => {
                for (key, value) in map.iter() {
                    if let Some(value) = self.string(&join(path, key.as_str()), value) {
                        out.insert(key.as_str().to_owned(), value);
                    }
                }
            }
            Node::Sequence(seq) if seq.is_empty() => {}
            Node::Scalar(s) if s.as_str().is_empty() => {}
            _ => self.error(path, node, format!("expected a mapping of names to values, found {}", kind_of(node))),
        }
        out
    }

    fn file(&mut self, root: &Node) -> DeploymentFile {
        const KNOWN: &[&str] = &[
            "version",
            "kind",
            "application",
            "targets",
            "strategies",
            "webhooks",
            "context",
            "artifacts",
            "manifests",
            "analysis",
            "spec",
            "trafficManagement",
        ];
        let mut file = DeploymentFile::default();
        let Some(map) = self.mapping("", root, KNOWN) else { return file };
        file.application = self.optional_string("", map, "application");
        if let Some(node) = map.get_node("context") {
            file.context = self.dictionary("context", node);
        }
        if let Some(node) = map.get_node("artifacts") {
            file.artifacts = self.dictionary("artifacts", node);
        }
        if let Some(node) = map.get_node("webhooks")
            && let Some(items) = self.list("webhooks", node)
        {
            for (i, item) in items.iter().enumerate() {
                if let Some(webhook) = self.webhook(&format!("webhooks[{i}]"), item) {
                    file.webhooks.push(webhook);
                }
            }
        }
        if let Some(node) = map.get_node("targets")
            && let Some(targets) = self.mapping_of_named("targets", node)
        {
            for (name, value) in targets {
                if let Some(target) = self.target(&join("targets", &name), &name, value) {
                    file.targets.push(target);
                }
            }
        }
        if let Some(node) = map.get_node("analysis") {
            let hooks = self.analysis("analysis", node);
            file.hooks.extend(hooks);
            file.metrics = self.metrics("analysis", node);
        }
        // A Flagger Canary's `spec`, pasted as it stands.
        if let Some(spec) = map.get_node("spec")
            && let Some(spec_map) = self.mapping(
                "spec",
                spec,
                &["analysis", "targetRef", "service", "progressDeadlineSeconds", "autoscalerRef"],
            )
            && let Some(node) = spec_map.get_node("analysis")
        {
            let hooks = self.analysis("spec.analysis", node);
            file.hooks.extend(hooks);
        }
        if let Some(node) = map.get_node("strategies")
            && let Some(strategies) = self.mapping_of_named("strategies", node)
        {
            for (name, value) in strategies {
                if let Some(strategy) = self.strategy(&join("strategies", &name), &name, value) {
                    file.strategies.push(strategy);
                }
            }
        }
        file
    }

    fn mapping_of_named<'n>(&mut self, path: &str, node: &'n Node) -> Option<Vec<(String, &'n Node)>> {
        match node.as_mapping() {
            Some(map) => Some(map.iter().map(|(k, v)| (k.as_str().to_owned(), v)).collect()),
            None => {
                self.error(path, node, format!("expected a mapping of names, found {}", kind_of(node)));
                None
            }
        }
    }

    fn webhook(&mut self, path: &str, node: &Node) -> Option<Webhook> {
        const KNOWN: &[&str] = &[
            "name",
            "method",
            "uriTemplate",
            "networkMode",
            "agentIdentifier",
            "headers",
            "bodyTemplate",
            "retryCount",
            "disableCallback",
            "signing",
        ];
        let map = self.mapping(path, node, KNOWN)?;
        let name = self.required_string(path, map, node, "name");
        let method = self.required_string(path, map, node, "method").and_then(|m| {
            let upper = m.to_ascii_uppercase();
            if upper.bytes().all(|b| b.is_ascii_alphabetic()) {
                Some(upper)
            } else {
                let at = map.get_node("method").unwrap_or(node);
                self.error(&join(path, "method"), at, format!("{m:?} is not an HTTP method"));
                None
            }
        });
        let uri_template = self.required_string(path, map, node, "uriTemplate");
        let network_mode = match map.get_node("networkMode") {
            Some(mode_node) => match self.string(&join(path, "networkMode"), mode_node).as_deref() {
                Some("direct") => Some(NetworkMode::Direct),
                Some("remoteNetworkAgent") => Some(NetworkMode::RemoteNetworkAgent),
                Some(other) => {
                    self.error(
                        &join(path, "networkMode"),
                        mode_node,
                        format!("expected direct or remoteNetworkAgent, found {other:?}"),
                    );
                    None
                }
                None => None,
            },
            None => {
                self.error(&join(path, "networkMode"), node, "networkMode is required: direct or remoteNetworkAgent");
                None
            }
        };
        let agent_identifier = self.optional_string(path, map, "agentIdentifier");
        let headers = self.header_templates(path, map);
        let body_template = self.body_template(path, map);
        let retry_count = match map.get_node("retryCount") {
            Some(n) => self.number(&join(path, "retryCount"), n, 100).map(|n| n as u32),
            None => Some(0),
        };
        let disable_callback = match map.get_node("disableCallback") {
            Some(b) => self.bool(&join(path, "disableCallback"), b),
            None => Some(false),
        };
        let signing = match map.get_node("signing") {
            Some(n) => self.signing(&join(path, "signing"), n).map(Some),
            None => Some(None),
        };
        // Check placeholders now, so that a typo fails before anything runs.
        let mut templates: Vec<(String, &Node, &str)> = Vec::new();
        if let (Some(n), Some(t)) = (map.get_node("uriTemplate"), uri_template.as_deref()) {
            templates.push((join(path, "uriTemplate"), n, t));
        }
        for (i, h) in headers.iter().enumerate() {
            let at = map.get_node("headers").and_then(|l| l.as_sequence()).and_then(|s| s.get(i)).unwrap_or(node);
            templates.push((format!("{path}.headers[{i}].value"), at, h.value.as_str()));
        }
        if let (Some(b), Some(t)) = (map.get_node("bodyTemplate"), body_template.as_deref()) {
            templates.push((join(path, "bodyTemplate.inline"), b, t));
        }
        self.check_templates(templates, template::check);
        Some(Webhook {
            name: name?,
            method: method?,
            uri_template: uri_template?,
            network_mode: network_mode?,
            agent_identifier,
            headers,
            body_template,
            retry_count: retry_count?,
            disable_callback: disable_callback?,
            signing: signing?,
            location: location(path, node),
        })
    }

    /// Flagger's `analysis` block; only its `webhooks` are used.
    fn analysis(&mut self, path: &str, node: &Node) -> Vec<FlaggerHook> {
        let known = [
            "webhooks",
            "interval",
            "threshold",
            "iterations",
            "maxWeight",
            "stepWeight",
            "metrics",
            "alerts",
            "defaultMetricProviderName",
            "queries",
        ];
        let Some(analysis) = self.mapping(path, node, &known) else { return Vec::new() };
        let Some(hooks) = analysis.get_node("webhooks") else { return Vec::new() };
        let hooks_path = join(path, "webhooks");
        let Some(items) = self.list(&hooks_path, hooks) else { return Vec::new() };
        items.iter().enumerate().filter_map(|(i, item)| self.hook(&format!("{hooks_path}[{i}]"), item)).collect()
    }

    /// Armory's metric part of the top-level `analysis` block:
    /// `defaultMetricProviderName` and `queries`. (Unknown keys were
    /// reported by [`Reader::analysis`].)
    fn metrics(&mut self, path: &str, node: &Node) -> Metrics {
        let mut metrics = Metrics::default();
        let Some(map) = node.as_mapping() else { return metrics };
        if let Some(n) = map.get_node("defaultMetricProviderName")
            && let Some(name) = self.string(&join(path, "defaultMetricProviderName"), n)
        {
            metrics.default_metric_provider_name =
                Some(NameRef { name, location: location(&join(path, "defaultMetricProviderName"), n) });
        }
        let Some(list) = map.get_node("queries") else { return metrics };
        let q_path = join(path, "queries");
        let Some(items) = self.list(&q_path, list) else { return metrics };
        let mut seen: BTreeMap<String, Location> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{q_path}[{i}]");
            let Some(query) = self.query(&item_path, item) else { continue };
            if let Some(first) = seen.get(&query.name) {
                self.error(
                    &join(&item_path, "name"),
                    item,
                    format!("duplicate query name {:?} (first defined at {first})", query.name),
                );
                continue;
            }
            seen.insert(query.name.clone(), query.location.clone());
            metrics.queries.push(query);
        }
        metrics
    }

    fn query(&mut self, path: &str, node: &Node) -> Option<AnalysisQuery> {
        let map = self.mapping(path, node, &["name", "queryTemplate", "upperLimit", "lowerLimit"])?;
        let name = self.required_string(path, map, node, "name");
        let query_template = self.required_string(path, map, node, "queryTemplate");
        if let (Some(text), Some(at)) = (&query_template, map.get_node("queryTemplate"))
            && let Err(err) = template::check_query(text)
        {
            self.error(&join(path, "queryTemplate"), at, err.to_string());
        }
        let mut limit = |key: &str| -> Result<Option<f64>, ()> {
            let Some(n) = map.get_node(key) else { return Ok(None) };
            let text = n.as_scalar().map(|s| s.as_str().trim().to_owned());
            match text.as_deref().map(str::parse::<f64>) {
                Some(Ok(v)) if v.is_finite() => Ok(Some(v)),
                _ => {
                    let found = text.map(|t| format!("{t:?}")).unwrap_or_else(|| kind_of(n).to_owned());
                    self.error(&join(path, key), n, format!("expected a number, found {found}"));
                    Err(())
                }
            }
        };
        let upper = limit("upperLimit");
        let lower = limit("lowerLimit");
        if let (Ok(Some(high)), Ok(Some(low))) = (upper, lower)
            && low > high
        {
            let at = map.get_node("lowerLimit").unwrap_or(node);
            self.error(&join(path, "lowerLimit"), at, format!("lowerLimit {low} is above upperLimit {high}"));
            return None;
        }
        Some(AnalysisQuery {
            name: name?,
            query_template: query_template?,
            upper_limit: upper.ok()?,
            lower_limit: lower.ok()?,
            location: location(path, node),
        })
    }

    /// An `analysis` step.
    fn analysis_step(&mut self, path: &str, node: &Node) -> Option<Analysis> {
        const KNOWN: &[&str] = &[
            "metricProviderName",
            "context",
            "interval",
            "units",
            "numberOfJudgmentRuns",
            "rollBackMode",
            "rollForwardMode",
            "queries",
            "lookbackMethod",
        ];
        let map = self.mapping(path, node, KNOWN)?;
        let metric_provider_name = match map.get_node("metricProviderName") {
            Some(n) => {
                let p = join(path, "metricProviderName");
                Some(self.string(&p, n).map(|name| NameRef { name, location: location(&p, n) }))
            }
            None => Some(None),
        };
        let context = map.get_node("context").map(|c| self.dictionary(&join(path, "context"), c)).unwrap_or_default();
        let interval = match map.get_node("interval") {
            Some(n) => match self.number(&join(path, "interval"), n, u32::MAX as u64) {
                Some(0) => {
                    self.error(&join(path, "interval"), n, "interval must be at least 1");
                    None
                }
                other => other,
            },
            None => {
                self.error(
                    &join(path, "interval"),
                    node,
                    "interval is required (with units: seconds, minutes or hours)",
                );
                None
            }
        };
        let unit = match map.get_node("units") {
            Some(n) => self.unit(&join(path, "units"), n),
            None => {
                self.error(&join(path, "units"), node, "units is required with interval: seconds, minutes or hours");
                None
            }
        };
        let runs = match map.get_node("numberOfJudgmentRuns") {
            Some(n) => match self.number(&join(path, "numberOfJudgmentRuns"), n, 10_000) {
                Some(0) => {
                    self.error(&join(path, "numberOfJudgmentRuns"), n, "numberOfJudgmentRuns must be at least 1");
                    None
                }
                other => other.map(|n| n as u32),
            },
            None => Some(1),
        };
        let mut mode = |key: &str| -> Option<DecisionMode> {
            let Some(n) = map.get_node(key) else { return Some(DecisionMode::Automatic) };
            match self.string(&join(path, key), n)?.as_str() {
                "manual" | "MANUAL" => Some(DecisionMode::Manual),
                "automatic" | "AUTOMATIC" => Some(DecisionMode::Automatic),
                other => {
                    self.error(&join(path, key), n, format!("expected manual or automatic, found {other:?}"));
                    None
                }
            }
        };
        let roll_back_mode = mode("rollBackMode");
        let roll_forward_mode = mode("rollForwardMode");
        let lookback_method = match map.get_node("lookbackMethod") {
            None => Some(LookbackMethod::Growing),
            Some(n) => match self.string(&join(path, "lookbackMethod"), n).as_deref() {
                Some("growing" | "GROWING") => Some(LookbackMethod::Growing),
                Some("sliding" | "SLIDING") => Some(LookbackMethod::Sliding),
                Some(other) => {
                    self.error(
                        &join(path, "lookbackMethod"),
                        n,
                        format!("expected growing or sliding, found {other:?}"),
                    );
                    None
                }
                None => None,
            },
        };
        let mut queries = Vec::new();
        match map.get_node("queries") {
            Some(list) => {
                let q_path = join(path, "queries");
                if let Some(items) = self.list(&q_path, list) {
                    for (i, item) in items.iter().enumerate() {
                        let item_path = format!("{q_path}[{i}]");
                        if let Some(name) = self.string(&item_path, item) {
                            queries.push(NameRef { name, location: location(&item_path, item) });
                        }
                    }
                    if items.is_empty() {
                        self.error(&q_path, list, "an analysis step needs at least one query");
                    }
                }
            }
            None => self.error(
                &join(path, "queries"),
                node,
                "queries is required: names from the top-level analysis.queries",
            ),
        }
        Some(Analysis {
            metric_provider_name: metric_provider_name?,
            context,
            interval_seconds: interval? * unit?,
            number_of_judgment_runs: runs?,
            roll_back_mode: roll_back_mode?,
            roll_forward_mode: roll_forward_mode?,
            queries,
            lookback_method: lookback_method?,
            location: location(path, node),
        })
    }

    /// `seconds`, `minutes` or `hours`, as seconds.
    fn unit(&mut self, path: &str, node: &Node) -> Option<u64> {
        match self.string(path, node)?.as_str() {
            "seconds" | "SECONDS" => Some(1),
            "minutes" | "MINUTES" => Some(60),
            "hours" | "HOURS" => Some(3600),
            other => {
                self.error(path, node, format!("expected seconds, minutes or hours, found {other:?}"));
                None
            }
        }
    }

    fn hook(&mut self, path: &str, node: &Node) -> Option<FlaggerHook> {
        const KNOWN: &[&str] = &[
            "name",
            "type",
            "url",
            "timeout",
            "metadata",
            "retries",
            "muteAlert",
            "networkMode",
            "agentIdentifier",
            "signing",
        ];
        let map = self.mapping(path, node, KNOWN)?;
        let name = self.required_string(path, map, node, "name");
        let url = self.required_string(path, map, node, "url");
        let kind = match map.get_node("type") {
            None => Some(HookType::Rollout),
            Some(t) => {
                let text = self.string(&join(path, "type"), t)?;
                let found = HookType::ALL.iter().find(|(n, _)| *n == text).map(|(_, k)| *k);
                if found.is_none() {
                    let names: Vec<&str> = HookType::ALL.iter().map(|(n, _)| *n).collect();
                    self.error(
                        &join(path, "type"),
                        t,
                        format!("unknown hook type {text:?} (types: {})", names.join(", ")),
                    );
                }
                found
            }
        };
        let timeout_ms = match map.get_node("timeout") {
            None => Some(None),
            Some(t) => match self.string(&join(path, "timeout"), t).map(|text| crate::duration::parse(&text)) {
                Some(Ok(d)) => Some(Some(d.as_millis() as u64)),
                Some(Err(e)) => {
                    self.error(&join(path, "timeout"), t, e.to_string());
                    None
                }
                None => None,
            },
        };
        let metadata =
            map.get_node("metadata").map(|m| self.dictionary(&join(path, "metadata"), m)).unwrap_or_default();
        let retries = match map.get_node("retries") {
            Some(n) => self.number(&join(path, "retries"), n, 100).map(|n| n as u32),
            None => Some(0),
        };
        let network_mode = match map.get_node("networkMode") {
            None => Some(NetworkMode::Direct),
            Some(m) => match self.string(&join(path, "networkMode"), m).as_deref() {
                Some("direct") => Some(NetworkMode::Direct),
                Some("remoteNetworkAgent") => Some(NetworkMode::RemoteNetworkAgent),
                Some(other) => {
                    self.error(
                        &join(path, "networkMode"),
                        m,
                        format!("expected direct or remoteNetworkAgent, found {other:?}"),
                    );
                    None
                }
                None => None,
            },
        };
        let signing = match map.get_node("signing") {
            Some(n) => self.signing(&join(path, "signing"), n).map(Some),
            None => Some(None),
        };
        Some(FlaggerHook {
            name: name?,
            kind: kind?,
            url: url?,
            timeout_ms: timeout_ms?,
            metadata,
            retries: retries?,
            network_mode: network_mode?,
            agent_identifier: self.optional_string(path, map, "agentIdentifier"),
            signing: signing?,
            location: location(path, node),
        })
    }

    /// `signing: {secret: "{{secrets.NAME}}"}`, `secret` a list of them, or
    /// `secrets: [...]`.
    fn signing(&mut self, path: &str, node: &Node) -> Option<Signing> {
        let map = self.mapping(path, node, &["secret", "secrets"])?;
        let entries: Vec<(String, &Node)> = match (map.get_node("secret"), map.get_node("secrets")) {
            (Some(_), Some(both)) => {
                self.error(&join(path, "secrets"), both, "give secret or secrets, not both");
                return None;
            }
            (None, None) => {
                self.error(
                    path,
                    node,
                    "signing needs secret: \"{{secrets.NAME}}\" (or secrets: a list of them, during a key rotation)",
                );
                return None;
            }
            (Some(one), None) if one.as_scalar().is_some() => vec![(join(path, "secret"), one)],
            (Some(list), None) => {
                let items = self.list(&join(path, "secret"), list)?;
                items.iter().enumerate().map(|(i, item)| (format!("{path}.secret[{i}]"), item)).collect()
            }
            (None, Some(list)) => {
                let items = self.list(&join(path, "secrets"), list)?;
                items.iter().enumerate().map(|(i, item)| (format!("{path}.secrets[{i}]"), item)).collect()
            }
        };
        if entries.is_empty() {
            self.error(path, node, "signing needs at least one secret");
            return None;
        }
        let mut secrets = Vec::new();
        let mut ok = true;
        for (entry_path, entry) in entries {
            let Some(text) = self.string(&entry_path, entry) else {
                ok = false;
                continue;
            };
            let name = text
                .trim()
                .strip_prefix("{{")
                .and_then(|t| t.strip_suffix("}}"))
                .and_then(|t| t.trim().strip_prefix("secrets."))
                .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            match name {
                Some(name) => secrets.push(name.to_owned()),
                None => {
                    ok = false;
                    self.error(
                        &entry_path,
                        entry,
                        format!(
                            "expected {{{{secrets.NAME}}}}, naming a stored secret, found {text:?} (a signing key is never written in the file: store it with borealis secrets set NAME)"
                        ),
                    );
                }
            }
        }
        ok.then(|| Signing { secrets, location: location(path, node) })
    }

    fn steps(&mut self, path: &str, node: &Node) -> Vec<Step> {
        let Some(items) = self.list(path, node) else { return Vec::new() };
        let mut steps = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let step_path = format!("{path}[{i}]");
            let Some(map) = item.as_mapping() else {
                self.error(&step_path, item, format!("expected a step such as runWebhook, found {}", kind_of(item)));
                continue;
            };
            if map.len() != 1 {
                self.error(&step_path, item, "a step has exactly one kind (runWebhook, pause, setWeight, ...)");
                continue;
            }
            let (kind, value) = map.iter().next().expect("one entry");
            let kind_path = join(&step_path, kind.as_str());
            let (line, column) = scalar_position(kind);
            let at = Location { path: kind_path.clone(), line, column };
            match kind.as_str() {
                "runWebhook" => {
                    let Some(run) = self.mapping(&kind_path, value, &["name", "context"]) else { continue };
                    let Some(name) = self.required_string(&kind_path, run, value, "name") else { continue };
                    let context = run
                        .get_node("context")
                        .map(|c| self.dictionary(&join(&kind_path, "context"), c))
                        .unwrap_or_default();
                    steps.push(Step::RunWebhook(RunWebhook { name, context, location: location(&kind_path, value) }));
                }
                "pause" => {
                    if let Some(pause) = self.pause(&kind_path, value) {
                        steps.push(Step::Pause { pause, location: at });
                    }
                }
                "setWeight" => {
                    let Some(weight) = self.mapping(&kind_path, value, &["weight"]) else { continue };
                    match weight.get_node("weight") {
                        Some(w) => {
                            if let Some(weight) = self.number(&join(&kind_path, "weight"), w, 100) {
                                steps.push(Step::SetWeight { weight: weight as u32, location: at });
                            }
                        }
                        None => self.error(&join(&kind_path, "weight"), value, "weight is required"),
                    }
                }
                "analysis" => {
                    if let Some(mut analysis) = self.analysis_step(&kind_path, value) {
                        // Where the step's name stands, as for the other kinds.
                        analysis.location = at;
                        steps.push(Step::Analysis(analysis));
                    }
                }
                other => steps.push(Step::Unsupported { kind: other.to_owned(), location: at }),
            }
        }
        steps
    }

    fn pause(&mut self, path: &str, node: &Node) -> Option<Pause> {
        let map = self.mapping(
            path,
            node,
            &["untilApproved", "duration", "unit", "approvalExpiration", "requiresRoles", "requiredApprovals"],
        )?;
        if let Some(approved) = map.get_node("untilApproved") {
            let expires_after = match map.get_node("approvalExpiration") {
                Some(n) => Some(self.approval_expiration(&join(path, "approvalExpiration"), n)?),
                None => None,
            };
            let requires_roles = match map.get_node("requiresRoles") {
                Some(n) => self.requires_roles(&join(path, "requiresRoles"), n)?,
                None => Vec::new(),
            };
            let required_approvals = match map.get_node("requiredApprovals") {
                Some(n) => self.required_approvals(&join(path, "requiredApprovals"), n)?,
                None => 1,
            };
            return match self.bool(&join(path, "untilApproved"), approved)? {
                true => Some(Pause::UntilApproved { expires_after, requires_roles, required_approvals }),
                false => {
                    self.error(
                        &join(path, "untilApproved"),
                        approved,
                        "untilApproved: false pauses nothing; remove it or give a duration",
                    );
                    None
                }
            };
        }
        let Some(duration) = map.get_node("duration") else {
            self.error(path, node, "a pause needs untilApproved: true, or a duration and a unit");
            return None;
        };
        let amount = self.number(&join(path, "duration"), duration, u32::MAX as u64)?;
        let unit = match map.get_node("unit") {
            Some(unit) => self.unit(&join(path, "unit"), unit)?,
            None => {
                self.error(&join(path, "unit"), node, "unit is required with duration: seconds, minutes or hours");
                return None;
            }
        };
        Some(Pause::Seconds(amount * unit))
    }

    /// `requiresRoles: [NAME, ...]`: roles, or groups from the identity
    /// provider; any one of them may decide the approval.
    fn requires_roles(&mut self, path: &str, node: &Node) -> Option<Vec<String>> {
        const MOST: usize = 32;
        let items = self.list(path, node)?;
        if items.len() > MOST {
            self.error(path, node, format!("at most {MOST} roles may be listed"));
            return None;
        }
        let mut roles = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let role = self.string(&at, item)?;
            if role.trim().is_empty() || role.len() > 128 {
                self.error(&at, item, "a role is 1 to 128 characters");
                return None;
            }
            roles.push(role);
        }
        Some(roles)
    }

    /// `requiredApprovals: N`: how many distinct people must approve.
    fn required_approvals(&mut self, path: &str, node: &Node) -> Option<u32> {
        let n = self.number(path, node, MAX_REQUIRED_APPROVALS)?;
        if n == 0 {
            self.error(path, node, "requiredApprovals is at least 1");
            return None;
        }
        Some(n as u32)
    }

    /// `approvalExpiration: {duration, unit}`, in seconds.
    fn approval_expiration(&mut self, path: &str, node: &Node) -> Option<u64> {
        let map = self.mapping(path, node, &["duration", "unit"])?;
        let Some(duration) = map.get_node("duration") else {
            self.error(&join(path, "duration"), node, "duration is required (with unit: seconds, minutes or hours)");
            return None;
        };
        let amount = self.number(&join(path, "duration"), duration, u32::MAX as u64)?;
        let Some(unit) = map.get_node("unit") else {
            self.error(&join(path, "unit"), node, "unit is required with duration: seconds, minutes or hours");
            return None;
        };
        Some(amount * self.unit(&join(path, "unit"), unit)?)
    }

    fn target(&mut self, path: &str, name: &str, node: &Node) -> Option<Target> {
        let map = self.mapping(path, node, &["account", "namespace", "strategy", "constraints", "driver"])?;
        let driver = match map.get_node("driver") {
            Some(d) => self.driver(&join(path, "driver"), d)?,
            None => Driver::Record,
        };
        let mut constraints = Constraints::default();
        if let Some(c) = map.get_node("constraints") {
            let c_path = join(path, "constraints");
            if let Some(cmap) = self.mapping(&c_path, c, &["dependsOn", "beforeDeployment", "afterDeployment"]) {
                if let Some(deps) = cmap.get_node("dependsOn")
                    && let Some(items) = self.list(&join(&c_path, "dependsOn"), deps)
                {
                    for (i, item) in items.iter().enumerate() {
                        let item_path = format!("{c_path}.dependsOn[{i}]");
                        if let Some(dep) = self.string(&item_path, item) {
                            constraints.depends_on.push(dep);
                            constraints.depends_on_locations.push(location(&item_path, item));
                        }
                    }
                }
                if let Some(steps) = cmap.get_node("beforeDeployment") {
                    constraints.before_deployment = self.steps(&join(&c_path, "beforeDeployment"), steps);
                }
                if let Some(steps) = cmap.get_node("afterDeployment") {
                    constraints.after_deployment = self.steps(&join(&c_path, "afterDeployment"), steps);
                }
            }
        }
        Some(Target {
            name: name.to_owned(),
            account: self.optional_string(path, map, "account"),
            namespace: self.optional_string(path, map, "namespace"),
            strategy: self.optional_string(path, map, "strategy"),
            constraints,
            driver,
            location: location(path, node),
        })
    }

    /// A `headers: [{key, value}]` list: keys checked, values kept as templates.
    fn header_templates(&mut self, path: &str, map: &MarkedMappingNode) -> Vec<HeaderTemplate> {
        let mut headers = Vec::new();
        if let Some(list) = map.get_node("headers")
            && let Some(items) = self.list(&join(path, "headers"), list)
        {
            for (i, item) in items.iter().enumerate() {
                let header_path = format!("{path}.headers[{i}]");
                let Some(header) = self.mapping(&header_path, item, &["key", "value"]) else { continue };
                let key = self.required_string(&header_path, header, item, "key");
                let value = match header.get_node("value") {
                    Some(v) => self.string(&join(&header_path, "value"), v),
                    None => {
                        self.error(&join(&header_path, "value"), item, "value is required");
                        None
                    }
                };
                if let Some(key) = &key {
                    let key_node = header.get_node("key").unwrap_or(item);
                    if crate::signing::is_signing_header(key) {
                        let (line, column) = position(key_node);
                        self.warn(
                            &join(&header_path, "key"),
                            line,
                            column,
                            "ignored: the relay sets webhook-id, webhook-timestamp and webhook-signature itself",
                        );
                    }
                    if key.contains("{{") {
                        self.error(
                            &join(&header_path, "key"),
                            key_node,
                            "templating is not supported in header keys, only in values",
                        );
                    } else if http_token(key).is_err() {
                        self.error(&join(&header_path, "key"), key_node, format!("{key:?} is not a valid header name"));
                    }
                }
                if let (Some(key), Some(value)) = (key, value) {
                    headers.push(HeaderTemplate { key, value });
                }
            }
        }
        headers
    }

    /// A `bodyTemplate: {inline: TEXT}`.
    fn body_template(&mut self, path: &str, map: &MarkedMappingNode) -> Option<String> {
        match map.get_node("bodyTemplate") {
            Some(body) => {
                let body_path = join(path, "bodyTemplate");
                self.mapping(&body_path, body, &["inline"]).and_then(|m| self.optional_string(&body_path, m, "inline"))
            }
            None => None,
        }
    }

    /// Checks each template of `templates` (a field, where it stands, its
    /// text) with `check`, so that a typo fails before anything runs.
    fn check_templates(
        &mut self,
        templates: Vec<(String, &Node, &str)>,
        check: fn(&str) -> Result<(), template::TemplateError>,
    ) {
        for (field, at, text) in templates {
            if let Err(err) = check(text) {
                self.error(&field, at, err.to_string());
            }
        }
    }

    fn driver(&mut self, path: &str, node: &Node) -> Option<Driver> {
        if node.as_scalar().is_some_and(|s| s.as_str() == "record") {
            return Some(Driver::Record);
        }
        let map = self.mapping(path, node, &["record", "webhook"])?;
        let Some(hook) = map.get_node("webhook") else {
            return Some(Driver::Record);
        };
        let w_path = join(path, "webhook");
        let known = ["url", "networkMode", "agentIdentifier", "idempotent", "signing", "headers", "bodyTemplate"];
        let w = self.mapping(&w_path, hook, &known)?;
        let url = self.required_string(&w_path, w, hook, "url")?;
        let network_mode = match w.get_node("networkMode") {
            None => NetworkMode::Direct,
            Some(m) => match self.string(&join(&w_path, "networkMode"), m)?.as_str() {
                "direct" => NetworkMode::Direct,
                "remoteNetworkAgent" => NetworkMode::RemoteNetworkAgent,
                other => {
                    self.error(
                        &join(&w_path, "networkMode"),
                        m,
                        format!("expected direct or remoteNetworkAgent, found {other:?}"),
                    );
                    return None;
                }
            },
        };
        let idempotent = match w.get_node("idempotent") {
            Some(b) => self.bool(&join(&w_path, "idempotent"), b)?,
            None => false,
        };
        let signing = match w.get_node("signing") {
            Some(n) => Some(self.signing(&join(&w_path, "signing"), n)?),
            None => None,
        };
        let headers = self.header_templates(&w_path, w);
        let body_template = self.body_template(&w_path, w);
        let mut templates: Vec<(String, &Node, &str)> = Vec::new();
        for (i, h) in headers.iter().enumerate() {
            let at = w.get_node("headers").and_then(|l| l.as_sequence()).and_then(|s| s.get(i)).unwrap_or(hook);
            templates.push((format!("{w_path}.headers[{i}].value"), at, h.value.as_str()));
        }
        if let (Some(b), Some(t)) = (w.get_node("bodyTemplate"), body_template.as_deref()) {
            templates.push((join(&w_path, "bodyTemplate.inline"), b, t));
        }
        self.check_templates(templates, template::check_driver);
        Some(Driver::Webhook {
            url,
            network_mode,
            agent_identifier: self.optional_string(&w_path, w, "agentIdentifier"),
            idempotent,
            signing,
            headers,
            body_template,
        })
    }

    fn strategy(&mut self, path: &str, name: &str, node: &Node) -> Option<Strategy> {
        let map = self.mapping(path, node, &["canary", "blueGreen"])?;
        let kind = if let Some(canary) = map.get_node("canary") {
            let c_path = join(path, "canary");
            let cmap = self.mapping(&c_path, canary, &["steps"])?;
            let steps = cmap.get_node("steps").map(|s| self.steps(&join(&c_path, "steps"), s)).unwrap_or_default();
            StrategyKind::Canary { steps }
        } else if let Some(bg) = map.get_node("blueGreen") {
            let b_path = join(path, "blueGreen");
            let known = ["activeService", "previewService", "redirectTrafficAfter", "shutDownOldVersionAfter"];
            let bmap = self.mapping(&b_path, bg, &known)?;
            StrategyKind::BlueGreen {
                active_service: self.optional_string(&b_path, bmap, "activeService"),
                preview_service: self.optional_string(&b_path, bmap, "previewService"),
                redirect_traffic_after: bmap
                    .get_node("redirectTrafficAfter")
                    .map(|s| self.steps(&join(&b_path, "redirectTrafficAfter"), s))
                    .unwrap_or_default(),
                shut_down_old_version_after: bmap
                    .get_node("shutDownOldVersionAfter")
                    .map(|s| self.steps(&join(&b_path, "shutDownOldVersionAfter"), s))
                    .unwrap_or_default(),
            }
        } else {
            self.error(path, node, "a strategy needs canary or blueGreen");
            return None;
        };
        Some(Strategy { name: name.to_owned(), kind, location: location(path, node) })
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// RFC 9110 token characters, for header names.
fn http_token(name: &str) -> Result<(), ()> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok { Ok(()) } else { Err(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::validate_deployment;

    fn errors(text: &str) -> Vec<String> {
        parse(text).unwrap_err().iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn names_the_field_the_value_and_the_position() {
        let text = "webhooks:\n  - name: a\n    method: POST\n    uriTemplate: https://x/\n    networkMode: remote\n";
        assert_eq!(
            errors(text),
            ["webhooks[0].networkMode: expected direct or remoteNetworkAgent, found \"remote\" at 5:18"]
        );
    }

    #[test]
    fn finds_every_error_in_one_pass() {
        let text = "\
webhooks:
  - name: a
    method: POST
    uriTemplate: https://x/
    networkMode: direct
  - name: a
    uriTemplate: https://y/{{armory.nope}}
    networkMode: remoteNetworkAgent
    retryCount: many
targets:
  dev:
    constraints:
      beforeDeployment:
        - runWebhook:
            name: missing
";
        let found = errors(text);
        assert!(found.iter().any(|e| e.starts_with("webhooks[1].method: method is required")), "{found:?}");
        assert!(
            found.iter().any(|e| e.contains("retryCount: expected a whole number") && e.contains("\"many\"")),
            "{found:?}"
        );
        assert!(found.iter().any(|e| e.contains("unknown placeholder {{armory.nope}}")), "{found:?}");
        assert!(
            found.iter().any(|e| e.starts_with(
                "targets.dev.constraints.beforeDeployment[0].runWebhook: runWebhook names webhook \"missing\""
            )),
            "{found:?}"
        );
    }

    #[test]
    fn placeholders_that_dump_or_grow_are_refused_when_parsed() {
        let text = "\
webhooks:
  - name: a
    method: POST
    uriTemplate: https://x/{{ range(3)|join }}
    networkMode: direct
    headers:
      - key: X-All
        value: '{{ secrets }}'
    bodyTemplate:
      inline: '{{ \"x\" * 100000000 }}'
";
        let found = errors(text);
        assert_eq!(
            found,
            [
                "webhooks[0].uriTemplate: placeholder {{ range(3)|join }}: function calls are not supported in placeholders: found range(...) at 4:18",
                "webhooks[0].headers[0].value: placeholder {{ secrets }}: {{ secrets }} would render every secret; name one, as {{ secrets.NAME }} at 7:12",
                "webhooks[0].bodyTemplate.inline: placeholder {{ \"x\" * 100000000 }}: the * operator is not supported in placeholders at 10:13",
            ],
        );
    }

    #[test]
    fn duplicate_names_and_agentless_remote_webhooks_are_errors() {
        let text = "\
webhooks:
  - {name: a, method: POST, uriTemplate: 'https://x/', networkMode: direct}
  - {name: a, method: POST, uriTemplate: 'https://x/', networkMode: direct}
  - {name: r, method: POST, uriTemplate: 'https://x/', networkMode: remoteNetworkAgent}
targets:
  dev:
    constraints:
      afterDeployment:
        - runWebhook: {name: r}
";
        let found = errors(text);
        assert!(found.iter().any(|e| e.contains("duplicate webhook name \"a\" (first defined at 2:5)")), "{found:?}");
        assert!(found.iter().any(|e| e.contains("target \"dev\" has no account")), "{found:?}");
    }

    #[test]
    fn unknown_fields_are_errors_unless_relaxed_to_warnings() {
        let text =
            "webhooks:\n  - {name: a, method: get, uriTemplate: 'https://x/', networkMode: direct, colour: blue}\n";
        let refused = parse(text).unwrap_err();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(
            refused[0].to_string(),
            "webhooks[0].colour: unknown field (known here: name, method, uriTemplate, networkMode, agentIdentifier, \
             headers, bodyTemplate, retryCount, disableCallback, signing) at 2:76"
        );
        let parsed = parse_with(text, UnknownFields::Warn).unwrap();
        assert_eq!(parsed.file.webhooks[0].method, "GET");
        assert_eq!(parsed.warnings.len(), 1);
        assert!(
            parsed.warnings[0].to_string().starts_with("webhooks[0].colour: unknown field, ignored (known here: "),
            "{}",
            parsed.warnings[0]
        );
    }

    #[test]
    fn a_misspelled_key_is_named_with_the_key_it_looks_like() {
        let text = "\
application: shop
targets:
  staging: {}
  prod:
    contraints:
      dependsOn: [staging]
      beforeDeployment:
        - runWebhook: {name: tests}
";
        let refused = parse(text).unwrap_err();
        assert_eq!(
            refused.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            ["targets.prod.contraints: unknown field (did you mean constraints?) at 5:5"]
        );
        let relaxed = parse_with(text, UnknownFields::Warn).unwrap();
        assert_eq!(
            relaxed.warnings[0].to_string(),
            "targets.prod.contraints: unknown field, ignored (did you mean constraints?) at 5:5"
        );
        assert!(
            relaxed
                .file
                .targets
                .iter()
                .all(|t| t.constraints.before_deployment.is_empty() && t.constraints.depends_on.is_empty()),
            "the gate is dropped when relaxed"
        );
    }

    #[test]
    fn a_misspelled_key_is_reported_with_the_error_it_causes_even_when_relaxed() {
        let text = "webhooks:\n  - {name: a, methd: POST, uriTemplate: 'https://x/', networkMode: direct}\n";
        for mode in [UnknownFields::Refuse, UnknownFields::Warn] {
            let found: Vec<String> = parse_with(text, mode).unwrap_err().iter().map(|d| d.to_string()).collect();
            assert!(found.iter().any(|e| e.contains("method")), "{mode:?}: {found:?}");
            assert!(
                found
                    .iter()
                    .any(|e| e.starts_with("webhooks[0].methd: unknown field") && e.contains("did you mean method?")),
                "{mode:?}: {found:?}"
            );
        }
    }

    #[test]
    fn signing_names_stored_secrets_one_or_several() {
        let text = "\
webhooks:
  - name: one
    method: POST
    uriTemplate: https://x/
    networkMode: direct
    signing: {secret: \"{{secrets.wh_key}}\"}
  - name: rotating
    method: POST
    uriTemplate: https://x/
    networkMode: direct
    signing:
      secrets:
        - {{secrets.new_key}}
        - \"{{ secrets.old-key }}\"
  - name: listed
    method: POST
    uriTemplate: https://x/
    networkMode: direct
    signing:
      secret: [\"{{secrets.a}}\", \"{{secrets.b}}\"]
  - name: plain
    method: POST
    uriTemplate: https://x/
    networkMode: direct
    headers:
      - {key: Webhook-Signature, value: forged}
analysis:
  webhooks:
    - name: gate
      type: confirm-rollout
      url: http://x/gate
      signing: {secret: \"{{secrets.hook_key}}\"}
targets:
  prod:
    driver:
      webhook:
        url: http://x/actions
        signing: {secret: \"{{secrets.driver_key}}\"}
";
        let parsed = parse(text).unwrap_or_else(|e| panic!("{e:?}"));
        let names = |s: &Option<Signing>| s.as_ref().map(|s| s.secrets.clone()).unwrap_or_default();
        let hooks = &parsed.file.webhooks;
        assert_eq!(names(&hooks[0].signing), ["wh_key"]);
        assert_eq!(hooks[0].signing.as_ref().unwrap().location.path, "webhooks[0].signing");
        assert_eq!(names(&hooks[1].signing), ["new_key", "old-key"]);
        assert_eq!(names(&hooks[2].signing), ["a", "b"]);
        assert_eq!(hooks[3].signing, None);
        assert_eq!(names(&parsed.file.hooks[0].signing), ["hook_key"]);
        let Driver::Webhook { signing, .. } = &parsed.file.targets[0].driver else { panic!("a webhook driver") };
        assert_eq!(names(signing), ["driver_key"]);
        let warnings: Vec<String> = parsed.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            [
                "webhooks[3].headers[0].key: ignored: the relay sets webhook-id, webhook-timestamp and webhook-signature itself at 26:15"
            ]
        );
    }

    #[test]
    fn bad_signing_is_reported_where_it_stands() {
        let text = "\
webhooks:
  - name: literal
    method: POST
    uriTemplate: https://x/
    networkMode: direct
    signing: {secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}
  - name: both
    method: POST
    uriTemplate: https://x/
    networkMode: direct
    signing:
      secret: \"{{secrets.a}}\"
      secrets: [\"{{secrets.b}}\"]
  - name: none
    method: POST
    uriTemplate: https://x/
    networkMode: direct
    signing: {secrets: [], colour: blue}
  - name: context
    method: POST
    uriTemplate: https://x/
    networkMode: direct
    signing:
      secrets: [\"{{secrets.ok}}\", \"{{context.key}}\"]
";
        assert_eq!(
            errors(text),
            [
                "webhooks[0].signing.secret: expected {{secrets.NAME}}, naming a stored secret, found \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\" (a signing key is never written in the file: store it with borealis secrets set NAME) at 6:23",
                "webhooks[1].signing.secrets: give secret or secrets, not both at 13:16",
                "webhooks[2].signing: signing needs at least one secret at 18:14",
                "webhooks[2].signing.colour: unknown field (known here: secret, secrets) at 18:28",
                "webhooks[3].signing.secrets[1]: expected {{secrets.NAME}}, naming a stored secret, found \"{{context.key}}\" (a signing key is never written in the file: store it with borealis secrets set NAME) at 24:35",
            ]
        );
        let missing =
            "webhooks:\n  - {name: a, method: POST, uriTemplate: 'https://x/', networkMode: direct, signing: {}}\n";
        assert_eq!(
            errors(missing),
            [
                "webhooks[0].signing: signing needs secret: \"{{secrets.NAME}}\" (or secrets: a list of them, during a key rotation) at 2:86"
            ]
        );
    }

    #[test]
    fn a_stored_spec_from_before_signing_still_reads() {
        let parsed =
            parse("webhooks:\n  - {name: a, method: POST, uriTemplate: 'https://x/', networkMode: direct}\n").unwrap();
        let mut value = serde_json::to_value(&parsed.file.webhooks[0]).unwrap();
        assert!(value.get("signing").is_none(), "an unsigned webhook serializes as before");
        value.as_object_mut().unwrap().remove("signing");
        let back: Webhook = serde_json::from_value(value).unwrap();
        assert_eq!(back.signing, None);
    }

    #[test]
    fn yaml_syntax_errors_have_a_position() {
        let found = errors("webhooks:\n  - name: [unclosed\n");
        assert!(found[0].starts_with("invalid YAML"), "{found:?}");
        assert!(found[0].contains(" at 3:"), "{found:?}");
    }

    #[test]
    fn bare_placeholders_are_quoted_in_place() {
        assert_eq!(
            quote_bare_placeholders("  value: {{a.b}}/x\n  - {{c.d}}\n# value: {{e}}\n"),
            "  value: '{{a.b}}/x'\n  - '{{c.d}}'\n# value: {{e}}\n"
        );
    }

    #[test]
    fn the_seed_examples_parse_as_written() {
        let github = parse(include_str!("../../../../tests/fixtures/seed003-github-webhook.yaml")).unwrap();
        let hook = &github.file.webhooks[0];
        assert_eq!((hook.name.as_str(), hook.retry_count, hook.network_mode), ("myWebhook", 3, NetworkMode::Direct));
        assert_eq!(hook.headers[0].value, "token {{secrets.github_token}}");
        assert!(github.warnings.is_empty(), "{:?}", github.warnings);
        let agent = parse(include_str!("../../../../tests/fixtures/seed003-agent-webhook.yaml")).unwrap();
        let hook = &agent.file.webhooks[0];
        assert_eq!(hook.agent_identifier.as_deref(), Some("test-rna"));
        assert_eq!(hook.headers[1].value, "{{armory.callbackUri}}/callback");
        assert_eq!(hook.headers[3].value, "{{context.environment}}");
    }

    #[test]
    fn deployments_refuse_cycles_unknown_targets_and_strategies() {
        let text = "\
targets:
  staging:
    strategy: missing
    constraints:
      dependsOn: [prod]
  prod:
    strategy: bg
    constraints:
      dependsOn: [staging, qa]
strategies:
  bg:
    blueGreen:
      redirectTrafficAfter:
        - analysis:
            interval: 7
            units: seconds
            queries: [q]
analysis:
  defaultMetricProviderName: prom
  queries: [{name: q, queryTemplate: up}]
";
        let file = parse(text).unwrap_or_else(|e| panic!("{e:?}")).file;
        let found: Vec<String> = validate_deployment(&file).iter().map(|d| d.to_string()).collect();
        assert!(found.iter().any(|e| e.contains("strategy \"missing\" is not defined")), "{found:?}");
        assert!(found.iter().any(|e| e.contains("dependsOn names target \"qa\", which is not defined")), "{found:?}");
        assert!(found.iter().any(|e| e.contains("dependsOn forms a cycle: staging -> prod -> staging")), "{found:?}");
        assert!(!found.iter().any(|e| e.contains("analysis")), "analysis steps run: {found:?}");
    }

    #[test]
    fn the_flagger_seed_parses_as_it_stands() {
        let seed = include_str!("../../../../tests/fixtures/seed004-flagger-hooks.yaml");
        let parsed = parse(seed).unwrap_or_else(|e| panic!("{e:?}"));
        let kinds: Vec<&str> = parsed.file.hooks.iter().map(|h| h.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "confirm-rollout",
                "pre-rollout",
                "rollout",
                "confirm-traffic-increase",
                "confirm-promotion",
                "post-rollout",
                "rollback",
                "event"
            ]
        );
        assert_eq!(parsed.file.hooks[1].timeout_ms, Some(180_000));
        assert_eq!(parsed.file.hooks[1].metadata["cmd"], "test podinfo -n test");
    }

    const SEED003_BLUE_GREEN: &str = "\
application: myApp
targets:
  prod:
    account: prod-cluster
    strategy: myBlueGreen
analysis:
  defaultMetricProviderName: prometheus-prod
  queries:
    - name: avgCPUUsage-pass
      upperLimit: 10000
      lowerLimit: 0
      queryTemplate: >-
        avg (avg_over_time(container_cpu_system_seconds_total{job=\"kubernetes-cadvisor\"}[{{armory.promQlStepInterval}}]) * on (pod)  group_left (annotation_app)
        sum(kube_pod_annotations{job=\"kubernetes-pods\",annotation_app=\"{{armory.applicationName}}\"})
        by (annotation_app, pod)) by (annotation_app)
  webhooks:
    - name: gate
      type: confirm-rollout
      url: http://x/gate
webhooks:
  - name: security-scan
    method: POST
    uriTemplate: https://scanner/
    networkMode: direct
strategies:
  myBlueGreen:
    blueGreen:
      activeService: myApp-external
      previewService: myApp-preview
      redirectTrafficAfter:
        - analysis:
            interval: 7
            units: seconds
            numberOfJudgmentRuns: 1
            rollBackMode: manual
            rollForwardMode: automatic
            queries:
              - avgCPUUsage-pass
        - runWebhook:
            name: security-scan
";

    #[test]
    fn the_seed_blue_green_analysis_parses_beside_flagger_hooks() {
        let parsed = parse(SEED003_BLUE_GREEN).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let file = parsed.file;
        assert_eq!(file.hooks.len(), 1, "analysis.webhooks still read");
        assert_eq!(file.metrics.default_metric_provider_name.as_ref().unwrap().name, "prometheus-prod");
        let query = file.query("avgCPUUsage-pass").unwrap();
        assert_eq!((query.lower_limit, query.upper_limit), (Some(0.0), Some(10000.0)));
        let analyses = file.analyses();
        let a = analyses[0];
        assert_eq!((a.interval_seconds, a.number_of_judgment_runs), (7, 1));
        assert_eq!((a.roll_back_mode, a.roll_forward_mode), (DecisionMode::Manual, DecisionMode::Automatic));
        assert_eq!(a.lookback_method, LookbackMethod::Growing);
        assert_eq!(file.provider_of(a).unwrap().name, "prometheus-prod");
        assert_eq!(a.location.path, "strategies.myBlueGreen.blueGreen.redirectTrafficAfter[0].analysis");
    }

    #[test]
    fn analysis_problems_are_reported_at_once_where_they_stand() {
        let text = "\
analysis:
  queries:
    - {name: a, queryTemplate: 'up', upperLimit: high}
    - {name: b, queryTemplate: 'up', upperLimit: 1, lowerLimit: 2}
    - {name: c, queryTemplate: 'x{{armory.nope}}'}
    - {name: d, queryTemplate: 'x[{{armory.promQlStepInterval}}]', lowerLimit: -1.5}
targets:
  dev:
    constraints:
      beforeDeployment:
        - analysis:
            interval: 1
            units: fortnights
            queries: [d, missing]
            lookbackMethod: sliding
      afterDeployment:
        - pause: {untilApproved: true, approvalExpiration: {duration: 3, unit: seconds}}
";
        assert_eq!(
            errors(text),
            [
                "analysis.queries[0].upperLimit: expected a number, found \"high\" at 3:50",
                "analysis.queries[1].lowerLimit: lowerLimit 2 is above upperLimit 1 at 4:65",
                "analysis.queries[2].queryTemplate: unknown placeholder {{armory.nope}}: armory offers callbackUri, applicationName, environmentName, deploymentId, accountName, namespace, startTimeIso8601, startTimeEpochSeconds, startTimeEpochMillis, endTimeIso8601, endTimeEpochSeconds, endTimeEpochMillis, intervalMillis, intervalSeconds, promQlStepInterval at 5:32",
                "targets.dev.constraints.beforeDeployment[0].analysis.units: expected seconds, minutes or hours, found \"fortnights\" at 13:20",
            ]
        );
        let fixed =
            text.replace("fortnights", "seconds").replace("high", "3").replace("lowerLimit: 2", "lowerLimit: 0");
        let fixed = fixed.replace("{{armory.nope}}", "{{context.job}}");
        assert_eq!(
            errors(&fixed),
            [
                "targets.dev.constraints.beforeDeployment[0].analysis: no metric provider: give metricProviderName, or analysis.defaultMetricProviderName at the top level at 11:11",
                "targets.dev.constraints.beforeDeployment[0].analysis.queries[1]: unknown query \"missing\" (defined: a, b, c, d) at 14:26",
            ]
        );
        let fixed =
            fixed.replace("interval: 1", "interval: 1\n            metricProviderName: prom").replace(", missing", "");
        let file = parse(&fixed).unwrap_or_else(|e| panic!("{e:?}")).file;
        let a = file.analyses()[0];
        assert_eq!((a.lookback_method, a.queries[0].name.as_str()), (LookbackMethod::Sliding, "d"));
        assert_eq!(file.query("d").unwrap().lower_limit, Some(-1.5));
        let Step::Pause { pause, .. } = &file.targets[0].constraints.after_deployment[0] else { panic!("a pause") };
        assert_eq!(
            *pause,
            Pause::UntilApproved { expires_after: Some(3), requires_roles: Vec::new(), required_approvals: 1 }
        );
    }

    #[test]
    fn required_approvals_is_a_count_of_people_from_one_to_twenty() {
        let file = |n: &str| {
            format!(
                "application: a\ntargets:\n  prod:\n    constraints:\n      beforeDeployment:\n        - pause:\n            untilApproved: true\n            requiredApprovals: {n}\n"
            )
        };
        let parsed = parse(&file("2")).unwrap_or_else(|e| panic!("{e:?}")).file;
        let Step::Pause { pause, .. } = &parsed.targets[0].constraints.before_deployment[0] else { panic!("a pause") };
        assert_eq!(
            *pause,
            Pause::UntilApproved { expires_after: None, requires_roles: Vec::new(), required_approvals: 2 }
        );
        assert_eq!(
            errors(&file("0")),
            [
                "targets.prod.constraints.beforeDeployment[0].pause.requiredApprovals: requiredApprovals is at least 1 at 8:32"
            ]
        );
        assert!(
            errors(&file("21"))[0].starts_with("targets.prod.constraints.beforeDeployment[0].pause.requiredApprovals")
        );
        assert!(errors(&file("two"))[0].contains("requiredApprovals"));
    }

    #[test]
    fn webhook_templates_do_not_get_the_analysis_window() {
        let text = "webhooks:\n  - {name: a, method: POST, uriTemplate: 'https://x/{{armory.startTimeIso8601}}', networkMode: direct}\n";
        let found = errors(text);
        assert!(found[0].contains("unknown placeholder {{armory.startTimeIso8601}}: armory offers callbackUri, applicationName, environmentName, deploymentId, accountName, namespace at"), "{found:?}");
    }
}
