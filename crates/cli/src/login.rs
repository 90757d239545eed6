//! A person's sign-in, kept for the CLI: the token the relay gave at
//! `borealis login`, per relay, in the user's config directory
//! (`$XDG_CONFIG_HOME/borealis/logins.json`, else `~/.config/borealis/`),
//! readable by the user alone (mode 0600, in a directory of mode 0700).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// One relay's stored sign-in.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Login {
    pub token: String,
    /// Who it acts as.
    pub name: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// The file sign-ins are kept in, when a home or config directory is known.
pub fn file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()).map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|home| PathBuf::from(home).join(".config"))
    })?;
    Some(base.join("borealis").join("logins.json"))
}

fn read_all() -> BTreeMap<String, Login> {
    file()
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// The relay's key in the file: its URL without a trailing slash.
fn key(relay: &url::Url) -> String {
    relay.as_str().trim_end_matches('/').to_owned()
}

/// The stored sign-in for `relay`, if any.
pub fn stored(relay: &url::Url) -> Option<Login> {
    read_all().remove(&key(relay))
}

/// Keeps `login` for `relay` (replacing one kept before); the file's path.
pub fn store(relay: &url::Url, login: Login) -> Result<PathBuf, String> {
    let mut all = read_all();
    all.insert(key(relay), login);
    write_all(&all)
}

/// Forgets `relay`'s sign-in; whether there was one.
pub fn forget(relay: &url::Url) -> Result<bool, String> {
    let mut all = read_all();
    let had = all.remove(&key(relay)).is_some();
    if had {
        write_all(&all)?;
    }
    Ok(had)
}

fn write_all(all: &BTreeMap<String, Login>) -> Result<PathBuf, String> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let path = file().ok_or("neither XDG_CONFIG_HOME nor HOME is set: no place to keep the sign-in")?;
    let dir = path.parent().expect("a file in a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    // Written aside and renamed over: a reader never sees half a file.
    let aside = dir.join(format!(".logins.{}.json", std::process::id()));
    let text = serde_json::to_vec_pretty(all).expect("sign-ins serialize");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&aside)
        .map_err(|e| format!("{}: {e}", aside.display()))?;
    out.write_all(&text).and_then(|()| out.sync_all()).map_err(|e| format!("{}: {e}", aside.display()))?;
    std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    std::fs::rename(&aside, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
