//! Scenario 2: the SFTP store against OpenSSH `sftp` with the same cipher.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::report::{Series, Table};
use crate::tools::*;
use crate::Args;
use std::process::Command;

use mft_storage::ChatType;
use xmpp_tests::mftd::Mftd;
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
                let sftp = |batch: &Path| sftp_batch(sshd.port, &key, cipher, batch);
                put.push(mb_s(size, sftp(&batch)));
                std::fs::write(&batch, format!("get {} /dev/null\n", remote.display())).unwrap();
                get.push(mb_s(size, sftp(&batch)));
                let _ = std::fs::remove_file(&remote);
            }
            let sftp_put = t.add(
                "OpenSSH `sftp put -f` (fsync@openssh.com, like mftd)",
                Series(put),
            );
            t.baseline = Some(sftp_put);
            let mut direct = Vec::new();
            let store = format!(
                "{}ciphers = \"{cipher}\"\n",
                sshd.store_toml("node_1", &key)
            );
            let mftd = Mftd::start(&bench_options(Some(store), ""));
            // libssh2 alone, no HTTP hop: `mftd fileserver transferspeed`.
            for _ in 0..a.runs {
                direct.extend(writer_alone(&mftd, size));
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
                    let mftd_put = t.add(
                        "**mftd** HTTP PUT → SFTP store (fsync, rename before 201)",
                        Series(up),
                    );
                    t.add(
                        "mftd's libssh2 writer alone (`mftd fileserver transferspeed`, no HTTP)",
                        Series(direct.clone()),
                    );
                    let sftp_get = t.add("OpenSSH `sftp get`", Series(get));
                    let mftd_get = t.add("**mftd** HTTP GET ← SFTP store", Series(down));
                    t.target(mftd_put, sftp_put, 0.9);
                    t.target(mftd_get, sftp_get, 1.0);
                }
                Err(_) => {
                    t.add_failed("mftd", format!("libssh2 could not negotiate {cipher}"));
                }
            }
            report.push_str(&t.render());
            // Each cipher's uploads go once measured: three 1 GiB rounds
            // per cipher would otherwise pile up on the file server's disk.
            drop(mftd);
            clear_files(&sshd.node_root().join("node_1").join("files"));
        }
    }
    over_a_slow_link(a, work, &sshd, &key, report);
}

/// Seconds `sftp -b batch` takes with `cipher` against the sshd on `port`.
fn sftp_batch(port: u16, key: &Path, cipher: &str, batch: &Path) -> f64 {
    let started = Instant::now();
    let out = Command::new("sftp")
        .args(["-q", "-b"])
        .arg(batch)
        .args(["-i"])
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
        ])
        .arg(format!("Ciphers={cipher}"))
        .args(["-P", &port.to_string()])
        .arg(format!("{USER}@127.0.0.1"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sftp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}

/// MB/s of `mftd fileserver transferspeed` (mftd's storage writer, no HTTP).
fn writer_alone(mftd: &Mftd, size: u64) -> Option<f64> {
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
    text.strip_prefix("write ")
        .and_then(|r| r.split(' ').next())
        .and_then(|w| w.parse::<f64>().ok())
}

/// The file server across a WAN-like link: every byte delayed 10 ms each
/// way (20 ms round trip) by a forwarder, default ciphers. Here the
/// number of bytes in flight decides the speed, not the CPU.
fn over_a_slow_link(a: &Args, work: &Path, sshd: &Sshd, key: &Path, report: &mut String) {
    const CIPHER: &str = "chacha20-poly1305@openssh.com";
    let size = if a.smoke { 8 * MIB } else { 128 * MIB };
    let link =
        xmpp_tests::delay_link::DelayLink::start(sshd.port, std::time::Duration::from_millis(10));
    let file = make_file(work, size);
    let batch = work.join("batch-slow");
    let mut put = Vec::new();
    for i in 0..a.runs {
        let remote = sshd.node_root().join(format!("slow-{i}.bin"));
        std::fs::write(
            &batch,
            format!("put -f {} {}\n", file.display(), remote.display()),
        )
        .unwrap();
        put.push(mb_s(size, sftp_batch(link.port, key, CIPHER, &batch)));
        let _ = std::fs::remove_file(&remote);
    }
    let store = sshd
        .store_toml("node_1", key)
        .replace(
            &format!("port = {}", sshd.port),
            &format!("port = {}", link.port),
        )
        .replace(
            &format!("[127.0.0.1]:{}", sshd.port),
            &format!("[127.0.0.1]:{}", link.port),
        );
    let mftd = Mftd::start(&bench_options(
        Some(format!("{store}ciphers = \"{CIPHER}\"\n")),
        "",
    ));
    let direct: Vec<f64> = (0..a.runs)
        .filter_map(|_| writer_alone(&mftd, size))
        .collect();
    let (up, _) = mftd_upload_download(&mftd, &file, size, a.runs);
    let mut t = Table::new(
        &format!(
            "{} MiB upload to a file server 20 ms away, cipher {CIPHER} (MB/s)",
            size / MIB
        ),
        "MB/s",
    );
    let base = t.add("OpenSSH `sftp put -f`", Series(put));
    t.add(
        "**mftd** HTTP PUT → SFTP store (fsync, rename before 201)",
        up,
    );
    t.add("mftd's libssh2 writer alone (no HTTP)", Series(direct));
    t.baseline = Some(base);
    t.note = "The link is a forwarder on 127.0.0.1 delaying each direction by 10 ms (no bandwidth limit).".into();
    report.push_str(&t.render());
}
