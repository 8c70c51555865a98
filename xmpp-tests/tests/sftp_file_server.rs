//! The SFTP file server store against a real OpenSSH sshd: host key pinning,
//! node keys, rollover, the server dying mid-upload and coming back, slots
//! and HTTP while it is down, the operator commands, and the whole path
//! through Prosody.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mft_common::utc::UtcTime;
use mft_storage::hostkey::PinnedHostKey;
use mft_storage::sftp::{SftpBackend, SftpSettings};
use mft_storage::{ChatType, FileMeta, Store};
use xmpp_tests::client;
use xmpp_tests::mftd::{binary, mint_slot, stored_files, Mftd, MftdOptions};
use xmpp_tests::process::free_port;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};
use xmpp_tests::sshd::{Sshd, USER};

fn settings(sshd: &Sshd, key: std::path::PathBuf) -> SftpSettings {
    SftpSettings {
        host: "127.0.0.1".into(),
        port: sshd.port,
        user: USER.into(),
        directory: sshd.node_root().join("node_1").display().to_string(),
        host_key: PinnedHostKey::parse(&sshd.keyscan("ed25519"), "127.0.0.1", sshd.port).unwrap(),
        private_key: key,
        pool_size: 4,
        connect_timeout: Duration::from_secs(3),
        io_timeout: Duration::from_secs(10),
        ciphers: String::new(),
    }
}

/// Sends one slot request as alice through the router; returns the reply XML.
fn slot_reply(prosody: &Prosody, request: &str) -> String {
    let out = client::run(
        prosody,
        "alice@example.test",
        "alice-pw",
        &["iq", "--to", &prosody.component_jid, request],
    );
    out["reply"].as_str().unwrap().to_owned()
}

