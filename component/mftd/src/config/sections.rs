//! One section of the configuration without the rest. Operator commands
//! that need only the transfer log (`mftd log`, run by an auditor who holds
//! no component secret) or only the admin listener (`mftd status`) read just
//! their section, with its own `MFTD_<SECTION>__<KEY>` environment
//! overrides: the other sections' secrets and files are never opened, and a
//! mistake in them does not stop the command.

use std::net::SocketAddr;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::{
    apply_env_overrides, load_optional_key, syntax_error, AdminConfig, ConfigError, DatabaseConfig,
    Secret, ENV_PREFIX,
};

/// Section `name` of the file at `path` (none: of an empty file) with the
/// environment's overrides for that section applied; `None` when neither
/// the file nor the environment has it.
fn section<T: DeserializeOwned>(
    path: Option<&Path>,
    name: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Option<T>, ConfigError> {
    let origin = path.map_or_else(|| "environment".to_owned(), |p| p.display().to_string());
    let parse_error = |message: String| ConfigError::Parse {
        path: origin.clone(),
        message,
    };
    let mut table = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            toml::from_str::<toml::Table>(&text)
                .map_err(|e| parse_error(syntax_error(&text, &e)))?
        }
        None => toml::Table::new(),
    };
    let mut only = toml::Table::new();
    if let Some(value) = table.remove(name) {
        only.insert(name.to_owned(), value);
    }
    let prefix = format!("{ENV_PREFIX}{}__", name.to_ascii_uppercase());
    let env = env.into_iter().filter(|(k, _)| k.starts_with(&prefix));
    apply_env_overrides(&mut only, env).map_err(&parse_error)?;
    let Some(value) = only.remove(name) else {
        return Ok(None);
    };
    value
        .try_into()
        .map(Some)
        .map_err(|e: toml::de::Error| parse_error(format!("[{name}]: {}", e.message().trim_end())))
}

/// The transfer log's connection from `[database]` alone (see
/// [`DatabaseConfig::resolve_url`]); `None` when there is no such section.
pub fn database(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Option<mft_storage::db::DbConfig>, ConfigError> {
    let Some(db) = section::<DatabaseConfig>(path, "database", env)? else {
        return Ok(None);
    };
    let url = db.resolve_url()?;
    Ok(Some(mft_storage::db::DbConfig {
        url: url.expose().to_owned(),
        ca_file: db.ca_file,
        statement_timeout: None,
    }))
}

/// Where the admin listener is and the token it wants.
#[derive(Debug)]
pub struct AdminEndpoint {
    /// `[admin] listen`; `None` when the node has no admin listener.
    pub listen: Option<SocketAddr>,
    /// `[admin] token` or the content of `token_file`.
    pub token: Option<Secret>,
}

/// `[admin]` alone.
pub fn admin(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<AdminEndpoint, ConfigError> {
    let admin = section::<AdminConfig>(Some(path), "admin", env)?.unwrap_or_default();
    let token = load_optional_key(&admin.token, &admin.token_file, "admin.token")?;
    Ok(AdminEndpoint {
        listen: admin.listen,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_database_section_is_read_without_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mftd.toml");
        // No component secret, an unreadable token key file, an unknown
        // section: none of it matters to [database].
        std::fs::write(
            &path,
            "[xmpp]\nsecret_file = \"/nonexistent\"\n[bogus]\nx = 1\n[database]\nurl = \"postgresql://auditor@db.example.test/mftd\"\n",
        )
        .unwrap();
        let db = database(Some(&path), env(&[("MFTD_XMPP_ROUTER", "x")]))
            .unwrap()
            .unwrap();
        assert_eq!(db.url, "postgresql://auditor@db.example.test/mftd");
        // The environment's override wins, and works without a file.
        let over = env(&[("MFTD_DATABASE__URL", "postgresql://other@h/mftd")]);
        let db = database(Some(&path), over.clone()).unwrap().unwrap();
        assert_eq!(db.url, "postgresql://other@h/mftd");
        let db = database(None, over).unwrap().unwrap();
        assert_eq!(db.url, "postgresql://other@h/mftd");
        assert!(database(None, Vec::new()).unwrap().is_none());
        // A mistake in the section is named.
        std::fs::write(
            &path,
            "[database]\nurl = \"postgresql://a@h/d?sslmode=require\"\n",
        )
        .unwrap();
        let e = database(Some(&path), Vec::new()).err().unwrap().to_string();
        assert!(e.contains("database.ca_file"), "{e}");
    }

    #[test]
    fn the_admin_section_gives_the_listener_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mftd.toml");
        let token = dir.path().join("admin.token");
        std::fs::write(&token, "0123456789abcdef-admin\n").unwrap();
        std::fs::write(
            &path,
            format!(
                "[admin]\nlisten = \"127.0.0.1:5281\"\ntoken_file = \"{}\"\n",
                token.display()
            ),
        )
        .unwrap();
        let a = admin(&path, Vec::new()).unwrap();
        assert_eq!(a.listen, Some("127.0.0.1:5281".parse().unwrap()));
        assert_eq!(
            a.token.as_ref().map(Secret::expose),
            Some("0123456789abcdef-admin")
        );
        std::fs::write(&path, "[xmpp]\n").unwrap();
        assert!(admin(&path, Vec::new()).unwrap().listen.is_none());
    }
}
