//! Self-signed certificates for tests and benchmarks, made with the
//! `openssl` CLI: ECDSA P-256 (what a Let's Encrypt ECDSA certificate costs
//! in a handshake), valid for 127.0.0.1 and `localhost`, subject `CN=<name>`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `<name>.pem` (certificate) and `<name>.key` (PKCS#8 key) in `dir`.
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={name}"), "-addext"])
        .args(["subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}
