//! `mftd keys`: the node's SSH key pair for the file server. `generate`
//! writes the private key (mode 0600, never overwriting unless asked) and
//! prints the public line for the file server user's `authorized_keys`;
//! `show` prints that line again.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use ssh_key::rand_core::OsRng;
use ssh_key::{Algorithm, LineEnding, PrivateKey};

/// Key types an operator can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// Ed25519: small and fast; OpenSSH ≥ 6.5.
    Ed25519,
    /// RSA 3072: for old file servers.
    Rsa,
}

/// Generates a key pair at `path` with comment `mftd@<node>`; returns the public line.
pub fn generate(path: &Path, node: &str, kind: KeyType, force: bool) -> anyhow::Result<String> {
    let algorithm = match kind {
        KeyType::Ed25519 => Algorithm::Ed25519,
        KeyType::Rsa => Algorithm::Rsa { hash: None },
    };
    let mut key = PrivateKey::random(&mut OsRng, algorithm).context("while generating the key")?;
    key.set_comment(format!("mftd@{node}"));
    let pem = key
        .to_openssh(LineEnding::LF)
        .context("while encoding the key")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("while creating {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).with_context(|| {
        format!(
            "while creating {} (it exists? a new key means re-authorising the node: pass --force)",
            path.display()
        )
    })?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("while writing {}", path.display()))?;
    public_line(path)
}

/// The public line (`ssh-ed25519 AAAA… mftd@node_1`) of the key at `path`.
pub fn public_line(path: &Path) -> anyhow::Result<String> {
    let key = PrivateKey::read_openssh_file(path).with_context(|| {
        format!(
            "while reading the node key {} (create it with `mftd keys generate`)",
            path.display()
        )
    })?;
    key.public_key()
        .to_openssh()
        .context("while encoding the public key")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generate_writes_0600_refuses_to_overwrite_and_shows_the_same_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/node_key");
        let line = generate(&path, "node_1", KeyType::Ed25519, false).expect("generated");
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert!(line.ends_with(" mftd@node_1"), "{line}");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(public_line(&path).expect("show"), line);
        assert!(generate(&path, "node_1", KeyType::Ed25519, false).is_err());
        let again = generate(&path, "node_1", KeyType::Ed25519, true).expect("forced");
        assert_ne!(again, line);
    }
}
