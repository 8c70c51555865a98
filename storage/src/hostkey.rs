//! The pinned host key of the file server: the line `ssh-keyscan` prints
//! (`host ssh-rsa AAAA…`, or `[host]:port ssh-ed25519 AAAA…` on another port),
//! checked to begin with the configured host, and compared byte for byte with
//! what the server presents on every connection.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

/// A host key line that cannot be used, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    /// Not `host keytype base64`.
    #[error("the host_key line is not in ssh-keyscan format (`host ssh-rsa AAAA…`); paste the line `ssh-keyscan -t rsa {0}` prints")]
    Format(String),
    /// The line names another host.
    #[error("the host_key line begins with {found:?}, not the configured host {expected:?}: paste the line `ssh-keyscan -t rsa{port_flag} {host}` prints")]
    WrongHost {
        /// What the line starts with.
        found: String,
        /// What it must start with.
        expected: String,
        /// The configured host.
        host: String,
        /// ` -p PORT` when not 22.
        port_flag: String,
    },
    /// A key type we cannot pin.
    #[error(
        "unsupported host key type {0:?}: use ssh-rsa, ssh-ed25519 or ecdsa-sha2-nistp256/384/521"
    )]
    KeyType(String),
}

/// The file server's expected host key.
#[derive(Clone, PartialEq, Eq)]
pub struct PinnedHostKey {
    /// `ssh-rsa`, `ssh-ed25519`, `ecdsa-sha2-nistp256` …
    pub key_type: String,
    /// The public key blob.
    pub blob: Vec<u8>,
}

impl std::fmt::Debug for PinnedHostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.key_type, fingerprint(&self.blob))
    }
}

/// `SHA256:…` as OpenSSH prints it.
pub fn fingerprint(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

impl PinnedHostKey {
    /// Parses an ssh-keyscan line for `host` on `port`.
    pub fn parse(line: &str, host: &str, port: u16) -> Result<PinnedHostKey, HostKeyError> {
        let target = if port == 22 {
            host.to_owned()
        } else {
            format!("{host} -p {port}")
        };
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(key_type), Some(b64)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(HostKeyError::Format(target));
        };
        let expected = if port == 22 {
            host.to_owned()
        } else {
            format!("[{host}]:{port}")
        };
        let first = hosts.split(',').next().unwrap_or("");
        if !first.eq_ignore_ascii_case(&expected) {
            return Err(HostKeyError::WrongHost {
                found: first.to_owned(),
                expected,
                host: host.to_owned(),
                port_flag: if port == 22 {
                    String::new()
                } else {
                    format!(" -p {port}")
                },
            });
        }
        let known = [
            "ssh-rsa",
            "ssh-ed25519",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
        ];
        if !known.contains(&key_type) {
            return Err(HostKeyError::KeyType(key_type.to_owned()));
        }
        let blob = STANDARD
            .decode(b64)
            .map_err(|_| HostKeyError::Format(target.clone()))?;
        // The blob starts with its own type name; a pasted line must agree with itself.
        let inner_type = blob
            .get(4..)
            .and_then(|rest| {
                let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
                rest.get(..len)
            })
            .map(|t| String::from_utf8_lossy(t).into_owned());
        if inner_type.as_deref() != Some(key_type) {
            return Err(HostKeyError::Format(target));
        }
        Ok(PinnedHostKey {
            key_type: key_type.to_owned(),
            blob,
        })
    }

    /// The host key algorithms to ask the server for, so it presents this key.
    pub fn method_pref(&self) -> &str {
        match self.key_type.as_str() {
            "ssh-rsa" => "rsa-sha2-512,rsa-sha2-256,ssh-rsa",
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real ed25519 public key blob ("ssh-ed25519" + 32 bytes).
    fn ed25519_b64() -> String {
        let mut blob = Vec::new();
        blob.extend_from_slice(&11u32.to_be_bytes());
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend_from_slice(&[7u8; 32]);
        STANDARD.encode(blob)
    }

    #[test]
    fn keyscan_lines_for_the_configured_host_parse() {
        let line = format!("files.example.test ssh-ed25519 {}", ed25519_b64());
        let key = PinnedHostKey::parse(&line, "files.example.test", 22).expect("valid");
        assert_eq!(key.key_type, "ssh-ed25519");
        assert!(fingerprint(&key.blob).starts_with("SHA256:"));
        let line = format!("[127.0.0.1]:2222 ssh-ed25519 {}", ed25519_b64());
        assert!(PinnedHostKey::parse(&line, "127.0.0.1", 2222).is_ok());
    }

    #[test]
    fn a_line_for_another_host_or_port_is_refused_in_plain_words() {
        let line = format!("other.example.test ssh-ed25519 {}", ed25519_b64());
        let err = PinnedHostKey::parse(&line, "files.example.test", 22).expect_err("wrong host");
        let text = err.to_string();
        assert!(
            text.contains("not the configured host \"files.example.test\""),
            "{text}"
        );
        let line = format!("127.0.0.1 ssh-ed25519 {}", ed25519_b64());
        let err = PinnedHostKey::parse(&line, "127.0.0.1", 2222).expect_err("port missing");
        assert!(err.to_string().contains("[127.0.0.1]:2222"), "{err}");
    }

    #[test]
    fn garbage_and_mismatched_types_are_refused() {
        assert!(PinnedHostKey::parse("files.example.test", "files.example.test", 22).is_err());
        assert!(PinnedHostKey::parse(
            "files.example.test ssh-ed25519 !!!",
            "files.example.test",
            22
        )
        .is_err());
        let lying = format!("files.example.test ssh-rsa {}", ed25519_b64());
        assert!(PinnedHostKey::parse(&lying, "files.example.test", 22).is_err());
        let dss = format!("files.example.test ssh-dss {}", ed25519_b64());
        assert!(matches!(
            PinnedHostKey::parse(&dss, "files.example.test", 22),
            Err(HostKeyError::KeyType(_))
        ));
    }
}
