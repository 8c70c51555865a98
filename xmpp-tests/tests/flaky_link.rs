//! A flaky link to the file server: the SFTP connection goes through a
//! forwarder that stalls (stops forwarding, connections kept open), resets
//! (closes every connection mid-transfer) or slows down. A transfer in
//! flight fails within the I/O timeout with nothing published and no row
//! claiming it; broken sessions leave the pool; later transfers succeed
//! without a restart.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use mft_storage::ChatType;
use xmpp_tests::delay_link::DelayLink;
use xmpp_tests::mftd::{mint_slot, published_and_temporary, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::free_port;
use xmpp_tests::sshd::Sshd;

const MIB: usize = 1 << 20;
/// `store.sftp.io_timeout` in these tests.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// PUTs `size` bytes as `name`; `on_half` runs once half is sent. Returns
/// the status code (0 when the connection closed without one) and how long
/// it took.
fn put(port: u16, name: &str, size: usize, on_half: &mut dyn FnMut()) -> (u16, Duration) {
    let started = Instant::now();
    let (path, token) = mint_slot(size as u64, name, ChatType::Im);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    let _ = s.write_all(head.as_bytes());
    let chunk = vec![3u8; 256 * 1024];
    let mut sent = 0;
    let mut halfway = false;
    while sent < size {
        let n = chunk.len().min(size - sent);
        if s.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
        if !halfway && sent >= size / 2 {
            halfway = true;
            on_half();
        }
    }
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let status = String::from_utf8_lossy(&reply)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, started.elapsed())
}

/// Retries a small upload until it is stored: the pool must recover.
fn recovers(mftd: &Mftd, name: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (status, _) = put(mftd.http_port, name, MIB, &mut || {});
        if status == 201 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "uploads did not recover (last {status}):\n{}",
            mftd.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn no_temporaries_left(node: &Path, mftd: &Mftd) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, temps) = published_and_temporary(node);
        if temps.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "temporary files left: {temps:?}\n{}",
            mftd.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn stalls_resets_and_slowness_on_the_file_server_link_lose_nothing_and_heal() {
    let sshd = Sshd::start();
    let link = DelayLink::start(sshd.port, Duration::ZERO);
    let pg = Postgres::start();
    let keys = tempfile::tempdir().unwrap();
    let key = sshd.node_key(keys.path(), "node_1");
    let store = sshd
        .store_toml("node_1", &key)
        .replace(
            &format!("port = {}", sshd.port),
            &format!("port = {}", link.port),
        )
        .replace(
            &format!("[127.0.0.1]:{}", sshd.port),
            &format!("[127.0.0.1]:{}", link.port),
        )
        .replace("io_timeout = \"10s\"", "io_timeout = \"3s\"")
        + "pool_size = 2\n";
    let mftd = Mftd::start(&MftdOptions {
        router: format!("127.0.0.1:{}", free_port()),
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: "max_file_size = \"64 MiB\"\n".into(),
        store: Some(store),
        extra: format!("[database]\nurl = \"{}\"\n", pg.url()),
        http_port: None,
    });
    let node = sshd.node_root().join("node_1");
    assert_eq!(
        put(mftd.http_port, "before.bin", MIB, &mut || {}).0,
        201,
        "{}",
        mftd.log()
    );

    // Stall: the file server stops answering mid-upload.
    let (status, took) = put(mftd.http_port, "stalled.bin", 16 * MIB, &mut || {
        link.stall()
    });
    assert_ne!(status, 201, "a stalled upload cannot be stored");
    assert!(
        took < IO_TIMEOUT * 6,
        "a stalled upload must fail within the I/O timeout, took {took:?}"
    );
    link.heal();
    let back = recovers(&mftd, "after-stall.bin");
    println!("stalled upload failed after {took:?}; stored again {back:?} after the link healed");

    // Reset: every connection to the file server closes mid-upload.
    let (status, _) = put(mftd.http_port, "reset.bin", 16 * MIB, &mut || link.reset());
    assert_ne!(status, 201, "an upload cut off by a reset cannot be stored");
    let back = recovers(&mftd, "after-reset.bin");
    println!("stored again {back:?} after the reset");

    // Slow: 512 KiB/s each way still carries a 1 MiB upload and its download.
    link.slow(512 * 1024);
    let (status, took) = put(mftd.http_port, "slow.bin", MIB, &mut || {});
    assert_eq!(status, 201, "a slow link still works\n{}", mftd.log());
    assert!(
        took > Duration::from_millis(1500),
        "the link was not slow: {took:?}"
    );
    link.heal();

    no_temporaries_left(&node, &mftd);
    let (finals, _) = published_and_temporary(&node);
    assert_eq!(
        finals.len(),
        4,
        "only the four stored uploads are published: {finals:?}"
    );
    // Rows: a 201 for each stored file and none for the failed ones.
    let stored = pg.psql_eventually(
        "SELECT string_agg(real_filename, ',' ORDER BY real_filename) FROM aft_log \
         WHERE method = 'POST' AND http_status = 201",
        "after-reset.bin,after-stall.bin,before.bin,slow.bin",
    );
    assert_eq!(
        stored,
        "after-reset.bin,after-stall.bin,before.bin,slow.bin",
        "{}",
        mftd.log()
    );
}
