//! Who runs an operator command: the actor recorded for a hold or a removal
//! when `--by` is not given is the login user — under `sudo`, the user who
//! ran sudo, so records name a person rather than "root"; without a login
//! environment (a timer, a container), the account the process runs as.

/// The login user's name: `SUDO_USER`, `LOGNAME` or `USER`, else the name
/// of the real user id in `/etc/passwd`, else `uid <n>`.
pub fn login_user() -> String {
    ["SUDO_USER", "LOGNAME", "USER"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty())
        .unwrap_or_else(account)
}

/// The account of the process's real user id.
fn account() -> String {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        });
    let Some(uid) = uid else {
        return "unknown user".to_owned();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The actor of an operator command: `--by`, or the login user.
pub fn actor(by: Option<String>) -> anyhow::Result<String> {
    match by.map(|b| b.trim().to_owned()) {
        Some(b) if b.is_empty() => {
            anyhow::bail!("--by is empty: give the name of the person responsible")
        }
        Some(b) => Ok(b),
        None => Ok(login_user()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_found_without_a_login_environment() {
        // Whoever runs the tests has a passwd entry or at least a uid.
        let me = account();
        assert!(!me.is_empty() && me != "unknown user", "{me}");
        assert_eq!(actor(Some(" carol ".into())).expect("given"), "carol");
        assert!(actor(Some("  ".into())).is_err());
    }
}
