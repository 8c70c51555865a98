//! Scenario: HTTPS, as real clients use it. mftd's rustls endpoint against
//! ejabberd's mod_http_upload with TLS, both on the same certificate, local
//! store, curl verifying the certificate.

use std::path::{Path, PathBuf};

use crate::report::{Series, Table};
use crate::tools::*;
use crate::Args;

use mft_storage::ChatType;
use xmpp_tests::ejabberd::Ejabberd;
use xmpp_tests::mftd::Mftd;

/// The certificate for 127.0.0.1 (cert, key), and both in one PEM file
/// for ejabberd.
fn certificate(work: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (cert, key) = xmpp_tests::certs::self_signed(work, "https");
    let both = work.join("https-both.pem");
    let pem = [std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()].concat();
    std::fs::write(&both, pem).unwrap();
    (cert, key, both)
}

pub fn run(a: &Args, work: &Path, report: &mut String) {
    report.push_str("## HTTPS (TLS 1.3, same certificate, curl verifying it)\n\n");
    let (cert, key, both) = certificate(work);
    std::env::set_var("CURL_CA_BUNDLE", &cert);
    let mftd = Mftd::start_with(
        &bench_options(None, ""),
        xmpp_tests::mftd::binary(),
        vec![
            ("MFTD_HTTP__TLS_CERT".into(), cert.display().to_string()),
            ("MFTD_HTTP__TLS_KEY".into(), key.display().to_string()),
        ],
    );
    let ej = Ejabberd::start_https(&both);
    for size in sizes(a) {
        let file = make_file(work, size);
        let (mut m_up, mut m_down, mut e_up, mut e_down) = (vec![], vec![], vec![], vec![]);
        let ours = || {
            let (url, headers) = mint_at("https", mftd.http_port, size, ChatType::Im);
            m_up.push(mb_s(size, curl_put(&url, &file, &headers)));
            m_down.push(mb_s(size, curl_get(&url)));
        };
        let theirs = || {
            let (u, d) = ejabberd_transfers(&ej, &file, size, 1);
            e_up.extend(u.0);
            e_down.extend(d.0);
        };
        interleaved(a.runs, ours, theirs);
        let mut t = Table::new(&format!("HTTPS, {} MiB (MB/s)", size / MIB), "MB/s");
        let ejabberd_up = t.add("ejabberd 23.01 upload over TLS", Series(e_up));
        let mftd_up = t.add(
            "**mftd** upload over TLS (rustls), local store, fsync before 201",
            Series(m_up),
        );
        let ejabberd_down = t.add("ejabberd 23.01 download over TLS", Series(e_down));
        let mftd_down = t.add("**mftd** download over TLS (rustls)", Series(m_down));
        t.baseline = Some(ejabberd_up);
        t.target(mftd_up, ejabberd_up, 1.2);
        t.target(mftd_down, ejabberd_down, 1.2);
        t.note = format!(
            "Ratios are to ejabberd's upload; the targets compare like with like. Cipher suite as negotiated by curl {}.",
            sh("curl --version | head -n1 | cut -d' ' -f2-5")
        );
        report.push_str(&t.render());
    }
}
