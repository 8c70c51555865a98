//! Who runs an operator command: the actor recorded for a hold or a removal
//! when `--by` is not given is the login user (under `sudo`, the user who
//! ran sudo), so every record names a person rather than "root".

/// The login user's name, as the environment gives it.
pub fn login_user() -> Option<String> {
    ["SUDO_USER", "LOGNAME", "USER"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty())
}

/// The actor of an operator command: `--by`, or the login user.
pub fn actor(by: Option<String>) -> anyhow::Result<String> {
    match by.map(|b| b.trim().to_owned()) {
        Some(b) if !b.is_empty() => Ok(b),
        Some(_) => anyhow::bail!("--by is empty: give the name of the person responsible"),
        None => login_user().ok_or_else(|| {
            anyhow::anyhow!(
                "cannot tell who you are (SUDO_USER, LOGNAME and USER are unset): pass --by <your name>"
            )
        }),
    }
}
