//! Scenario 2: the SFTP store against OpenSSH `sftp` with the same cipher.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::report::{Series, Table};
use crate::tools::*;
use crate::Args;
use std::process::Command;

use mft_storage::ChatType;
use xmpp_tests::mftd::{Mftd, MftdOptions};
use xmpp_tests::process::free_port;
use xmpp_tests::sshd::{Sshd, USER};

/// Scenario 2: the SFTP store against OpenSSH `sftp` with the same cipher.
pub fn run(a: &Args, work: &Path, report: &mut String) {
    let sizes = sizes(a);
    let _ = writeln!(
        report,
        "## Upload and download, SFTP store (sshd on 127.0.0.1)\n"
    );
    let sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let key = sshd.node_key(keys.path(), "node_1");
    for &size in &sizes {
        let file = make_file(work, size);
        for cipher in [
            "aes128-gcm@openssh.com",
            "chacha20-poly1305@openssh.com",
            "aes128-ctr",
        ] {
            let mut t = Table::new(
                &format!("{} MiB, cipher {cipher} (MB/s)", size / MIB),
                "MB/s",
            );
            let mut put = Vec::new();
            let mut get = Vec::new();
            for i in 0..a.runs {
                let remote = sshd.node_root().join(format!("sftp-{i}.bin"));
                let batch = work.join("batch");
                std::fs::write(
                    &batch,
                    format!("put -f {} {}\n", file.display(), remote.display()),
                )
                .unwrap();
                let sftp = |batch: &Path| {
                    let started = Instant::now();
                    let out = Command::new("sftp")
                        .args(["-q", "-b"])
                        .arg(batch)
                        .args(["-i"])
                        .arg(&key)
                        .args([
                            "-o",
                            "StrictHostKeyChecking=no",
                            "-o",
                            "UserKnownHostsFile=/dev/null",
                            "-o",
                        ])
                        .arg(format!("Ciphers={cipher}"))
                        .args(["-P", &sshd.port.to_string()])
                        .arg(format!("{USER}@127.0.0.1"))
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "sftp: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    started.elapsed().as_secs_f64()
                };
                put.push(mb_s(size, sftp(&batch)));
                std::fs::write(&batch, format!("get {} /dev/null\n", remote.display())).unwrap();
                get.push(mb_s(size, sftp(&batch)));
                let _ = std::fs::remove_file(&remote);
            }
            t.add(
                "OpenSSH `sftp put -f` (fsync@openssh.com, like mftd)",
                Series(put),
            );
            t.baseline = Some(0);
            let mut direct = Vec::new();
            let store = format!(
                "{}ciphers = \"{cipher}\"\n",
                sshd.store_toml("node_1", &key)
            );
            let mftd = Mftd::start(&MftdOptions {
                router: format!("127.0.0.1:{}", free_port()),
                component_jid: "upload.example.test".into(),
                secret: "unused".into(),
                limits: "max_file_size = \"0\"\n".into(),
                store: Some(store),
                extra: String::new(),
                http_port: None,
            });
            // libssh2 alone, no HTTP hop: `mftd fileserver transferspeed`.
            for _ in 0..a.runs {
                let out = Command::new(xmpp_tests::mftd::binary())
                    .args([
                        "fileserver",
                        "transferspeed",
                        "--size",
                        &format!("{}MiB", size / MIB),
                        "--config",
                    ])
                    .arg(mftd.config_path())
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                if let Some(w) = text
                    .strip_prefix("write ")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|w| w.parse::<f64>().ok())
                {
                    direct.push(w);
                }
            }
            let (url, headers) = mint(mftd.http_port, size, ChatType::Im);
            let first = std::panic::catch_unwind(|| curl_put(&url, &file, &headers));
            match first {
                Ok(secs) => {
                    let mut up = vec![mb_s(size, secs)];
                    let mut down = vec![mb_s(size, curl_get(&url))];
                    let (u, d) = mftd_upload_download(&mftd, &file, size, a.runs - 1);
                    up.extend(u.0);
                    down.extend(d.0);
                    t.add(
                        "**mftd** HTTP PUT → SFTP store (fsync, rename before 201)",
                        Series(up),
                    );
                    t.add(
                        "mftd's libssh2 writer alone (`mftd fileserver transferspeed`, no HTTP)",
                        Series(direct.clone()),
                    );
                    t.add("OpenSSH `sftp get`", Series(get));
                    t.add("**mftd** HTTP GET ← SFTP store", Series(down));
                }
                Err(_) => t.add_failed("mftd", format!("libssh2 could not negotiate {cipher}")),
            }
            report.push_str(&t.render());
        }
    }
}
