//! `borealis`: the operator CLI. Every command is one or two calls to the
//! relay's HTTP API; the relay does the work.
//!
//! `args` is the command line, `client` speaks to the relay (token, calls,
//! problems), `commands` does what each subcommand asks, and `render` prints
//! the replies.

/// `println!` that a closed pipe ends quietly (`out::line`).
macro_rules! say {
    () => {
        $crate::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

mod args;
mod client;
mod commands;
mod login;
mod out;
mod render;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command, Output, WebhookCommand};
use client::{Failure, Relay};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("borealis: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cli: &Cli) -> Result<(), Failure> {
    // These need no relay.
    match &cli.command {
        Command::Validate(args) => return commands::validate::run(args),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut <Cli as clap::CommandFactory>::command(), "borealis", &mut script);
            std::io::Write::write_all(&mut std::io::stdout().lock(), &script).unwrap_or_else(|e| out::gone(e));
            return Ok(());
        }
        Command::Login { with_token: false } => {
            return commands::login::login(&Relay::with_token(cli, String::new())?, &cli.relay).await;
        }
        Command::Login { with_token: true } => return commands::login::login_with_token(cli).await,
        Command::Logout => return commands::login::logout(&cli.relay),
        _ => {}
    }
    let relay = Relay::new(cli)?;
    let json = cli.json || cli.output == Some(Output::Json);
    match &cli.command {
        Command::Agents(command) => commands::agents::run(&relay, json, command).await,
        Command::Clients(command) => commands::clients::run(&relay, json, command).await,
        Command::Proxy(args) => commands::proxy::run(&relay, args).await,
        Command::Secrets(command) => commands::secrets::run(&relay, json, command).await,
        Command::Providers(command) => commands::providers::run(&relay, json, command).await,
        Command::Webhook(WebhookCommand::Run(args)) => commands::runs::webhook_run(&relay, json, args).await,
        Command::Runs(command) => commands::runs::run(&relay, json, command).await,
        Command::Validate(_) | Command::Completions { .. } | Command::Login { .. } | Command::Logout => {
            unreachable!("done above, without a token")
        }
        Command::Abort(args) => commands::deployments::abort(&relay, json, args).await,
        Command::Teams(command) => commands::identities::teams(&relay, json, command).await,
        Command::ServiceAccounts(command) => commands::identities::service_accounts(&relay, json, command).await,
        Command::RoleBindings(command) => commands::identities::role_bindings(&relay, json, command).await,
        Command::PersonalTokens(command) => commands::identities::personal_tokens(&relay, json, command).await,
        Command::Audit(args) => commands::identities::audit(&relay, json, args).await,
        Command::Deploy(args) => {
            let stream = cli.output == Some(Output::Json);
            commands::deployments::deploy(&relay, json, stream, args).await
        }
        Command::Deployments(command) => commands::deployments::run(&relay, json, command).await,
        Command::Approve { deployment, target } => {
            commands::deployments::decide(&relay, deployment, target, "approve").await
        }
        Command::Reject { deployment, target } => {
            commands::deployments::decide(&relay, deployment, target, "reject").await
        }
        Command::Rollback { deployment, target } => {
            commands::deployments::decide(&relay, deployment, target, "rollback").await
        }
        Command::Continue { deployment, target } => {
            commands::deployments::decide(&relay, deployment, target, "continue").await
        }
    }
}
