//! TLS for the HTTP endpoint with rustls: loads a PEM certificate chain and
//! private key, offers HTTP/2 and HTTP/1.1 through ALPN, and swaps the pair
//! in place when asked (SIGHUP) without touching open connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use mft_common::error::Cause;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// A TLS setup that could not be loaded, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing or holds no certificate.
    #[error("cannot read TLS certificate {path} (check http.tls_cert)")]
    Cert {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// The key file is missing or holds no private key.
    #[error("cannot read TLS key {path} (check http.tls_key)")]
    Key {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// rustls refused the pair.
    #[error("TLS certificate and key do not fit together")]
    Config(#[source] rustls::Error),
}

/// The certificate the endpoint presents, swappable while it serves:
/// [`CertStore::reload`] reads the files again (SIGHUP) and new handshakes
/// get the new pair; connections already open keep theirs.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Reads the PEM files again; on error the old pair stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(load(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The files it reads.
    pub fn files(&self) -> (&Path, &Path) {
        (&self.cert, &self.key)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a PEM certificate chain and its private key.
fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            source: e.into(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            source: "no certificate found".into(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        source: e.into(),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(TlsError::Config)?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(TlsError::Config)?;
    Ok(certified)
}

/// An acceptor for the given PEM files, and the store to reload them into;
/// it offers HTTP/2 by ALPN only when `http2` is on.
pub fn acceptor(
    cert: &Path,
    key: &Path,
    http2: bool,
) -> Result<(TlsAcceptor, Arc<CertStore>), TlsError> {
    let store = Arc::new(CertStore {
        cert: cert.to_owned(),
        key: key.to_owned(),
        current: RwLock::new(Arc::new(load(cert, key)?)),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok((TlsAcceptor::from(Arc::new(config)), store))
}
