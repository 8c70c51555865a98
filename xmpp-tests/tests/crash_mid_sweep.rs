//! A crash in the middle of a retention sweep: mftd is killed with SIGKILL
//! while it retires hundreds of files, started again, killed again, and
//! started once more. Afterwards every file is gone with its removal
//! recorded — never a live row without its file, never a removed file
//! without its record, never a file left on disk that the log says is gone.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mft_storage::ChatType;
use xmpp_tests::mftd::{stored_files, Mftd, MftdOptions, TOKEN_KEY};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::free_port;

const FILES: usize = 400;

/// An ephemeral slot that must be gone `expire_in` seconds from now (age
/// limits spare the current hour; an expiry is due at once).
fn ephemeral_slot(size: u64, name: &str, expire_in: u64) -> (String, String) {
    let now = mft_storage::utc::UtcTime::now();
    let loc = mft_storage::Location::new_random(
        ChatType::Im,
        &now.compact_date(),
        &format!("{:02}", now.hour),
    );
    let claims = mft_upload_http::SlotClaims {
        resource: loc.resource().to_owned(),
        filename: name.to_owned(),
        size,
        content_type: None,
        uploader: "alice@example.test".into(),
        to: String::new(),
        expires: mft_storage::utc::unix_now() + 3600,
        purpose: Some("ephemeral".into()),
        expire_before: Some(mft_storage::utc::unix_now() + expire_in),
    };
    let token = mft_upload_http::SlotSigner::new(TOKEN_KEY).sign(&claims);
    (format!("/{}/{name}", loc.resource()), token)
}

fn put_small(port: u16, i: usize) {
    let body = format!("file number {i}");
    let (path, token) = ephemeral_slot(body.len() as u64, &format!("f{i}.txt"), 5);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
}

fn retired(mftd: &Mftd) -> usize {
    mftd.log().matches("file retired").count()
}

#[test]
fn a_kill_mid_sweep_leaves_every_file_either_live_or_recorded_as_removed() {
    let pg = Postgres::start();
    let mut mftd = Mftd::start(&MftdOptions {
        router: format!("127.0.0.1:{}", free_port()),
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: String::new(),
        store: None,
        extra: format!(
            "[database]\nurl = \"{}\"\n[retention]\nsweep_interval = \"1s\"\n",
            pg.url()
        ),
        http_port: None,
    });
    for i in 0..FILES {
        put_small(mftd.http_port, i);
    }
    let node = mftd.node_dir();
    // Kill twice while files are being retired, each time later in the run.
    for kill_after in [60, 200] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while retired(&mftd) < kill_after {
            assert!(
                Instant::now() < deadline,
                "the sweep did not get going: {}",
                mftd.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        mftd.kill9();
        // Whatever the kill interrupted, the log never says a file is gone
        // that is still on disk.
        let on_disk = data_files(&node);
        let said_gone =
            pg.psql("SELECT string_agg(resource, ',') FROM files WHERE deleted IS NOT NULL");
        for resource in said_gone.trim().split(',').filter(|r| !r.is_empty()) {
            assert!(
                !on_disk.iter().any(|f| f.ends_with(resource)),
                "{resource} is marked removed but still on disk"
            );
        }
        mftd.restart();
    }
    // The run completes after the last restart: every file removed, each
    // removal recorded once, nothing left on disk.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let live = pg.psql("SELECT count(*) FROM files WHERE deleted IS NULL");
        if live.trim() == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} files still live\n{}",
            live.trim(),
            mftd.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        pg.psql("SELECT count(DISTINCT resource), count(*) FROM removals")
            .trim(),
        format!("{FILES}|{FILES}"),
        "each removal recorded exactly once"
    );
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM files f WHERE NOT EXISTS \
             (SELECT 1 FROM removals r WHERE r.resource = f.resource)"
        )
        .trim(),
        "0"
    );
    let left = data_files(&node);
    assert!(left.is_empty(), "files left on disk: {left:?}");
}

/// The data files (not descriptions) under a node directory.
fn data_files(node: &std::path::Path) -> Vec<String> {
    stored_files(node)
        .into_iter()
        .filter(|f| !f.ends_with(".meta"))
        .collect()
}
