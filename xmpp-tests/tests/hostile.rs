//! What a hostile or unlucky user can do to mftd through real parts: crafted
//! stanzas through a real Prosody, slot floods, quota races through granted
//! slots, a client that closes at the last millisecond, files without rows
//! (found by `mftd verify`), and mftd killed with SIGKILL in the middle of
//! uploads into both stores.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::Duration;

use mft_storage::ChatType;
use xmpp_tests::client;
use xmpp_tests::mftd::{binary, mint_slot, stored_files, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};
use xmpp_tests::sshd::Sshd;

const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");
const MALLORY: (&str, &str) = ("bob@example.test", "bob-pw");

fn iqs(prosody: &Prosody, who: (&str, &str), payloads: &[String]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payloads.json");
    std::fs::write(&file, serde_json::to_string(payloads).unwrap()).unwrap();
    let out = client::run(
        prosody,
        who.0,
        who.1,
        &[
            "iqs",
            "--to",
            &prosody.component_jid,
            file.to_str().unwrap(),
        ],
    );
    out["replies"]
        .as_array()
        .unwrap_or_else(|| panic!("no replies: {out}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

fn request(attrs: &str) -> String {
    format!("<request xmlns='urn:xmpp:http:upload:0' {attrs}/>")
}

#[test]
fn crafted_stanzas_never_drop_the_component_link() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let mftd = Mftd::start(&MftdOptions::for_prosody(&prosody));
    mftd.wait_connected(1);
    let deep = format!(
        "<probe xmlns='urn:deep'>{}{}</probe>",
        "<a b='1'>".repeat(200),
        "</a>".repeat(200)
    );
    let probes = vec![
        // The reported one: a prefixed attribute on an unknown payload …
        "<probe xmlns='urn:probe' xmlns:p='urn:probe:p' p:attr='1'/>".to_owned(),
        // … and on a slot request, which errors echo.
        "<request xmlns='urn:xmpp:http:upload:0' xmlns:p='urn:probe:p' p:attr='1' filename='a.txt' size='5' content-type='text/plain;,text/html'/>".to_owned(),
        "<request xmlns='urn:xmpp:http:upload:0' xmlns:p='urn:probe:p' xmlns:q='urn:probe:p' p:x='1' xml:lang='de' filename='a.txt' size='18446744073709551616'/>".to_owned(),
        format!("<request xmlns='urn:xmpp:http:upload:0' filename='a.txt' size='x' junk='{}'/>", "&lt;&amp;&quot;".repeat(5000)),
        "<request xmlns='urn:xmpp:http:upload:0' filename='a' size='5'><x xmlns=''><y xmlns='urn:o' xmlns:z='urn:z' z:a='&lt;'/></x></request>".to_owned(),
        "<request xmlns='urn:xmpp:http:upload'><filename>a&lt;b&gt;.txt</filename><size>999999999999999999999</size></request>".to_owned(),
        deep,
        "<query xmlns='http://jabber.org/protocol/disco#info' node='x' xmlns:n='urn:n' n:n='1'/>".to_owned(),
    ];
    let replies = iqs(&prosody, MALLORY, &probes);
    for (probe, reply) in probes.iter().zip(&replies) {
        assert!(
            reply.contains("type=\"error\"") || reply.contains("type=\"result\""),
            "no answer to {probe}: {reply}\n{}",
            mftd.log()
        );
    }
    assert!(replies[1].contains("bad-request"), "{}", replies[1]);
    assert!(replies[2].contains("file-too-large"), "{}", replies[2]);
    assert!(replies[5].contains("<max-file-size>"), "{}", replies[5]);
    // The link never went down: one connection, no reconnect, and slots work.
    assert_eq!(
        mftd.log()
            .matches("XMPP: connected and authenticated")
            .count(),
        1,
        "{}",
        mftd.log()
    );
    assert!(!mftd.log().contains("link down"), "{}", mftd.log());
    let ok = iqs(&prosody, ALICE, &[request("filename='ok.txt' size='5'")]);
    assert!(ok[0].contains("<slot"), "{}", ok[0]);
    assert!(
        !prosody.log().contains("not-well-formed"),
        "{}",
        prosody.log()
    );
}

#[test]
fn slot_floods_are_limited_per_user() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let mut opts = MftdOptions::for_prosody(&prosody);
    opts.limits
        .push_str("slots_per_minute = 6\nslot_burst = 3\n");
    let mftd = Mftd::start(&opts);
    mftd.wait_connected(1);
    let flood: Vec<String> = (0..6)
        .map(|i| request(&format!("filename='f{i}.bin' size='10'")))
        .collect();
    let replies = iqs(&prosody, MALLORY, &flood);
    let granted = replies.iter().filter(|r| r.contains("<slot")).count();
    assert_eq!(granted, 3, "{replies:?}");
    let refused = &replies[5];
    assert!(
        refused.contains("type=\"wait\"")
            && refused.contains("resource-constraint")
            && refused.contains("stamp="),
        "{refused}"
    );
    // Another user is not affected.
    let other = iqs(&prosody, ALICE, &[request("filename='a.bin' size='10'")]);
    assert!(other[0].contains("<slot"), "{}", other[0]);
}

#[test]
fn granted_slots_count_against_the_quota_and_the_put_rechecks() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let mut opts = MftdOptions::for_prosody(&prosody);
    opts.extra = format!(
        "[database]\nurl = \"{}\"\n[quotas]\nper_user_daily = \"300 KiB\"\n",
        pg.url()
    );
    let mftd = Mftd::start(&opts);
    mftd.wait_connected(1);
    // Five 100 KiB slots asked for before any upload: three fit in 300 KiB.
    let five: Vec<String> = (0..5)
        .map(|i| request(&format!("filename='q{i}.bin' size='102400'")))
        .collect();
    let replies = iqs(&prosody, ALICE, &five);
    let granted = replies.iter().filter(|r| r.contains("<slot")).count();
    assert_eq!(granted, 3, "{replies:?}\n{}", mftd.log());
    assert!(replies[4].contains("resource-constraint"), "{}", replies[4]);
    // A slot that bypassed the component (minted with the key) is refused at PUT.
    let (path, token) = mint_slot(102_400, "sneaky.bin", ChatType::Im);
    let status = put_raw(mftd.http_port, &path, &token, &vec![7u8; 102_400], false);
    assert_eq!(status, 403, "{}", mftd.log());
    assert_eq!(pg.psql("SELECT count(*) FROM files").trim(), "0");
}

