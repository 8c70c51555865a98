//! Where `mftd log` finds the transfer log. An auditor needs the database
//! and nothing else — no component secret, no token key, no file server
//! key — so the URL can come alone:
//!
//! 1. `--database-url-file PATH` (with `--database-ca-file` for TLS);
//! 2. `--config PATH`: only its `[database]` section is read, with the
//!    `MFTD_DATABASE__*` overrides;
//! 3. `MFTD_DATABASE__URL` or `MFTD_DATABASE__URL_FILE` (and
//!    `MFTD_DATABASE__CA_FILE`) in the environment, without a file;
//! 4. the `[database]` section of `/etc/mftd/mftd.toml`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use mft_storage::db::DbConfig;

use crate::config::{sections, DatabaseConfig};

/// The environment variables that name the database on their own.
const URL_VARS: [&str; 2] = ["MFTD_DATABASE__URL", "MFTD_DATABASE__URL_FILE"];

/// Resolves the database as the module documentation says.
pub fn resolve(
    config: Option<&Path>,
    url_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    default_config: &Path,
    env: Vec<(String, String)>,
) -> anyhow::Result<DbConfig> {
    if let Some(file) = url_file {
        let db = DatabaseConfig {
            url: None,
            url_file: Some(file.clone()),
            ca_file: ca_file.clone(),
            statement_timeout: crate::config::default_statement_timeout(),
        };
        let url = db
            .resolve_url()
            .with_context(|| format!("while reading --database-url-file {}", file.display()))?;
        return Ok(DbConfig {
            url: url.expose().to_owned(),
            ca_file,
            statement_timeout: None,
        });
    }
    let env_names_it = env.iter().any(|(k, _)| URL_VARS.contains(&k.as_str()));
    let path = match config {
        Some(path) => Some(path),
        None if env_names_it => None,
        None => Some(default_config),
    };
    let db = sections::database(path, env).with_context(|| {
        if config.is_none() && !env_names_it {
            format!(
                "no --database-url-file, --config or MFTD_DATABASE__URL given, and the default {} cannot be used",
                default_config.display()
            )
        } else {
            "while reading [database]".to_owned()
        }
    })?;
    db.ok_or_else(|| {
        anyhow::anyhow!(
            "{} has no [database] section: give the transfer log's URL with --database-url-file PATH \
             (a file holding e.g. postgresql://auditor@db.example.test/mftd) or MFTD_DATABASE__URL, \
             or a configuration with [database] url (--config)",
            path.unwrap_or(default_config).display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_file_needs_no_configuration_and_the_environment_none_either() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such.toml");
        let file = dir.path().join("url");
        std::fs::write(&file, "postgresql://auditor@127.0.0.1/mftd\n").unwrap();
        let db = resolve(None, Some(file), None, &missing, Vec::new()).unwrap();
        assert_eq!(db.url, "postgresql://auditor@127.0.0.1/mftd");
        let env = vec![("MFTD_DATABASE__URL".into(), "postgresql://a@h/d".into())];
        let db = resolve(None, None, None, &missing, env).unwrap();
        assert_eq!(db.url, "postgresql://a@h/d");
        // Without either, the default configuration is read, and its
        // absence is reported with what to do.
        let e = format!(
            "{:#}",
            resolve(None, None, None, &missing, Vec::new())
                .err()
                .unwrap()
        );
        assert!(
            e.contains("no-such.toml") && e.contains("--database-url-file"),
            "{e}"
        );
        let empty = dir.path().join("empty.toml");
        std::fs::write(&empty, "").unwrap();
        let e = format!(
            "{:#}",
            resolve(Some(&empty), None, None, &missing, Vec::new())
                .err()
                .unwrap()
        );
        assert!(e.contains("--database-url-file"), "{e}");
    }
}
