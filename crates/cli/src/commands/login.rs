//! `login` and `logout`: a person's own sign-in for the CLI, through the
//! identity provider's device flow, which the relay carries out.

use std::time::Duration;

use borealis_api::{DeviceLogin, DeviceLoginPoll, DeviceLoginResult, PersonalTokenList};

use crate::args::Cli;
use crate::client::{Failure, Relay};
use crate::login::{self, Login};

/// The longest a sign-in waits for the person, whatever the provider says.
const AT_MOST: Duration = Duration::from_secs(15 * 60);

pub async fn login(relay: &Relay, base: &url::Url) -> Result<(), Failure> {
    let started: DeviceLogin = relay.post("/api/v1/login/device", &serde_json::json!({})).await?;
    match &started.verification_uri_complete {
        Some(complete) => eprintln!(
            "To sign in, open {complete}\n(or open {} and enter the code {})",
            started.verification_uri, started.user_code
        ),
        None => eprintln!("To sign in, open {} and enter the code {}", started.verification_uri, started.user_code),
    }
    eprintln!("Waiting for you to approve it there...");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(started.expires_in).min(AT_MOST);
    let mut interval = Duration::from_secs(started.interval.max(1));
    let poll = DeviceLoginPoll { device_code: started.device_code.clone() };
    loop {
        tokio::time::sleep(interval).await;
        if tokio::time::Instant::now() >= deadline {
            return Err(Failure::failed("the sign-in was not approved in time: run borealis login again"));
        }
        let answer: DeviceLoginResult = relay.post("/api/v1/login/device/token", &poll).await?;
        if answer.pending {
            if answer.slow_down {
                interval += Duration::from_secs(5);
            }
            continue;
        }
        let (Some(token), Some(name), Some(expires_at)) = (answer.token, answer.name, answer.expires_at) else {
            return Err(Failure::failed("the relay's answer holds no token"));
        };
        let path = login::store(base, Login { token, name: name.clone(), expires_at: expires_at.clone() })
            .map_err(Failure::failed)?;
        say!("signed in as {name} until {expires_at} (kept in {})", path.display());
        return Ok(());
    }
}

/// `login --with-token`: keeps a personal token made in the console, read
/// from standard input (never a flag: the process list would show it),
/// once the relay says whose it is.
pub async fn login_with_token(cli: &Cli) -> Result<(), Failure> {
    use std::io::{IsTerminal, Read};
    if std::io::stdin().is_terminal() {
        eprintln!("Paste the personal token, then press Enter and Ctrl-D:");
    }
    let mut text = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| Failure::bad_input(format!("reading the token from standard input: {e}")))?;
    let token = text.trim().to_owned();
    let Some(id) = token.strip_prefix("bpt_").and_then(|rest| rest.split_once('_')).map(|(id, _)| id.to_owned()) else {
        return Err(Failure::bad_input(
            "standard input holds no personal token (bpt_...): make one on the console's Personal tokens page",
        ));
    };
    let relay = Relay::with_token(cli, token.clone())?;
    let mine: PersonalTokenList = relay.get("/api/v1/personal-tokens").await?;
    let Some(found) = mine.personal_tokens.into_iter().find(|t| t.id == id) else {
        return Err(Failure::failed("the relay does not list this token among its person's"));
    };
    let login = Login { token, name: found.person.name.clone(), expires_at: found.expires_at.clone() };
    let path = login::store(&cli.relay, login).map_err(Failure::failed)?;
    say!("signed in as {} until {} (kept in {})", found.person.name, found.expires_at, path.display());
    Ok(())
}

pub fn logout(base: &url::Url) -> Result<(), Failure> {
    match login::forget(base).map_err(Failure::failed)? {
        true => say!("signed out of {base}"),
        false => say!("no sign-in was kept for {base}"),
    }
    Ok(())
}