/// PUTs `body` and returns the status (0 when no answer came). With
/// `close_early`, the client shuts its side the moment the body is out and
/// does not wait for an answer, as a vanishing client does.
fn put_raw(port: u16, path: &str, token: &str, body: &[u8], close_early: bool) -> u16 {
    // mftd may be killed (crash loop) before the head or the body is out:
    // no answer, like a body cut short.
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let head = write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    if head.is_err() || s.write_all(body).is_err() {
        return 0;
    }
    if close_early {
        std::thread::sleep(Duration::from_micros(500 + (body.len() % 3000) as u64));
        let _ = s.shutdown(Shutdown::Write);
        return 0;
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    xmpp_tests::http::status_of(&raw)
}

fn data_files(root: &std::path::Path) -> Vec<String> {
    stored_files(root)
        .into_iter()
        .filter(|f| {
            f.starts_with("files/")
                && !f.ends_with(".meta")
                && !f.rsplit('/').next().unwrap().starts_with('.')
        })
        .collect()
}

fn verify(mftd: &Mftd, extra: &[&str]) -> (i32, String) {
    let out = Command::new(binary())
        .args(["verify", "--config"])
        .arg(mftd.config_path())
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Options for an mftd that serves HTTP only (no router: the link keeps
/// retrying, which does not matter to these tests) with a database.
fn http_only(pg: &Postgres, store: Option<String>) -> MftdOptions {
    MftdOptions {
        router: "127.0.0.1:9".into(),
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: "max_file_size = \"10 MiB\"\n".into(),
        store,
        extra: format!("[database]\nurl = \"{}\"\n", pg.url()),
        http_port: None,
    }
}

#[test]
fn a_client_closing_at_the_last_moment_never_leaves_a_file_without_rows() {
    let pg = Postgres::start();
    let mftd = Mftd::start(&http_only(&pg, None));
    let body = vec![0x5au8; 4 << 20];
    for i in 0..27 {
        let (path, token) = mint_slot(body.len() as u64, &format!("race{i}.bin"), ChatType::Im);
        put_raw(mftd.http_port, &path, &token, &body, true);
    }
    // Let every publish-and-log task finish.
    std::thread::sleep(Duration::from_secs(3));
    let files = data_files(&mftd.node_dir());
    let rows: Vec<String> = pg
        .psql("SELECT storage_path FROM files ORDER BY storage_path")
        .lines()
        .map(str::to_owned)
        .collect();
    let mut files_sorted = files.clone();
    files_sorted.sort();
    assert_eq!(files_sorted, rows, "{}", mftd.log());
    let (code, report) = verify(&mftd, &[]);
    assert_eq!(code, 0, "{report}");
}

#[test]
fn verify_finds_unlogged_missing_and_altered_files() {
    let pg = Postgres::start();
    let mftd = Mftd::start(&http_only(&pg, None));
    let mut paths = Vec::new();
    for i in 0..3 {
        let (path, token) = mint_slot(1000, &format!("v{i}.bin"), ChatType::Im);
        assert_eq!(
            put_raw(mftd.http_port, &path, &token, &[i as u8; 1000], false),
            201
        );
        paths.push(path);
    }
    let (code, report) = verify(&mftd, &["--all"]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("3 rows, 3 files"), "{report}");

    let node = mftd.node_dir();
    let files = data_files(&node);
    // Altered content, a removed file, and a file that was never logged.
    std::fs::write(node.join(&files[0]), [9u8; 1000]).unwrap();
    std::fs::remove_file(node.join(&files[1])).unwrap();
    let unlogged = {
        let (p, _) = mint_slot(1, "x", ChatType::Im);
        let res = p
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let loc = mft_storage::Location::parse(&res).unwrap();
        std::fs::create_dir_all(node.join(loc.dir())).unwrap();
        std::fs::write(node.join(loc.path()), b"never logged").unwrap();
        loc
    };
    let (code, report) = verify(
        &mftd,
        &[
            "--all",
            "--textfile",
            node.join("verify.prom").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("content differs from the logged SHA-256"),
        "{report}"
    );
    assert!(report.contains("missing from the store"), "{report}");
    assert!(
        report.contains(&format!(
            "not in the transfer log (file without row): {}",
            unlogged.path()
        )),
        "{report}"
    );
    let prom = std::fs::read_to_string(node.join("verify.prom")).unwrap();
    assert!(
        prom.contains("mftd_verify_unlogged_files{node=\"node_1\"} 1"),
        "{prom}"
    );
    // The unlogged file is not served.
    let status = xmpp_tests::http::status(&format!(
        "http://127.0.0.1:{}/{}/x",
        mftd.http_port,
        unlogged.resource()
    ));
    assert_eq!(status, 404);
    // Quarantine moves it out of the served layout.
    let (_, report) = verify(&mftd, &["--quarantine"]);
    assert!(report.contains("not in the transfer log"), "{report}");
    assert!(node.join("quarantine").join(unlogged.path()).exists());
    assert!(!node.join(unlogged.path()).exists());
}

/// Kill mftd with SIGKILL at a random moment while uploads run, restart it,
/// and check: no partial file under a final name, `mftd verify` clean, every
/// `201` a client got has its file and rows.
fn crash_loop(pg: &Postgres, mut mftd: Mftd, node: std::path::PathBuf, iterations: usize) {
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..iterations {
        let port = mftd.http_port;
        let mut clients = Vec::new();
        for i in 0..4 {
            let size = [3 << 20, 700_000, 64 << 10, 5_000_000][i];
            let (path, token) = mint_slot(size as u64, &format!("c{round}-{i}.bin"), ChatType::Im);
            clients.push(std::thread::spawn(move || {
                let status = put_raw(port, &path, &token, &vec![(i as u8) ^ 0x33; size], false);
                (path, status)
            }));
        }
        let mut seed = [0u8; 2];
        getrandom::getrandom(&mut seed).unwrap();
        std::thread::sleep(Duration::from_millis(u64::from(
            u16::from_le_bytes(seed) % 400,
        )));
        mftd.kill9();
        for c in clients {
            let (path, status) = c.join().unwrap();
            if status == 201 {
                acknowledged.push(
                    path.trim_start_matches('/')
                        .split('/')
                        .next()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
        mftd.restart();
        // Recovery runs before the endpoint listens: nothing half-done remains.
        let leftovers: Vec<String> = stored_files(&node)
            .into_iter()
            .filter(|f| f.rsplit('/').next().unwrap().starts_with('.'))
            .collect();
        assert!(
            leftovers.is_empty(),
            "round {round}: {leftovers:?}\n{}",
            mftd.log()
        );
    }
    let (code, report) = verify(&mftd, &["--all"]);
    assert_eq!(code, 0, "{report}\n{}", mftd.log());
    let rows = pg.psql("SELECT resource FROM files");
    for resource in &acknowledged {
        assert!(
            rows.contains(resource.as_str()),
            "201 without a row: {resource}"
        );
        let loc = mft_storage::Location::parse(resource).unwrap();
        assert!(
            node.join(loc.path()).exists(),
            "201 without a file: {resource}"
        );
    }
    eprintln!(
        "{iterations} crashes, {} acknowledged uploads checked",
        acknowledged.len()
    );
}

fn crash_iterations() -> usize {
    std::env::var("MFTD_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

#[test]
fn killed_mid_upload_local_store_recovers_clean() {
    let pg = Postgres::start();
    let mftd = Mftd::start(&http_only(&pg, None));
    let node = mftd.node_dir();
    crash_loop(&pg, mftd, node, crash_iterations());
}

#[test]
fn killed_mid_upload_sftp_store_recovers_clean() {
    let pg = Postgres::start();
    let sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let key = sshd.node_key(keys.path(), "node_1");
    let mftd = Mftd::start(&http_only(&pg, Some(sshd.store_toml("node_1", &key))));
    crash_loop(
        &pg,
        mftd,
        sshd.node_root().join("node_1"),
        crash_iterations(),
    );
}
