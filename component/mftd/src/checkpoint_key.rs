//! The log's daily checkpoints: the task that writes one per node and UTC
//! day, and the key that signs them (`[log] checkpoint_key_file`): an unencrypted OpenSSH Ed25519 private key that
//! mftd's service user reads and the database never sees. Signatures are
//! SSH signatures (`ssh-keygen -Y sign` format) in the namespace
//! `mftd-log-checkpoint`, so an auditor can check one with OpenSSH alone
//! (docs/compliance.md, "Checking a checkpoint's signature").

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mft_common::error::Chain;
use mft_storage::log_chain::{CheckpointSigner, SIGNATURE_NAMESPACE};
use mft_storage::transfer_log::TransferLog;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// A loaded checkpoint key.
pub struct SshSigner {
    key: PrivateKey,
    public: String,
}

impl std::fmt::Debug for SshSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSigner")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SshSigner {
    /// Reads the key at `path`: Ed25519, not encrypted.
    pub fn load(path: &Path) -> anyhow::Result<SshSigner> {
        let key = PrivateKey::read_openssh_file(path).with_context(|| {
            format!(
                "while reading [log] checkpoint_key_file {} (create it with `mftd keys generate --key {} --type ed25519` as the service user)",
                path.display(),
                path.display()
            )
        })?;
        if key.algorithm() != Algorithm::Ed25519 {
            anyhow::bail!(
                "[log] checkpoint_key_file {} is a {} key; checkpoints are signed with Ed25519 keys",
                path.display(),
                key.algorithm()
            );
        }
        if key.is_encrypted() {
            anyhow::bail!(
                "[log] checkpoint_key_file {} is encrypted with a passphrase; mftd signs unattended: use a key without one, readable by the service user only",
                path.display()
            );
        }
        let public = key
            .public_key()
            .to_openssh()
            .context("while encoding the checkpoint key's public half")?;
        Ok(SshSigner { key, public })
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        self.key.public_key()
    }
}

impl CheckpointSigner for SshSigner {
    fn public_key(&self) -> String {
        self.public.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<String, String> {
        self.key
            .sign(SIGNATURE_NAMESPACE, HashAlg::Sha512, message)
            .and_then(|sig| sig.to_pem(LineEnding::LF))
            .map_err(|e| e.to_string())
    }
}

/// How often the task looks whether today's checkpoint is written.
const CHECK_EVERY: Duration = Duration::from_secs(600);

/// Writes `node`'s checkpoint at start and then once per UTC day (looking
/// every ten minutes), until `stop` turns true. A failure is logged and
/// tried again at the next look.
pub async fn daily(
    log: TransferLog,
    node: String,
    key: Option<Arc<dyn CheckpointSigner>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match log.checkpoint(&node, key.clone()).await {
            Ok(true) => tracing::info!(node, signed = key.is_some(), "log checkpoint written"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "log checkpoint not written; trying again in 10 minutes")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Whether `signature` (armored) is `key`'s signature of `message`.
pub fn verify(key: &PublicKey, message: &[u8], signature: &str) -> bool {
    SshSig::from_pem(signature)
        .and_then(|sig| key.verify(SIGNATURE_NAMESPACE, message, &sig))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.key");
        crate::keys::generate(&path, "node_1", crate::keys::KeyType::Ed25519, false).unwrap();
        let signer = SshSigner::load(&path).unwrap();
        let sig = signer.sign(b"heads").unwrap();
        assert!(sig.starts_with("-----BEGIN SSH SIGNATURE-----"), "{sig}");
        assert!(verify(signer.public(), b"heads", &sig));
        assert!(!verify(signer.public(), b"heads!", &sig));
        let other = dir.path().join("other.key");
        crate::keys::generate(&other, "node_1", crate::keys::KeyType::Ed25519, false).unwrap();
        let other = SshSigner::load(&other).unwrap();
        assert!(!verify(other.public(), b"heads", &sig));
        let rsa = dir.path().join("rsa.key");
        crate::keys::generate(&rsa, "node_1", crate::keys::KeyType::Rsa, false).unwrap();
        assert!(SshSigner::load(&rsa).is_err());
    }
}
