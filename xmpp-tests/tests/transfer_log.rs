//! The PostgreSQL transfer log against a real PostgreSQL: migrations,
//! Cisco-column queries, POST and GET rows through Prosody, destinations and
//! chat types, quotas, the database dying during traffic, and purge.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use mft_common::utc::UtcTime;
use mft_storage::meta::DESCRIPTION_XATTR;
use mft_storage::transfer_log::TransferLog;
use mft_storage::FileMeta;
use xmpp_tests::client;
use xmpp_tests::mftd::{binary, stored_files, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");

fn mftd_with_db(prosody: &Prosody, pg: &Postgres, extra: &str) -> Mftd {
    let mut opts = MftdOptions::for_prosody(prosody);
    opts.extra = format!("[database]\nurl = \"{}\"\n{extra}", pg.url());
    let mftd = Mftd::start(&opts);
    mftd.wait_connected(1);
    mftd
}

/// Plain HTTP/1.1 request; returns (status, body).
fn http(url: &str, method: &str) -> (u16, Vec<u8>) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = TcpStream::connect(host).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: transfer-log-test\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, raw.get(split + 4..).unwrap_or_default().to_vec())
}

fn write_file(dir: &std::path::Path, name: &str, len: usize) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        (0..len).map(|i| (i % 253) as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    path.display().to_string()
}

