//! Full disks: the node directory on a small tmpfs the test mounts (root
//! only). An upload that runs out of space mid-body is refused with `507`,
//! leaves no temporary file and no row claiming it; new slots wait (with a
//! retry time) while space is short; everything works again once space is
//! freed, without a restart — on the SFTP file server and on the local
//! store.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use xmpp_tests::client;
use xmpp_tests::http::get_with;
use xmpp_tests::mftd::{published_and_temporary, put_minted, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::{chown_to, free_port, is_root};
use xmpp_tests::prosody::{Prosody, ProsodyOptions};
use xmpp_tests::sshd::{Sshd, USER};
use xmpp_tests::tmpfs::Tmpfs;

const MIB: usize = 1 << 20;

fn slot_reply(prosody: &Prosody) -> String {
    let out = client::run(
        prosody,
        "alice@example.test",
        "alice-pw",
        &[
            "iq",
            "--to",
            &prosody.component_jid,
            "<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='10'/>",
        ],
    );
    out["reply"].as_str().unwrap().to_owned()
}

/// Waits until a slot request's reply satisfies `want`.
fn slots_become(prosody: &Prosody, mftd: &Mftd, what: &str, want: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = slot_reply(prosody);
        if want(&reply) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "slots never became {what}: {reply}\n{}",
            mftd.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn is_wait(reply: &str) -> bool {
    reply.contains("type=\"wait\"")
        && reply.contains("resource-constraint")
        && reply.contains("stamp=")
}

/// The whole story on one node: `node` is the node directory, `fs` the
/// tmpfs it lives on.
fn fill_refuse_recover(
    prosody: &Prosody,
    pg: &Postgres,
    mftd: &Mftd,
    fs: &Tmpfs,
    node: &Path,
    admin: &str,
) {
    let (status, body) = put_minted(mftd.http_port, "before.bin", MIB);
    assert_eq!(status, 201, "{body}\n{}", mftd.log());

    // 3 MiB left, 2 MiB the floor: slots are granted, but a 4 MiB body
    // cannot fit and runs out of space part-way.
    fs.fill_leaving(3 * MIB as u64);
    slots_become(prosody, mftd, "granted", |r| r.contains("type=\"result\""));
    let started = Instant::now();
    let (status, body) = put_minted(mftd.http_port, "too-big.bin", 4 * MIB);
    assert_eq!(status, 507, "{body}\n{}", mftd.log());
    assert!(body.contains("space"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let (finals, temps) = published_and_temporary(node);
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
    assert!(!finals.iter().any(|f| f.contains("too-big")), "{finals:?}");
    let rows = pg.psql_eventually(
        "SELECT count(*) FROM aft_log WHERE method = 'POST' AND http_status = 201",
        "1",
    );
    assert_eq!(rows.trim(), "1", "only the first upload is a 201 row");
    assert_eq!(
        pg.psql("SELECT count(*) FROM aft_log WHERE real_filename LIKE '%too-big%' AND http_status = 201")
            .trim(),
        "0"
    );

    // Below the floor: new slots wait with a retry time, and the metric says so.
    fs.fill_leaving(MIB as u64);
    slots_become(prosody, mftd, "wait", is_wait);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, metrics) = get_with(&format!("{admin}/metrics"), &[]);
        assert_eq!(status, 200);
        let free: f64 = metrics
            .lines()
            .find(|l| l.starts_with("mftd_file_server_free_bytes "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::MAX);
        if free < 2.0 * MIB as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "free bytes gauge stays {free}\n{}",
            mftd.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Space returns: slots and uploads work again, no restart.
    fs.free_filler();
    slots_become(prosody, mftd, "granted again", |r| {
        r.contains("type=\"result\"")
    });
    let (status, body) = put_minted(mftd.http_port, "after.bin", 4 * MIB);
    assert_eq!(status, 201, "{body}\n{}", mftd.log());
    let (finals, temps) = published_and_temporary(node);
    assert!(temps.is_empty(), "{temps:?}");
    assert_eq!(finals.len(), 2, "{finals:?}");
}

fn options(prosody: &Prosody, pg: &Postgres, store: String, admin_port: u16) -> MftdOptions {
    let mut opts = MftdOptions::for_prosody(prosody);
    opts.limits = "max_file_size = \"10 MiB\"\n".into();
    opts.store = Some(store);
    opts.extra = format!(
        "[database]\nurl = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ncheck_interval = \"300ms\"\n",
        pg.url()
    );
    opts
}

#[test]
fn a_full_file_server_refuses_cleanly_and_recovers_without_restart() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let sshd = Sshd::start();
    let fs = Tmpfs::mount(&sshd.node_root(), "8m");
    chown_to(&sshd.node_root(), USER);
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let keys = tempfile::tempdir().unwrap();
    let key = sshd.node_key(keys.path(), "node_1");
    let admin_port = free_port();
    let store = format!(
        "{}min_free_bytes = \"2 MiB\"\n",
        sshd.store_toml("node_1", &key)
    );
    let mftd = Mftd::start(&options(&prosody, &pg, store, admin_port));
    mftd.wait_connected(1);
    let node = sshd.node_root().join("node_1");
    fill_refuse_recover(
        &prosody,
        &pg,
        &mftd,
        &fs,
        &node,
        &format!("http://127.0.0.1:{admin_port}"),
    );
}

#[test]
fn a_full_local_store_refuses_cleanly_and_recovers_without_restart() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&dir.path().join("store"), "8m");
    let node = fs.path.join("node_1");
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let admin_port = free_port();
    let store = format!(
        "kind = \"local\"\npath = \"{}\"\nmin_free_bytes = \"2 MiB\"\n",
        node.display()
    );
    let mftd = Mftd::start(&options(&prosody, &pg, store, admin_port));
    mftd.wait_connected(1);
    fill_refuse_recover(
        &prosody,
        &pg,
        &mftd,
        &fs,
        &node,
        &format!("http://127.0.0.1:{admin_port}"),
    );
}
