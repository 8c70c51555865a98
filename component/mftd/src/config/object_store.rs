//! `[store.s3]`: an S3 bucket as the file store (Garage, AWS S3, any
//! service speaking S3 with SigV4), validated once into
//! [`S3Settings`]: the endpoint parsed, the credentials read (from a file
//! or the environment), the CA loaded for `https`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use mft_common::units::HumanDuration;
use mft_storage::s3::sigv4::Credentials;
use mft_storage::s3::{ClientSettings, Endpoint, S3Settings};

use super::{invalid, ConfigError};

/// `[store.s3]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The service, `http://127.0.0.1:3900` or `https://s3.example.com`.
    pub endpoint: String,
    /// The region signed for (Garage's `s3_region`; AWS's region).
    #[serde(default = "default_region")]
    pub region: String,
    /// The bucket (it must exist; mftd never creates or deletes buckets).
    pub bucket: String,
    /// This node's directory in the bucket, ending in the node's name,
    /// e.g. `mftFileStore/node_1`.
    pub prefix: String,
    /// The access key id; else the `AWS_ACCESS_KEY_ID` environment variable.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// A file holding the secret access key (readable by the service user
    /// only); else the `AWS_SECRET_ACCESS_KEY` environment variable.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// CA certificates (PEM) an `https` endpoint's certificate must chain to.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Limit for connecting (and the TLS handshake).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Limit for each answer and each piece of a body.
    #[serde(default = "default_io_timeout")]
    pub io_timeout: HumanDuration,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_io_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

impl S3Config {
    /// The node directory's last component (checked against `node.name`).
    pub fn node_dir_name(&self) -> Option<String> {
        self.prefix
            .trim_matches('/')
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
    }

