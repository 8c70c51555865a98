//! A crash in the middle of a retention sweep: mftd is killed with SIGKILL
//! while it retires hundreds of files, started again, killed again, and
//! started once more. Afterwards every file is gone with its removal
//! recorded — never a live row without its file, never a removed file
//! without its record, never a file left on disk that the log says is gone.
//! The same for `mftd erase`, killed eight times while it erases a person's
//! files, the node restarted after each kill.

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
/// limits spare the current hour; an expiry is due at once); with
/// `expire_in` `None`, an ordinary upload that no sweep removes.
fn ephemeral_slot(size: u64, name: &str, expire_in: Option<u64>) -> (String, String) {
    let now = mft_common::utc::UtcTime::now();
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
        expires: mft_common::utc::unix_now() + 3600,
        purpose: expire_in.map(|_| "ephemeral".into()),
        expire_before: expire_in.map(|s| mft_common::utc::unix_now() + s),
    };
    let token = mft_upload_http::SlotSigner::new(TOKEN_KEY).sign(&claims);
    (format!("/{}/{name}", loc.resource()), token)
}

fn put_small(port: u16, i: usize) {
    put_file(port, i, Some(5));
}

fn put_file(port: u16, i: usize, expire_in: Option<u64>) {
    let body = format!("file number {i}");
    let (path, token) = ephemeral_slot(body.len() as u64, &format!("f{i}.txt"), expire_in);
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

/// Every `files` row is either live with its file on disk, or removed —
/// file gone, removal recorded once. `pending` intents (an erasure killed
/// between deleting a file and recording it) are allowed only where noted.
fn assert_live_or_recorded(pg: &Postgres, node: &std::path::Path, pending_allowed: bool) {
    let on_disk = data_files(node);
    let rows = pg.psql(
        "SELECT f.resource || ':' || (f.deleted IS NOT NULL) || ':' || \
         (SELECT count(*) FROM removals r WHERE r.resource = f.resource) FROM files f",
    );
    let pending = pending_intents(pg);
    for line in rows.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.split(':');
        let (resource, deleted, removals) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let present = on_disk.iter().any(|f| f.ends_with(resource));
        match (deleted, present) {
            ("false", true) => assert_eq!(removals, "0", "{resource} is live but has a removal"),
            ("true", false) => assert_eq!(
                removals, "1",
                "{resource}: removal recorded {removals} times"
            ),
            ("true", true) => panic!("{resource} is marked removed but still on disk"),
            _ => assert!(
                pending_allowed && pending.iter().any(|p| p == resource),
                "{resource} is live but its file is gone, with no erasure pending"
            ),
        }
    }
}

/// Resources whose erasure intent has no later step.
fn pending_intents(pg: &Postgres) -> Vec<String> {
    pg.psql(
        "SELECT s.resource FROM erasure_steps s WHERE s.step = 'intent' AND NOT EXISTS \
         (SELECT 1 FROM erasure_steps t WHERE t.erasure_id = s.erasure_id \
          AND t.resource = s.resource AND t.step <> 'intent')",
    )
    .lines()
    .filter(|l| !l.is_empty())
    .map(str::to_owned)
    .collect()
}

#[test]
fn a_kill_mid_erase_leaves_every_file_either_live_or_recorded_as_erased() {
    let pg = Postgres::start();
    let mut mftd = Mftd::start(&MftdOptions {
        router: format!("127.0.0.1:{}", free_port()),
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: String::new(),
        store: None,
        extra: format!("[database]\nurl = \"{}\"\n", pg.url()),
        http_port: None,
    });
    for i in 0..FILES {
        put_file(mftd.http_port, i, None);
    }
    let node = mftd.node_dir();
    let config = mftd.config_path();
    let erase = || {
        std::process::Command::new(xmpp_tests::mftd::binary())
            .args([
                "erase",
                "--user",
                "alice@example.test",
                "--reason",
                "DSAR 1",
                "--by",
                "dpo",
            ])
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let done = || -> usize {
        pg.psql("SELECT count(*) FROM erasure_steps WHERE step = 'done'")
            .trim()
            .parse()
            .unwrap()
    };
    // Kill the erasure eight times, each time later in the run.
    let mut interrupted = 0;
    for kill_after in (1..=8).map(|k| k * 40) {
        let mut child = erase();
        let deadline = Instant::now() + Duration::from_secs(60);
        while done() < kill_after {
            assert!(Instant::now() < deadline, "the erasure did not get going");
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // At most the one file the kill interrupted is between its intent
        // and its record; nothing is marked erased that is still on disk.
        let pending = pending_intents(&pg);
        assert!(pending.len() <= 1, "{pending:?}");
        interrupted += pending.len();
        assert_live_or_recorded(&pg, &node, true);
        // A restarted node finishes the interrupted erasure before serving.
        mftd.kill9();
        mftd.restart();
        assert!(pending_intents(&pg).is_empty(), "{}", mftd.log());
        assert_live_or_recorded(&pg, &node, false);
    }
    // How many kills fell between a file's intent and its record (the
    // case the restart must finish); the invariant held either way.
    eprintln!("kills that interrupted a file's erasure: {interrupted} of 8");
    // The erasure run again completes: every file erased, each recorded once.
    let status = erase().wait().unwrap();
    assert!(status.success());
    assert_eq!(
        pg.psql("SELECT count(*) FROM files WHERE deleted IS NULL")
            .trim(),
        "0"
    );
    assert_eq!(
        pg.psql("SELECT count(DISTINCT resource), count(*) FROM removals WHERE reason = 'erasure'")
            .trim(),
        format!("{FILES}|{FILES}"),
        "each erasure recorded exactly once"
    );
    assert_live_or_recorded(&pg, &node, false);
    assert!(data_files(&node).is_empty());
    // The log rows stay: one POST row per file, each shown as erased.
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM aft_log_erasures WHERE method = 'POST' AND erased_by = 'dpo'"
        )
        .trim(),
        FILES.to_string()
    );
}