fn upload(prosody: &Prosody, file: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["upload", "--file", file];
    args.extend_from_slice(extra);
    client::run(prosody, ALICE.0, ALICE.1, &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_from_empty_and_again_and_cisco_queries_work() {
    let pg = Postgres::start();
    let log = TransferLog::start(&pg.url(), Duration::from_secs(10))
        .await
        .unwrap();
    drop(log);
    // Every migration applied (numbers may skip one another branch holds).
    assert_eq!(
        pg.psql("SELECT max(version) || '/' || count(*) FROM mftd_schema_migrations")
            .trim(),
        format!(
            "{}/{}",
            mft_storage::db::latest_version(),
            mft_storage::db::MIGRATIONS.len()
        )
    );
    // The widths writers cut to are the widths the migrations created.
    for (table, column, width) in mft_storage::log_schema::TEXT_COLUMNS {
        let live = pg.psql(&format!(
            "SELECT character_maximum_length FROM information_schema.columns \
             WHERE table_name = '{table}' AND column_name = '{column}'"
        ));
        assert_eq!(live.trim(), width.to_string(), "{table}.{column}");
    }
    // Applying again changes nothing.
    let _again = TransferLog::start(&pg.url(), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        pg.psql("SELECT count(*) FROM mftd_schema_migrations")
            .trim(),
        mft_storage::db::MIGRATIONS.len().to_string()
    );
    // A query written for Cisco's AFT_LOG columns (upper case, unquoted) runs unchanged.
    pg.psql(
        "INSERT INTO AFT_LOG (JID, TO_JID, METHOD, FILENAME, REAL_FILENAME, FILE_TYPE, CHAT_TYPE, FILE_SERVER, FILE_PATH, FILE_SIZE, DATE_TIME) \
         VALUES ('a@x', 'b@x', 'POST', 'r1', 'a.pdf', 'pdf', 'im', 'fs', 'files/im/x/00/r1', 10, now() - interval '40 days')",
    );
    let cisco = pg.psql(
        "SELECT AFT_INDEX, JID, TO_JID, METHOD, FILENAME, REAL_FILENAME, FILE_TYPE, CHAT_TYPE, FILE_SERVER, FILE_PATH, FILE_SIZE, DATE_TIME \
         FROM AFT_LOG WHERE METHOD = 'POST' AND DATE_TIME < now() - interval '30 days' ORDER BY AFT_INDEX",
    );
    assert!(
        cisco.starts_with("1|a@x|b@x|POST|r1|a.pdf|pdf|im|fs|files/im/x/00/r1|10|"),
        "{cisco}"
    );
    // Every Cisco column is NOT NULL: in the table the `aft_log` view reads
    // (a view's columns cannot say so), and the view has every column.
    let nullable = pg.psql(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'aft_log_rows' \
         AND column_name NOT LIKE 'chain_%' AND is_nullable = 'YES'",
    );
    assert_eq!(nullable.trim(), "0");
    let columns =
        pg.psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'aft_log'");
    assert_eq!(columns.trim(), "22");
    let cfg = tempfile::tempdir().unwrap();
    let path = cfg.path().join("mftd.toml");
    std::fs::write(
        &path,
        format!(
            "[xmpp]\ncomponent_jid = \"upload.example.test\"\nsecret = \"s\"\n[http]\nlisten = \"127.0.0.1:1\"\n\
             public_url = \"http://127.0.0.1:1/\"\ntoken_key = \"0123456789abcdef0123\"\n[node]\nname = \"node_1\"\n\
             [store]\nkind = \"local\"\npath = \"{}\"\n[database]\nurl = \"{}\"\n",
            cfg.path().join("node_1").display(),
            pg.url()
        ),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["db", "migrate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "up to date (version {})",
            mft_storage::db::latest_version()
        )),
        "{out:?}"
    );
    let out = Command::new(binary())
        .args(["db", "status", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("aft_log rows: 1"),
        "{out:?}"
    );
}

#[test]
fn one_upload_and_two_downloads_give_one_post_and_two_get_rows() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let mftd = mftd_with_db(&prosody, &pg, "");
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "minutes.docx", 200_000);
    // The client uploads and downloads once; a second recipient fetches too.
    let out = upload(
        &prosody,
        &file,
        &["--content-type", "application/octet-stream"],
    );
    assert_eq!(out["put_status"], 201, "{out}\n{}", mftd.log());
    let get_url = out["get_url"].as_str().unwrap();
    assert_eq!(http(get_url, "GET").0, 200);
    let resource = get_url.rsplit('/').nth(1).unwrap();
    let sha = out["sha256_sent"].as_str().unwrap();

    let post = pg.psql(&format!(
        "SELECT jid, to_jid, filename, real_filename, file_type, chat_type, file_server, file_path, file_size, sha256, http_status, node \
         FROM aft_log WHERE method = 'POST' AND filename = '{resource}'"
    ));
    let now = UtcTime::now();
    let expected_dir = format!("files/im/{}/", now.compact_date());
    let fields: Vec<&str> = post.trim().split('|').collect();
    assert_eq!(fields.len(), 12, "{post}");
    assert_eq!(
        &fields[..7],
        [
            "alice@example.test",
            "",
            resource,
            "minutes.docx",
            "docx",
            "im",
            "localhost"
        ]
    );
    assert!(
        fields[7].starts_with(&expected_dir) && fields[7].ends_with(resource),
        "{post}"
    );
    assert_eq!(&fields[8..], ["200000", sha, "201", "node_1"]);

    // Download rows are written before the first byte; their end is recorded just after.
    let deadline = Instant::now() + Duration::from_secs(10);
    let gets = loop {
        let gets = pg.psql(&format!(
            "SELECT jid, chat_type, file_path, file_size, sha256, http_status, bytes_sent, client_address, user_agent \
             FROM aft_log WHERE method = 'GET' AND filename = '{resource}' ORDER BY aft_index"
        ));
        if gets.lines().count() == 2 && gets.lines().all(|l| l.contains("|200000|127.0.0.1|"))
            || Instant::now() > deadline
        {
            break gets;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines: Vec<&str> = gets.lines().collect();
    assert_eq!(lines.len(), 2, "{gets}");
    for line in &lines {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f[0], "", "anonymous download: empty JID");
        assert_eq!(f[1], "im");
        assert!(f[2].ends_with(resource));
        assert_eq!(&f[3..8], ["200000", sha, "200", "200000", "127.0.0.1"]);
    }
    assert_eq!(lines[1].rsplit('|').next(), Some("transfer-log-test"));
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM files WHERE resource = '{resource}' AND deleted IS NULL"
        ))
        .trim(),
        "1"
    );

    // `mftd log` shows the same rows, filtered, as JSON, CSV and a table.
    let log = |args: &[&str]| {
        let out = Command::new(binary())
            .args(["log", "--config"])
            .arg(mftd.config_path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let json = log(&[
        "--format",
        "json",
        "--since",
        "1h",
        "--jid",
        "alice@example.test",
    ]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["method"], "POST");
    assert_eq!(rows[0]["filename"], resource);
    assert_eq!(rows[0]["file_size"], 200_000);
    let gets = log(&["--format", "csv", "--method", "get"]);
    assert_eq!(gets.lines().count(), 3, "{gets}");
    assert!(gets.starts_with("aft_index,date_time,method,"), "{gets}");
    let none = log(&["--until", "2000-01-01"]);
    assert!(none.ends_with("(0 rows)\n"), "{none}");
    let bad = Command::new(binary())
        .args(["log", "--config"])
        .arg(mftd.config_path())
        .args(["--since", "last tuesday"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("neither a time"),
        "{bad:?}"
    );
}

#[test]
fn destinations_choose_the_chat_type_directory_and_log() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let mftd = mftd_with_db(
        &prosody,
        &pg,
        "[chat]\ngroupchat_services = [\"conference.example.test\"]\npersistent_services = [\"persistent.example.test\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "a.txt", 1000);
    for (destination, chat) in [
        ("bob@example.test", "im"),
        ("lunch@conference.example.test", "groupchat"),
        ("board@persistent.example.test", "persistent"),
        ("", "im"),
    ] {
        let mut extra = vec![];
        if !destination.is_empty() {
            extra = vec!["--destination", destination];
        }
        let out = upload(&prosody, &file, &extra);
        assert_eq!(out["put_status"], 201, "{out}\n{}", mftd.log());
        let resource = out["get_url"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .nth(1)
            .unwrap()
            .to_owned();
        let files = stored_files(&mftd.node_dir());
        assert!(
            files
                .iter()
                .any(|f| f.starts_with(&format!("files/{chat}/")) && f.ends_with(&resource)),
            "{destination}: {files:?}"
        );
        let row = pg.psql(&format!("SELECT chat_type, to_jid FROM aft_log WHERE method = 'POST' AND filename = '{resource}'"));
        assert_eq!(row.trim(), format!("{chat}|{destination}"));
    }
}

#[test]
fn an_exceeded_quota_says_when_to_retry() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let mftd = mftd_with_db(
        &prosody,
        &pg,
        "statement_timeout = \"2s\"\n[quotas]\nper_user_daily = \"1 MB\"\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "a.bin", 700_000);
    let before = mft_common::utc::unix_now();
    assert_eq!(upload(&prosody, &file, &[])["put_status"], 201);
    // A slot request by `who`, as the client prints its answer.
    let ask = |who: (&str, &str), req: &str| {
        client::run(
            &prosody,
            who.0,
            who.1,
            &["iq", "--to", &prosody.component_jid, req],
        )
    };
    let req = "<request xmlns='urn:xmpp:http:upload:0' filename='b.bin' size='400000'/>";
    let out = ask(ALICE, req);
    let reply = out["reply"].as_str().unwrap();
    assert!(
        reply.contains("type=\"wait\"") && reply.contains("<resource-constraint"),
        "{reply}"
    );
    // The retry stamp is when the first upload leaves the 24 h window.
    let stamp = reply
        .split("stamp=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let earliest = UtcTime::from_unix(before + 24 * 3600 - 5).xep0082();
    let latest = UtcTime::from_unix(mft_common::utc::unix_now() + 24 * 3600 + 5).xep0082();
    assert!(
        stamp >= earliest.as_str() && stamp <= latest.as_str(),
        "{stamp} not in [{earliest}, {latest}]"
    );
    // Another user still has room; a small file still fits for alice.
    let ok = ask(("bob@example.test", "bob-pw"), req);
    assert!(ok["reply"].as_str().unwrap().contains("type=\"result\""));
    let small = "<request xmlns='urn:xmpp:http:upload:0' filename='c.bin' size='1000'/>";
    let ok = ask(ALICE, small);
    assert!(ok["reply"].as_str().unwrap().contains("type=\"result\""));

    // A database that stops answering at all (every process stopped, as a
    // hung machine): the quota check gives up after statement_timeout and
    // its grace, and the slot request is answered `wait`, not left hanging.
    pg.freeze();
    let started = Instant::now();
    let out = ask(ALICE, small);
    let reply = out["reply"].as_str().unwrap_or_default();
    assert!(
        reply.contains("type=\"wait\""),
        "after {:?}: {out}\n{}",
        started.elapsed(),
        mftd.log()
    );
}

#[test]
fn a_download_is_described_by_its_row_even_when_the_description_file_is_lost() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let mftd = mftd_with_db(&prosody, &pg, "");
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "Board minutes.txt", 3000);
    let out = upload(&prosody, &file, &["--content-type", "text/plain"]);
    assert_eq!(out["put_status"], 201, "{out}\n{}", mftd.log());
    let get_url = out["get_url"].as_str().unwrap();
    let sha = out["sha256_sent"].as_str().unwrap();
    let described = |head: &str| {
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/plain"), "{head}");
        assert!(
            head.contains("filename*=utf-8''board%20minutes.txt"),
            "{head}"
        );
        assert!(head.contains(&format!("etag: \"{sha}\"")), "{head}");
        assert!(head.contains("content-length: 3000"), "{head}");
    };
    described(&xmpp_tests::http::get_head(get_url, &[]));
    // The description goes (a copy that kept no extended attributes, a
    // partial restore): the log still says what the file is. On the local
    // store it is an attribute of the file itself, with no file beside.
    let files = stored_files(&mftd.node_dir());
    assert!(!files.iter().any(|f| f.ends_with(".meta")), "{files:?}");
    let data = mftd.node_dir().join(&data_files(&mftd)[0]);
    let mut attached = vec![0u8; 64 * 1024];
    let len = rustix::fs::getxattr(&data, DESCRIPTION_XATTR, &mut attached[..]).unwrap();
    let on_file = FileMeta::from_bytes(&attached[..len]).unwrap();
    assert_eq!(on_file.sha256, sha);
    assert_eq!(on_file.real_name, "Board minutes.txt");
    rustix::fs::removexattr(&data, DESCRIPTION_XATTR).unwrap();
    described(&xmpp_tests::http::get_head(get_url, &[]));
    let etag = format!("\"{sha}\"");
    let not_modified = xmpp_tests::http::get_head(get_url, &[("If-None-Match", &etag)]);
    assert!(not_modified.starts_with("http/1.1 304"), "{not_modified}");
}

fn data_files(mftd: &Mftd) -> Vec<String> {
    stored_files(&mftd.node_dir())
        .into_iter()
        .filter(|f| !f.ends_with(".meta") && !f.rsplit('/').next().unwrap().starts_with('.'))
        .collect()
}

#[test]
fn the_database_dying_during_traffic_never_leaves_a_file_without_rows() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let mut pg = Postgres::start();
    let mftd = mftd_with_db(&prosody, &pg, "");
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "a.bin", 300_000);
    let first = upload(&prosody, &file, &[]);
    assert_eq!(first["put_status"], 201);
    let get_url = first["get_url"].as_str().unwrap().to_owned();

    pg.stop();
    // A slot can still be granted (no quota configured); the PUT is refused, nothing is kept.
    let out = upload(&prosody, &file, &[]);
    assert_eq!(out["put_status"], 503, "{out}\n{}", mftd.log());
    assert_eq!(data_files(&mftd).len(), 1, "{:?}", data_files(&mftd));
    // Downloads cannot be logged, so they are refused.
    assert_eq!(http(&get_url, "GET").0, 503);

    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ok = loop {
        let out = upload(&prosody, &file, &[]);
        if out["put_status"] == 201 || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(ok["put_status"], 201, "{ok}\n{}", mftd.log());
    assert_eq!(http(&get_url, "GET").0, 200);
    // Every stored file has its rows, every row its file.
    let rows = pg.psql("SELECT storage_path FROM files ORDER BY storage_path");
    let mut on_disk = data_files(&mftd);
    on_disk.sort();
    assert_eq!(rows.lines().map(str::to_owned).collect::<Vec<_>>(), on_disk);
    assert_eq!(
        pg.psql("SELECT count(*) FROM aft_log WHERE method = 'POST'")
            .trim(),
        on_disk.len().to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_spares_the_current_hour_and_dry_run_changes_nothing() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let mftd = mftd_with_db(&prosody, &pg, "");
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "now.bin", 1000);
    let fresh = upload(&prosody, &file, &[]);
    assert_eq!(fresh["put_status"], 201);
    let old = upload(&prosody, &file, &[]);
    let old_url = old["get_url"].as_str().unwrap().to_owned();
    let old_resource = old_url.rsplit('/').nth(1).unwrap().to_owned();
    // Age the second upload by 40 days in the database: the purge goes by the log.
    pg.psql(&format!(
        "UPDATE files SET created = now() - interval '40 days' WHERE resource = '{old_resource}'"
    ));

    let purge = |args: &[&str]| {
        let out = Command::new(binary())
            .args(["purge", "--config"])
            .arg(mftd.config_path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The aged file sits in the current hour's directory: never purged.
    let report = purge(&["--older-than", "30d"]);
    assert!(report.contains("removed 0 files"), "{report}");
    assert_eq!(http(&old_url, "GET").0, 200);

    // Move it (file and rows) to an old hour directory, as a file from 40 days ago would be.
    let old_loc = mft_storage::Location::parse(&old_resource).unwrap();
    let aged_resource = old_resource.replacen(&old_resource[..8], "20200101", 1);
    let aged = mft_storage::Location::parse(&aged_resource).unwrap();
    std::fs::create_dir_all(mftd.node_dir().join(aged.dir())).unwrap();
    std::fs::rename(
        mftd.node_dir().join(old_loc.path()),
        mftd.node_dir().join(aged.path()),
    )
    .unwrap();
    pg.psql(&format!(
        "UPDATE files SET resource = '{aged_resource}', storage_path = '{}' WHERE resource = '{old_resource}'",
        aged.path()
    ));
    let aged_url = old_url.replace(&old_resource, &aged_resource);

    let report = purge(&["--older-than", "30d", "--dry-run"]);
    assert!(
        report.contains("would remove 1 files, 1000 bytes"),
        "{report}"
    );
    assert!(mftd.node_dir().join(aged.path()).exists());
    assert_eq!(http(&aged_url, "GET").0, 200);

    let report = purge(&["--older-than", "30d"]);
    assert!(report.contains("removed 1 files, 1000 bytes"), "{report}");
    assert!(!mftd.node_dir().join(aged.path()).exists());
    assert_eq!(http(&aged_url, "GET").0, 410);
    // Even --older-than 0s keeps this hour's file; the history stays.
    let report = purge(&["--older-than", "0s"]);
    assert!(report.contains("removed 0 files"), "{report}");
    assert_eq!(http(fresh["get_url"].as_str().unwrap(), "GET").0, 200);
    assert!(
        pg.psql(&format!(
            "SELECT count(*) FROM aft_log WHERE filename = '{old_resource}'"
        ))
        .trim()
            != "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_when_the_url_asks_for_it() {
    use mft_storage::db::DbConfig;
    let pg = Postgres::start_with_tls();
    let url = format!("{}?sslmode=require", pg.url());
    let db = DbConfig {
        url: url.clone(),
        ca_file: Some(pg.ca_file()),
        ..Default::default()
    };
    let log = TransferLog::start(db, Duration::from_secs(10))
        .await
        .unwrap();
    let client = log.read_client().await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the connection must be encrypted");
    // Without the CA, or trusting another CA, mftd refuses to connect.
    let no_ca = TransferLog::start(url.as_str(), Duration::ZERO)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(no_ca.contains("ca_file"), "{no_ca}");
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _) = xmpp_tests::certs::self_signed(other.path(), "other");
    let wrong = DbConfig {
        url,
        ca_file: Some(other_ca.clone()),
        ..Default::default()
    };
    let err = TransferLog::start(wrong, Duration::ZERO)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot connect"), "{err}");

    // A host list (a replicated database) is tried host by host, over TLS
    // as well: a dead host first, then this server.
    let dead = xmpp_tests::process::free_port();
    let list = DbConfig {
        url: format!(
            "postgresql://postgres@127.0.0.1:{dead},127.0.0.1:{}/mftd?sslmode=require",
            pg.port
        ),
        ca_file: Some(pg.ca_file()),
        ..Default::default()
    };
    let client = mft_storage::db::connect(&list, Duration::from_secs(5))
        .await
        .unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        ssl,
        "the connection through the host list must be encrypted"
    );
    let wrong_list = DbConfig {
        ca_file: Some(other_ca),
        ..list
    };
    let err = mft_storage::db::connect(&wrong_list, Duration::from_secs(5))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{dead}: cannot connect"))
            && err.contains(&format!("127.0.0.1:{}: ", pg.port)),
        "each host and its reason: {err}"
    );
}

/// The bookkeeping of slot requests does not grow forever: a user's slot
/// rate idle for a day and a claim older than a week are forgotten by the
/// sweeper's housekeeping; recent ones stay, and a forgotten bucket behaves
/// as a full one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slot_rates_and_old_claims_are_forgotten_and_recent_ones_kept() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let log = TransferLog::start(&pg.url(), Duration::from_secs(10))
        .await
        .unwrap();
    for who in ["idle@example.test", "busy@example.test"] {
        assert!(log.take_slot_token(who, 10, 3).await.unwrap().is_none());
    }
    for resource in ["old-claim", "new-claim"] {
        assert!(log.claim_slot(resource, "node_1").await.unwrap());
    }
    pg.psql(
        "UPDATE slot_rates SET updated = now() - interval '25 hours' WHERE jid = 'idle@example.test'",
    );
    pg.psql(
        "UPDATE used_slots SET claimed_at = now() - interval '8 days' WHERE resource = 'old-claim'",
    );
    assert_eq!(log.prune_bookkeeping().await.unwrap(), (1, 1));
    assert_eq!(
        pg.psql("SELECT string_agg(jid, ',') FROM slot_rates")
            .trim(),
        "busy@example.test"
    );
    assert_eq!(
        pg.psql("SELECT string_agg(resource, ',') FROM used_slots")
            .trim(),
        "new-claim"
    );
    // Nothing more to forget; a forgotten bucket is a full one.
    assert_eq!(log.prune_bookkeeping().await.unwrap(), (0, 0));
    for _ in 0..3 {
        let wait = log
            .take_slot_token("idle@example.test", 10, 3)
            .await
            .unwrap();
        assert!(wait.is_none(), "{wait:?}");
    }
    assert!(log
        .take_slot_token("idle@example.test", 10, 3)
        .await
        .unwrap()
        .is_some());
}