    /// The runtime settings: endpoint parsed, credentials and CA read.
    pub fn checked(&self) -> Result<S3Settings, ConfigError> {
        let endpoint =
            Endpoint::parse(&self.endpoint).map_err(|e| invalid("store.s3.endpoint", e))?;
        if self.bucket.is_empty() || self.bucket.contains('/') {
            return Err(invalid(
                "store.s3.bucket",
                "a bucket name such as mft-files (no '/'; the node directory is store.s3.prefix)",
            ));
        }
        let prefix = self.prefix.trim_matches('/').to_owned();
        if prefix
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(invalid(
                "store.s3.prefix",
                "a path such as mftFileStore/node_1, without empty, '.' or '..' parts",
            ));
        }
        let access_key_id = match &self.access_key_id {
            Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
            _ => std::env::var("AWS_ACCESS_KEY_ID")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    invalid(
                        "store.s3.access_key_id",
                        "missing: set it, or AWS_ACCESS_KEY_ID in the service's environment",
                    )
                })?,
        };
        let secret_access_key = match &self.secret_access_key_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| {
                    invalid(
                        "store.s3.secret_access_key_file",
                        format!(
                            "cannot read {}: {e} (the file must be readable by the service user)",
                            path.display()
                        ),
                    )
                })?
                .trim()
                .to_owned(),
            None => std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default(),
        };
        if secret_access_key.is_empty() {
            return Err(invalid(
                "store.s3.secret_access_key_file",
                "no secret access key: name a file holding it, or set AWS_SECRET_ACCESS_KEY in the service's environment",
            ));
        }
        let tls =
            match (&self.ca_file, endpoint.https) {
                (Some(ca), true) => Some(Arc::new(
                    mft_storage::s3::client_config_trusting(ca, "store.s3.ca_file")
                        .map_err(|e| invalid("store.s3.ca_file", e))?,
                )),
                (None, true) => return Err(invalid(
                    "store.s3.ca_file",
                    "an https endpoint needs the CA certificate (PEM) its certificate chains to",
                )),
                (Some(_), false) => {
                    return Err(invalid(
                        "store.s3.ca_file",
                        "given for a plain http endpoint: use https:// or remove ca_file",
                    ))
                }
                (None, false) => None,
            };
        Ok(S3Settings {
            client: ClientSettings {
                endpoint,
                bucket: self.bucket.clone(),
                region: self.region.clone(),
                credentials: Credentials {
                    access_key_id,
                    secret_access_key,
                },
                tls,
                connect_timeout: self.connect_timeout.0,
                io_timeout: self.io_timeout.0,
            },
            prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Settings, StoreSettings};

    fn config(s3: &str) -> String {
        format!(
            "[xmpp]\ncomponent_jid = \"upload.example.test\"\nsecret = \"s3cret\"\n\
             [http]\nlisten = \"127.0.0.1:5443\"\npublic_url = \"https://upload.example.test:5443/\"\n\
             token_key = \"0123456789abcdef0123\"\n[node]\nname = \"node_1\"\n\
             [store]\nkind = \"s3\"\n[store.s3]\n{s3}\n"
        )
    }

    fn load(s3: &str) -> Result<Settings, String> {
        Settings::from_toml(&config(s3), "test.toml").map_err(|e| e.to_string())
    }

    fn secret_file() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "the-secret\n").unwrap();
        f
    }

    #[test]
    fn a_complete_section_loads_with_the_secret_read_from_its_file() {
        let secret = secret_file();
        let s = load(&format!(
            "endpoint = \"http://127.0.0.1:3900\"\nregion = \"garage\"\nbucket = \"mft\"\n\
             prefix = \"/mftFileStore/node_1/\"\naccess_key_id = \"GK1\"\n\
             secret_access_key_file = \"{}\"",
            secret.path().display()
        ))
        .unwrap();
        let StoreSettings::S3 { s3 } = &s.store else {
            panic!("not s3")
        };
        assert_eq!(s3.prefix, "mftFileStore/node_1");
        assert_eq!(s3.client.credentials.secret_access_key, "the-secret");
        assert_eq!(s3.client.endpoint.port, 3900);
        assert_eq!(s.store.kind(), "s3");
    }

    #[test]
    fn mistakes_are_named_by_their_key() {
        let secret = secret_file();
        let with = |extra: &str, endpoint: &str, prefix: &str| {
            load(&format!(
                "endpoint = \"{endpoint}\"\nbucket = \"mft\"\nprefix = \"{prefix}\"\n\
                 access_key_id = \"GK1\"\nsecret_access_key_file = \"{}\"\n{extra}",
                secret.path().display()
            ))
            .expect_err("must fail")
        };
        let e = with("", "http://127.0.0.1:3900", "mftFileStore/node_2");
        assert!(e.contains("store.s3.prefix") && e.contains("node_1"), "{e}");
        let e = with("", "http://127.0.0.1:3900", "a/../node_1");
        assert!(e.contains("store.s3.prefix"), "{e}");
        let e = with("", "ftp://127.0.0.1", "node_1");
        assert!(e.contains("store.s3.endpoint"), "{e}");
        let e = with("", "http://127.0.0.1:3900/mft", "node_1");
        assert!(
            e.contains("store.s3.endpoint") && e.contains("bucket"),
            "{e}"
        );
        let e = with("", "https://s3.example.com", "node_1");
        assert!(e.contains("store.s3.ca_file"), "{e}");
        let e = with(
            "ca_file = \"/nonexistent.pem\"",
            "https://s3.example.com",
            "node_1",
        );
        assert!(e.contains("store.s3.ca_file"), "{e}");
        let e = with("unknown = 1", "http://127.0.0.1:3900", "node_1");
        assert!(e.contains("unknown"), "{e}");
        let e = load(
            "endpoint = \"http://127.0.0.1:3900\"\nbucket = \"mft\"\nprefix = \"node_1\"\n\
             access_key_id = \"GK1\"\nsecret_access_key_file = \"/nonexistent/secret\"",
        )
        .expect_err("must fail");
        assert!(
            e.contains("store.s3.secret_access_key_file") && e.contains("/nonexistent/secret"),
            "{e}"
        );
    }

    #[test]
    fn the_secret_is_never_printed() {
        let secret = secret_file();
        let s = load(&format!(
            "endpoint = \"http://127.0.0.1:3900\"\nbucket = \"mft\"\nprefix = \"node_1\"\n\
             access_key_id = \"GK1\"\nsecret_access_key_file = \"{}\"",
            secret.path().display()
        ))
        .unwrap();
        assert!(!format!("{:?}", s.store).contains("the-secret"));
    }
}
