//! What a deployment's caller gave besides the file: `{{context.KEY}}`
//! values and artifacts, stored together as one JSON object, and what the
//! deployment's drivers are told: the file's, overlaid with the caller's.

use std::collections::BTreeMap;

use borealis_core::deployment::{self, DeploymentFile, UnknownFields};
use borealis_store::DeploymentRecord;

/// Most artifacts a deployment may name, and the longest name or value.
pub const MAX_ARTIFACTS: usize = 64;
pub const MAX_ARTIFACT_BYTES: usize = 1024;

/// The caller's inputs, as stored. Unknown fields are refused so that a
/// context stored before there were inputs (a map of any keys) reads as
/// that context, not as empty inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inputs {
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    #[serde(default)]
    pub artifacts: BTreeMap<String, String>,
    /// Who started the deployment, as the audit trail names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// Their `kind:id`, which a team forbidding self-approval compares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by_id: Option<String>,
}

/// How inputs were stored: as a whole, or (before artifacts) as the context alone.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Stored {
    Inputs(Inputs),
    Context(BTreeMap<String, String>),
}

impl Inputs {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("maps of strings serialize")
    }

    /// Reads what was stored; nothing readable is no input.
    pub fn decode(text: &str) -> Self {
        match serde_json::from_str::<Stored>(text) {
            Ok(Stored::Inputs(inputs)) => inputs,
            Ok(Stored::Context(context)) => Self { context, ..Self::default() },
            Err(_) => Self::default(),
        }
    }

    /// The file's context and artifacts, overlaid with these.
    pub fn over(&self, file: &DeploymentFile) -> Self {
        let overlay = |base: &BTreeMap<String, String>, top: &BTreeMap<String, String>| {
            let mut all = base.clone();
            all.extend(top.iter().map(|(k, v)| (k.clone(), v.clone())));
            all
        };
        Self {
            context: overlay(&file.context, &self.context),
            artifacts: overlay(&file.artifacts, &self.artifacts),
            started_by: self.started_by.clone(),
            started_by_id: self.started_by_id.clone(),
        }
    }

    /// What deployment `record`'s drivers are told: its stored file's
    /// context and artifacts, overlaid with its caller's.
    pub fn told(record: &DeploymentRecord) -> Self {
        let caller = Self::decode(&record.context);
        match deployment::parse_with(&record.file, UnknownFields::Warn) {
            Ok(parsed) => caller.over(&parsed.file),
            Err(_) => caller,
        }
    }

    /// Why the caller's artifacts cannot be taken, if they cannot.
    pub fn check_artifacts(artifacts: &BTreeMap<String, String>) -> Result<(), String> {
        if artifacts.len() > MAX_ARTIFACTS {
            return Err(format!("{} artifacts; at most {MAX_ARTIFACTS} are taken", artifacts.len()));
        }
        for (name, value) in artifacts {
            let valid = !name.is_empty()
                && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                return Err(format!("artifact name {name:?}: 1 to 63 of letters, digits, '.', '_', '-'"));
            }
            if value.is_empty() || value.len() > MAX_ARTIFACT_BYTES {
                return Err(format!("artifact {name}: its value is empty or over {MAX_ARTIFACT_BYTES} bytes"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn what_was_stored_before_artifacts_reads_as_the_context() {
        let old = Inputs::decode(r#"{"image":"shop:1","context":"a key named context"}"#);
        assert_eq!(old.context, map(&[("image", "shop:1"), ("context", "a key named context")]));
        assert!(old.artifacts.is_empty());
        let plain = Inputs::decode(r#"{"image":"shop:1"}"#);
        assert_eq!(plain.context, map(&[("image", "shop:1")]), "a context of other keys is a context");
        let new = Inputs {
            context: map(&[("a", "1")]),
            artifacts: map(&[("web", "shop:2")]),
            started_by: Some("ci (default)".into()),
            started_by_id: Some("service_account:0123456789abcdef".into()),
        };
        assert_eq!(Inputs::decode(&new.encode()), new);
        assert_eq!(Inputs::decode("not json"), Inputs::default());
    }

    #[test]
    fn the_callers_values_go_over_the_files() {
        let file = DeploymentFile {
            context: map(&[("env", "file"), ("keep", "k")]),
            artifacts: map(&[("web", "shop:1"), ("api", "api:7")]),
            ..Default::default()
        };
        let caller =
            Inputs { context: map(&[("env", "caller")]), artifacts: map(&[("web", "shop:2")]), ..Default::default() };
        let all = caller.over(&file);
        assert_eq!(all.context, map(&[("env", "caller"), ("keep", "k")]));
        assert_eq!(all.artifacts, map(&[("api", "api:7"), ("web", "shop:2")]));
    }

    #[test]
    fn artifacts_are_bounded_and_named_plainly() {
        assert!(Inputs::check_artifacts(&map(&[("web", "shop:1")])).is_ok());
        assert!(Inputs::check_artifacts(&map(&[("a b", "x")])).unwrap_err().contains("\"a b\""));
        assert!(Inputs::check_artifacts(&map(&[("web", "")])).unwrap_err().contains("empty"));
        let many: BTreeMap<String, String> = (0..65).map(|i| (format!("a{i}"), "v".into())).collect();
        assert!(Inputs::check_artifacts(&many).unwrap_err().contains("at most 64"));
    }
}
