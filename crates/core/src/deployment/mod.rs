//! The deployment file: its model, and a parser whose every complaint names
//! a field path and a `line:column`.
//!
//! The parser walks a YAML tree that keeps positions (marked-yaml) instead
//! of deserializing blindly, so that a wrong value is reported where it
//! stands, an unknown field is refused with the known one it looks like (or
//! warned about, when the caller allows), and every error is found in one pass.
//!
//! - `model`: the file's types ([`DeploymentFile`], [`Webhook`], [`Target`], ...).
//! - `reader`: [`parse`] (and [`parse_with`]), which reads the YAML and then runs `validate`.
//! - `validate`: checks across the whole file, and [`validate_deployment`].
//! - `diagnostic`: [`Location`] and [`Diagnostic`], what every complaint carries.

mod diagnostic;
mod model;
mod reader;
mod validate;

pub use diagnostic::{Diagnostic, Location};
pub use model::{
    Analysis, AnalysisQuery, Constraints, DecisionMode, DeploymentFile, Driver, FlaggerHook, HeaderTemplate, HookType,
    LookbackMethod, Metrics, NameRef, NetworkMode, Pause, RunWebhook, Signing, Step, Strategy, StrategyKind, Target,
    Webhook, agent_for,
};
pub use reader::{Parsed, UnknownFields, parse, parse_with};
pub use validate::validate_deployment;
