//! `validate`: a deployment file checked here, as the relay would check it
//! before anything is stored, except what only the relay knows (its
//! secrets, metric providers and agents).

use borealis_core::deployment::{self, Diagnostic, UnknownFields};

use crate::args::ValidateArgs;
use crate::client::Failure;
use crate::render::safe;

pub fn run(args: &ValidateArgs) -> Result<(), Failure> {
    let shown = args.file.file.display().to_string();
    let text = super::read_file(&args.file)?;
    let (errors, warnings) = check(&text, args);
    let line = |severity: &str, d: &Diagnostic| {
        let place = if d.path.is_empty() { String::new() } else { format!("{}: ", safe(&d.path, false)) };
        // Whole-file complaints have no position.
        let at = if d.line == 0 { String::new() } else { format!(":{}:{}", d.line, d.column) };
        format!("{}{at}: {severity}: {place}{}", safe(&shown, false), safe(&d.message, false))
    };
    for warning in &warnings {
        eprintln!("{}", line("warning", warning));
    }
    for error in &errors {
        eprintln!("{}", line("error", error));
    }
    match errors.len() {
        0 => {
            say!("{}: valid", safe(&shown, false));
            Ok(())
        }
        1 => Err(Failure::failed(format!("{}: 1 error", safe(&shown, false)))),
        n => Err(Failure::failed(format!("{}: {n} errors", safe(&shown, false)))),
    }
}

/// The file's errors and warnings, in file order.
fn check(text: &str, args: &ValidateArgs) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    let parsed = match deployment::parse_with(text, UnknownFields::allowed_if(args.file.allow_unknown_fields)) {
        Ok(parsed) => parsed,
        Err(errors) => return (errors, Vec::new()),
    };
    let mut errors = Vec::new();
    if !args.webhooks_only {
        errors.extend(deployment::validate_deployment(&parsed.file));
    }
    errors.sort_by_key(|d| (d.line, d.column));
    (errors, parsed.warnings)
}