fn meta(size: u64) -> FileMeta {
    FileMeta {
        real_name: "x".into(),
        content_type: None,
        size,
        sha256: String::new(),
        uploader: "alice@example.test".into(),
        to: String::new(),
        created: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_host_key_or_an_unknown_node_key_is_refused() {
    let sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let key = sshd.node_key(keys.path(), "node_1");

    // Another server's key pinned under this host's name.
    let other = Sshd::start();
    let stranger_line = other
        .keyscan("ed25519")
        .replace(&format!(":{}", other.port), &format!(":{}", sshd.port));
    let mut wrong = settings(&sshd, key.clone());
    wrong.host_key = PinnedHostKey::parse(&stranger_line, "127.0.0.1", sshd.port).unwrap();
    let refused = SftpBackend::new(wrong.clone()).connect_now().unwrap_err();
    assert!(
        matches!(
            refused.connect_error(),
            Some(mft_storage::ConnectError::HostKeyMismatch { .. })
        ),
        "{refused:?}"
    );
    let err = mft_storage::error::chain(&refused);
    assert!(err.contains("host key mismatch"), "{err}");
    let pinned = mft_storage::hostkey::fingerprint(&wrong.host_key.blob);
    assert!(
        err.contains(&pinned),
        "both fingerprints must be named: {err}"
    );
    assert!(
        !sshd.log().contains("Accepted publickey"),
        "no login may happen with a wrong host key"
    );

    // The right host key but a node key the server does not know.
    let unknown_key = keys.path().join("unknown.key");
    let out = Command::new(binary())
        .args(["keys", "generate", "--node", "node_2", "--out"])
        .arg(&unknown_key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let refused = SftpBackend::new(settings(&sshd, unknown_key))
        .connect_now()
        .unwrap_err();
    assert!(
        matches!(
            refused.connect_error(),
            Some(mft_storage::ConnectError::AuthRefused { .. })
        ),
        "{refused:?}"
    );
    let err = mft_storage::error::chain(&refused);
    assert!(
        err.contains("authentication") && err.contains("authorized_keys"),
        "{err}"
    );

    // And the right pair works.
    SftpBackend::new(settings(&sshd, key))
        .connect_now()
        .unwrap();
}

#[test]
fn check_config_rejects_a_host_key_line_for_another_host() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = sshd.node_key(dir.path(), "node_1");
    let store = sshd
        .store_toml("node_1", &key)
        .replace("[127.0.0.1]:", "[127.0.0.2]:");
    let config = format!(
        "[xmpp]\ncomponent_jid = \"upload.example.test\"\nsecret = \"s\"\n[http]\nlisten = \"127.0.0.1:1\"\n\
         public_url = \"http://127.0.0.1:1/\"\ntoken_key = \"0123456789abcdef0123\"\n[node]\nname = \"node_1\"\n[store]\n{store}"
    );
    let path = dir.path().join("mftd.toml");
    std::fs::write(&path, &config).unwrap();
    let out = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("store.sftp.host_key") && stderr.contains("not the configured host"),
        "{stderr}"
    );
    std::fs::write(&path, config.replace("[127.0.0.2]:", "[127.0.0.1]:")).unwrap();
    let out = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_and_one_files_in_one_hour_go_to_hh_and_hh_1() {
    let sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let key = sshd.node_key(keys.path(), "node_1");
    let store = Store::new(SftpBackend::new(settings(&sshd, key)));
    let now = UtcTime::now();
    let mut dirs = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..1001 {
        let loc = store.allocate_at(ChatType::Im, now).await.unwrap();
        let mut up = store.begin_upload(loc.clone(), meta(2)).await.unwrap();
        up.write(Bytes::from_static(b"hi")).await.unwrap();
        up.finish().await.unwrap();
        *dirs.entry(loc.dir()).or_default() += 1;
    }
    let hh = format!("files/im/{}/{:02}", now.compact_date(), now.hour);
    assert_eq!(dirs.get(&hh), Some(&1000), "{dirs:?}");
    assert_eq!(dirs.get(&format!("{hh}.1")), Some(&1), "{dirs:?}");
    let on_server = stored_files(&sshd.node_root().join("node_1"));
    assert_eq!(
        on_server.iter().filter(|f| !f.ends_with(".meta")).count(),
        1001
    );
}

fn mint(size: u64) -> (String, String) {
    mint_slot(size, "f.bin", ChatType::Im)
}

/// PUTs `size` bytes; `on_half` runs when half has been sent. Returns the status line.
fn put(port: u16, size: usize, on_half: &mut dyn FnMut()) -> String {
    let (path, token) = mint(size as u64);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(head.as_bytes());
    let chunk = vec![1u8; 1 << 20];
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        if s.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
        if sent >= size / 2 && sent - n < size / 2 {
            on_half();
        }
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
        .lines()
        .next()
        .unwrap_or("(connection closed)")
        .to_owned()
}

fn sftp_mftd(prosody_router: String, sshd: &Sshd, keys: &std::path::Path) -> Mftd {
    let key = sshd.node_key(keys, "node_1");
    Mftd::start(&MftdOptions {
        router: prosody_router,
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: "max_file_size = \"10 MiB\"\n".into(),
        store: Some(sshd.store_toml("node_1", &key)),
        extra: String::new(),
        http_port: None,
    })
}

#[test]
fn the_file_server_dying_mid_upload_loses_nothing_and_mftd_recovers() {
    let mut sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let mftd = sftp_mftd(format!("127.0.0.1:{}", free_port()), &sshd, keys.path());
    let node = sshd.node_root().join("node_1");
    assert!(
        put(mftd.http_port, 1 << 20, &mut || {}).contains("201"),
        "{}",
        mftd.log()
    );

    let status = put(mftd.http_port, 64 << 20, &mut || sshd.kill());
    assert!(
        !status.contains("201"),
        "an upload cut off by the file server must fail: {status}"
    );
    let finals: Vec<String> = stored_files(&node)
        .into_iter()
        .filter(|f| !f.contains("/."))
        .collect();
    assert_eq!(
        finals.iter().filter(|f| !f.ends_with(".meta")).count(),
        1,
        "{finals:?}"
    );

    // While it is down, HTTP answers 503 quickly.
    let started = Instant::now();
    let status = put(mftd.http_port, 1000, &mut || {});
    assert!(status.contains("503"), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    // It comes back: the next upload works without restarting mftd.
    sshd.restart();
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut last = String::new();
    while Instant::now() < deadline {
        last = put(mftd.http_port, 1 << 20, &mut || {});
        if last.contains("201") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(last.contains("201"), "{last}\n{}", mftd.log());
    let finals = stored_files(&node)
        .into_iter()
        .filter(|f| !f.ends_with(".meta") && !f.contains("/."))
        .count();
    assert_eq!(finals, 2);
}

#[test]
fn slots_wait_while_the_file_server_is_down_and_resume_after() {
    let mut sshd = Sshd::start();
    let prosody = Prosody::start(ProsodyOptions::default());
    let keys = tempfile::tempdir().unwrap();
    let key = sshd.node_key(keys.path(), "node_1");
    let mut opts = MftdOptions::for_prosody(&prosody);
    opts.store = Some(sshd.store_toml("node_1", &key));
    let mftd = Mftd::start(&opts);
    mftd.wait_connected(1);
    sshd.kill();
    // A slot for an hour directory not opened yet needs the server: use a
    // fresh chat-type-less request; the first allocation of the hour lists the server.
    let req = "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='10'/>";
    let reply = slot_reply(&prosody, req);
    assert!(
        reply.contains("type=\"wait\"") && reply.contains("resource-constraint"),
        "{reply}"
    );
    assert!(
        reply.contains("<retry xmlns=\"urn:xmpp:http:upload:0\" stamp=\""),
        "{reply}"
    );
    sshd.restart();
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        if slot_reply(&prosody, req).contains("type=\"result\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slots did not resume: {}",
            mftd.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn end_to_end_through_prosody_into_the_file_server() {
    let sshd = Sshd::start();
    let prosody = Prosody::start(ProsodyOptions::default());
    let keys = tempfile::tempdir().unwrap();
    let key = sshd.node_key(keys.path(), "node_1");
    let mut opts = MftdOptions::for_prosody(&prosody);
    opts.store = Some(sshd.store_toml("node_1", &key));
    let mftd = Mftd::start(&opts);
    mftd.wait_connected(1);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.pdf");
    let content: Vec<u8> = (0..5_000_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let before = UtcTime::now();
    let out = client::run(
        &prosody,
        "alice@example.test",
        "alice-pw",
        &[
            "upload",
            "--file",
            file.to_str().unwrap(),
            "--content-type",
            "application/pdf",
        ],
    );
    assert_eq!(out["put_status"], 201, "{out}\n{}", mftd.log());
    assert_eq!(out["sha256_sent"], out["sha256_got"]);
    let resource = out["get_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .nth(1)
        .unwrap()
        .to_owned();
    let path = sshd.node_root().join(format!(
        "node_1/files/im/{}/{:02}/{resource}",
        before.compact_date(),
        before.hour
    ));
    let after = UtcTime::now();
    let path = if path.exists() {
        path
    } else {
        sshd.node_root().join(format!(
            "node_1/files/im/{}/{:02}/{resource}",
            after.compact_date(),
            after.hour
        ))
    };
    assert_eq!(std::fs::read(&path).unwrap(), content, "{}", path.display());
}

#[test]
fn fileserver_status_and_transferspeed() {
    let mut sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = sshd.node_key(dir.path(), "node_1");
    let config = format!(
        "[xmpp]\ncomponent_jid = \"upload.example.test\"\nsecret = \"s\"\n[http]\nlisten = \"127.0.0.1:1\"\n\
         public_url = \"http://127.0.0.1:1/\"\ntoken_key = \"0123456789abcdef0123\"\n[node]\nname = \"node_1\"\n[store]\n{}alarm_free_percent = 0\n",
        sshd.store_toml("node_1", &key)
    );
    let path = dir.path().join("mftd.toml");
    std::fs::write(&path, config).unwrap();
    let status = |p: &std::path::Path| {
        Command::new(binary())
            .args(["fileserver", "status", "--config"])
            .arg(p)
            .output()
            .unwrap()
    };
    let out = status(&path);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "reachable",
        "host key matches",
        "authenticated",
        "node directory writable",
        "free space",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(check) && l.contains(" ok ")),
            "{check}: {text}"
        );
    }
    assert!(
        text.contains("GiB free of"),
        "statvfs@openssh.com must report space: {text}"
    );
    let out = Command::new(binary())
        .args(["fileserver", "transferspeed", "--size", "16MiB", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("write ") && text.contains("MB/s, read "),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    sshd.kill();
    let out = status(&path);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("reachable                FAIL"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn slots_are_refused_while_the_file_server_is_nearly_full() {
    let sshd = Sshd::start();
    let prosody = Prosody::start(ProsodyOptions::default());
    let keys = tempfile::tempdir().unwrap();
    let key = sshd.node_key(keys.path(), "node_1");
    let mut opts = MftdOptions::for_prosody(&prosody);
    // More free space than any disk has: the guard must trip.
    opts.store = Some(format!(
        "{}min_free_bytes = \"1000 TB\"\n",
        sshd.store_toml("node_1", &key)
    ));
    let mftd = Mftd::start(&opts);
    mftd.wait_connected(1);
    assert!(
        mftd.wait_for_log("file server nearly full", 1, Duration::from_secs(20)),
        "{}",
        mftd.log()
    );
    let req = "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='10'/>";
    let reply = slot_reply(&prosody, req);
    assert!(
        reply.contains("type=\"wait\"")
            && reply.contains("resource-constraint")
            && reply.contains("stamp="),
        "{reply}"
    );
}
