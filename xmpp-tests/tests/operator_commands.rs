//! The operator's commands against real parts: `mftd status` asking a
//! running node's admin listener (ready, not ready, standby, not running,
//! token refused), `mftd log` on a real PostgreSQL (newest first, limits
//! that say what they left out, every filter, spreadsheet-safe CSV, an
//! auditor's read-only role with only a database URL), `mftd verify` telling
//! an upload in progress from a leftover, and the manual pages and `--help`
//! examples generated from the command-line definition.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use mft_storage::ChatType;
use xmpp_tests::mftd::{binary, mint_slot, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::free_port;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

const TOKEN: &str = "admin-token-0123456789abcdef";

/// Runs the real `mftd` with `args`, without any `MFTD_DATABASE__*` or
/// `MFTD_ADMIN__*` from the test's own environment.
fn run_mftd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("MFTD_DATABASE__") || k.starts_with("MFTD_ADMIN__") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// An mftd serving HTTP (no router unless `router` is given) with a
/// database and an admin listener.
fn node(pg: &Postgres, router: Option<&Prosody>, extra: &str) -> (Mftd, u16) {
    let admin = free_port();
    let mut opts = match router {
        Some(p) => MftdOptions::for_prosody(p),
        None => MftdOptions {
            router: "127.0.0.1:9".into(),
            component_jid: "upload.example.test".into(),
            secret: "unused".into(),
            limits: "max_file_size = \"10 MiB\"\n".into(),
            store: None,
            extra: String::new(),
            http_port: None,
        },
    };
    opts.extra = format!(
        "[database]\nurl = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ncheck_interval = \"500ms\"\n{extra}",
        pg.url()
    );
    (Mftd::start(&opts), admin)
}

/// Plain HTTP/1.1 request: (status, body).
fn http(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    (
        xmpp_tests::http::status_of(&raw),
        raw.get(split + 4..).unwrap_or_default().to_vec(),
    )
}

/// Uploads `body` as alice under `name`; returns the resource name.
fn upload(mftd: &Mftd, name: &str, body: &[u8]) -> String {
    let (path, token) = mint_slot(body.len() as u64, name, ChatType::Im);
    let (status, _) = http(
        mftd.http_port,
        "PUT",
        &path,
        &format!("Authorization: Bearer {token}\r\n"),
        body,
    );
    assert_eq!(status, 201, "{name}\n{}", mftd.log());
    path.trim_start_matches('/')
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

fn status(config: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["status", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run_mftd(&args, &[]);
    let (o, e) = text(&out);
    (code(&out), o, e)
}

/// Polls `mftd status` until its exit status is `want` (the node samples
/// its parts every `check_interval`).
fn status_becomes(config: &Path, want: i32) -> (i32, String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = status(config, &[]);
        if got.0 == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn status_says_in_plain_words_what_is_up_and_exits_by_readiness() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let mut pg = Postgres::start();
    let (mut mftd, admin) = node(&pg, Some(&prosody), &format!("token = \"{TOKEN}\"\n"));
    mftd.wait_connected(1);
    let config = mftd.config_path();

    // Ready, holding the link; the token comes from the same [admin].
    let (code, out, err) = status_becomes(&config, 0);
    assert_eq!(code, 0, "{out}{err}\n{}", mftd.log());
    assert!(out.contains("ready (serving HTTP transfers)"), "{out}");
    assert!(out.contains("XMPP link     active"), "{out}");
    assert!(out.contains("file server   up"), "{out}");
    assert!(out.contains("transfer log  up"), "{out}");
    assert!(
        out.contains("transfers     0 uploads and 0 downloads in flight"),
        "{out}"
    );
    let (code, _, _) = status(&config, &["--require-link"]);
    assert_eq!(code, 0);

    // A wrong token: the node cannot be asked (4), and it says why.
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"not-the-token-0123456789\"\n"),
    )
    .unwrap();
    let (code, _, err) = status(&wrong, &[]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("refused the token"), "{err}");
    // No admin listener configured: 4, with what to set.
    let none = dir.path().join("none.toml");
    std::fs::write(&none, "[xmpp]\n").unwrap();
    let (code, _, err) = status(&none, &[]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("has no [admin] listen"), "{err}");

    // The transfer log goes away: not ready (1), named.
    pg.stop();
    let (code, out, err) = status_becomes(&config, 1);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("NOT READY: transfer log cannot commit"),
        "{out}"
    );
    assert!(out.contains("transfer log  DOWN"), "{out}");
    pg.restart();
    let (code, out, _) = status_becomes(&config, 0);
    assert_eq!(code, 0, "{out}");

    // The node stops: not running (3).
    mftd.kill9();
    let (code, _, err) = status(&config, &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("mftd is not running"), "{err}");
}

#[test]
fn a_standby_is_ready_but_does_not_hold_the_link() {
    let pg = Postgres::start();
    let (mftd, _) = node(&pg, None, "");
    let config = mftd.config_path();
    let (code, out, err) = status_becomes(&config, 0);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("XMPP link     standby") || out.contains("XMPP link     connecting"),
        "{out}"
    );
    let (code, out, _) = status(&config, &["--require-link"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT HELD by this node"), "{out}");
}

fn log(args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let mut all = vec!["log"];
    all.extend_from_slice(args);
    let out = run_mftd(&all, env);
    let (o, e) = text(&out);
    assert!(out.status.success(), "mftd {all:?}: {o}{e}");
    (o, e)
}

fn json_rows(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn log_is_newest_first_says_what_a_limit_left_out_and_filters() {
    let pg = Postgres::start();
    let (mftd, _) = node(&pg, None, "");
    let cfg = mftd.config_path();
    let cfg = cfg.to_str().unwrap();
    let mut resources = Vec::new();
    for (i, name) in [
        "minutes.docx",
        "plan.pdf",
        "budget.pdf",
        "photo.jpg",
        "notes.txt",
    ]
    .iter()
    .enumerate()
    {
        resources.push(upload(&mftd, name, &vec![i as u8; 1000 + i]));
    }
    // Two downloads of plan.pdf (anonymous: no router module here).
    let plan = &resources[1];
    for _ in 0..2 {
        let (status, _) = http(mftd.http_port, "GET", &format!("/{plan}/plan.pdf"), "", b"");
        assert_eq!(status, 200);
    }
    pg.psql_eventually(
        "SELECT count(*) FROM aft_log WHERE method = 'GET' AND http_status = 200",
        "2",
    );
    // The router reported: budget.pdf went to bob, photo.jpg to a room.
    pg.psql(&format!(
        "INSERT INTO shares (resource, sender, recipient, chat_type, reported_by) VALUES \
         ('{}', 'alice@example.test/phone', 'bob@example.test', 'im', 'example.test'), \
         ('{}', 'alice@example.test/phone', 'board@conference.example.test', 'groupchat', 'example.test')",
        resources[2], resources[3]
    ));

    // Newest first, every row.
    let (all, _) = log(&["--config", cfg, "--format", "json"], &[]);
    let rows = json_rows(&all);
    assert_eq!(rows.len(), 7, "{all}");
    let idx: Vec<i64> = rows
        .iter()
        .map(|r| r["aft_index"].as_i64().unwrap())
        .collect();
    assert!(idx.windows(2).all(|w| w[0] > w[1]), "{idx:?}");
    assert_eq!(rows[0]["method"], "GET");
    assert_eq!(rows[6]["real_filename"], "minutes.docx");

    // A limit says how many more match: on stderr for JSON and CSV, in the
    // table's last line.
    let (two, err) = log(&["--config", cfg, "--format", "json", "--limit", "2"], &[]);
    assert_eq!(json_rows(&two).len(), 2);
    assert!(
        err.contains("2 rows shown, newest first; 5 more match"),
        "{err}"
    );
    let (csv, err) = log(&["--config", cfg, "--format", "csv", "--limit", "3"], &[]);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(err.contains("4 more match"), "{err}");
    let (table, err) = log(&["--config", cfg, "--limit", "6"], &[]);
    assert!(
        table.ends_with("(6 rows, newest first; 1 more match: raise --limit or use --all)\n"),
        "{table}"
    );
    assert!(err.is_empty(), "{err}");
    let (table, err) = log(&["--config", cfg, "--limit", "7"], &[]);
    assert!(
        table.ends_with("(7 rows)\n") && err.is_empty(),
        "{table}{err}"
    );
    let bad = run_mftd(&["log", "--config", cfg, "--limit", "5", "--all"], &[]);
    assert_eq!(code(&bad), 2, "--limit and --all conflict");

    // Filters.
    let count = |args: &[&str]| {
        let mut a = vec!["--config", cfg, "--format", "json", "--all"];
        a.extend_from_slice(args);
        json_rows(&log(&a, &[]).0)
    };
    assert_eq!(
        count(&["--file-name", "*.pdf"]).len(),
        4,
        "2 uploads, 2 downloads"
    );
    assert_eq!(
        count(&["--file-name", "*.pdf", "--method", "post"]).len(),
        2
    );
    assert_eq!(
        count(&["--file-name", "plan.pdf", "--method", "GET"]).len(),
        2
    );
    assert_eq!(count(&["--file-name", "%"]).len(), 0, "% is literal");
    let by_resource = count(&["--resource", plan]);
    assert_eq!(by_resource.len(), 3);
    let sha = by_resource[0]["sha256"].as_str().unwrap().to_uppercase();
    assert_eq!(count(&["--sha256", &sha]).len(), 3);
    assert_eq!(count(&["--sender", "alice@example.test"]).len(), 7);
    assert_eq!(count(&["--sender", "bob@example.test"]).len(), 0);
    let to_bob = count(&["--to", "bob@example.test"]);
    assert_eq!(to_bob.len(), 1, "{to_bob:?}");
    assert_eq!(to_bob[0]["real_filename"], "budget.pdf");
    let room = count(&["--room", "board@conference.example.test"]);
    assert_eq!(room.len(), 1);
    assert_eq!(room[0]["real_filename"], "photo.jpg");
    assert!(
        count(&["--room", "bob@example.test"]).is_empty(),
        "bob is no room"
    );
    assert_eq!(
        count(&["--since", "1h", "--until", "2000-01-01T00:00:00Z"]).len(),
        0
    );
    assert_eq!(count(&["--since", "1h"]).len(), 7);
    let shares = count(&["--shares", "--sender", "alice@example.test"]);
    assert_eq!(shares.len(), 2);
    assert_eq!(
        shares[0]["recipient"], "board@conference.example.test",
        "newest first"
    );
    let shares = count(&["--shares", "--room", "board@conference.example.test"]);
    assert_eq!(shares.len(), 1);
    let bad = run_mftd(&["log", "--config", cfg, "--sha256", "abc"], &[]);
    assert_eq!(code(&bad), 2);
    assert!(text(&bad).1.contains("64 hexadecimal digits"));

    // A large export streams whole, newest first, past the table's window
    // and the cursor's batches.
    pg.psql(
        "INSERT INTO aft_log (jid, to_jid, method, filename, real_filename, file_type, chat_type, \
         file_server, file_path, file_size, date_time) \
         SELECT 'carol@example.test', '', 'POST', 'r' || g, 'bulk' || g || '.bin', 'bin', 'im', 'fs', \
         'files/im/x/00/r' || g, g, now() FROM generate_series(1, 2500) g",
    );
    let (csv, err) = log(
        &[
            "--config",
            cfg,
            "--format",
            "csv",
            "--all",
            "--jid",
            "carol@example.test",
        ],
        &[],
    );
    assert!(err.is_empty(), "{err}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2501);
    assert!(lines[1].contains(",bulk2500.bin,"), "{}", lines[1]);
    assert!(lines[2500].contains(",bulk1.bin,"), "{}", lines[2500]);
    let (table, _) = log(
        &["--config", cfg, "--all", "--jid", "carol@example.test"],
        &[],
    );
    assert!(table.ends_with("(2500 rows)\n"));
    assert_eq!(table.lines().count(), 2502);
    let (table, _) = log(&["--config", cfg, "--jid", "carol@example.test"], &[]);
    assert!(
        table.ends_with("(1000 rows, newest first; 1500 more match: raise --limit or use --all)\n")
    );
}

#[test]
fn log_csv_is_safe_in_a_spreadsheet_and_an_auditor_needs_only_a_url() {
    let pg = Postgres::start();
    let (mftd, _) = node(&pg, None, "");
    let hostile = [
        "=HYPERLINK(\"https:evil.example\",\"open\").csv",
        "+cmd.txt",
        "-2+3.txt",
        "@SUM(A1).txt",
    ];
    for name in hostile {
        upload(&mftd, name, b"spreadsheet bait");
    }
    upload(&mftd, "plain, \"quoted\".txt", b"x");

    // A read-only role that may only read the log: no config, no secrets.
    pg.psql("CREATE ROLE auditor LOGIN; GRANT SELECT ON aft_log, shares, files TO auditor");
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url().replace("postgres@", "auditor@");
    let url_file = dir.path().join("auditor.url");
    std::fs::write(&url_file, format!("{url}\n")).unwrap();
    let missing_config = dir.path().join("no-such.toml");
    let (csv, _) = log(
        &[
            "--database-url-file",
            url_file.to_str().unwrap(),
            "--format",
            "csv",
        ],
        &[],
    );
    assert_eq!(csv.lines().count(), 6, "{csv}");
    assert!(
        csv.contains(",\"'=HYPERLINK(\"\"https:evil.example\"\",\"\"open\"\").csv\","),
        "{csv}"
    );
    assert!(csv.contains(",\"'+cmd.txt\","), "{csv}");
    assert!(csv.contains(",\"'-2+3.txt\","), "{csv}");
    assert!(csv.contains(",\"'@SUM(A1).txt\","), "{csv}");
    assert!(csv.contains(",\"plain, \"\"quoted\"\".txt\","), "{csv}");
    // No cell starts a formula, quoted or not.
    for line in csv.lines().skip(1) {
        for bad in [",=", ",+", ",-", ",@", ",\"=", ",\"+", ",\"-", ",\"@"] {
            assert!(!line.contains(bad), "{bad} in {line}");
        }
    }
    // The URL alone in the environment, the default config absent.
    let (json, _) = log(
        &["--format", "json", "--limit", "1"],
        &[("MFTD_DATABASE__URL", &url)],
    );
    assert_eq!(json_rows(&json).len(), 1);
    // A configuration holding only [database] works too; its other
    // sections are never read.
    let partial = dir.path().join("auditor.toml");
    std::fs::write(
        &partial,
        format!(
            "[xmpp]\nsecret_file = \"{}\"\n[database]\nurl_file = \"{}\"\n",
            missing_config.display(),
            url_file.display()
        ),
    )
    .unwrap();
    let (table, _) = log(&["--config", partial.to_str().unwrap()], &[]);
    assert!(table.ends_with("(5 rows)\n"), "{table}");
    // The role really is read-only to mftd log: writing is refused.
    let denied = Command::new("psql")
        .args([&url, "-c", "DELETE FROM aft_log"])
        .output()
        .unwrap();
    assert!(!denied.status.success());
    // Without any source, it says what to give.
    let out = run_mftd(&["log", "--config", missing_config.to_str().unwrap()], &[]);
    assert_eq!(code(&out), 1);
    assert!(text(&out).1.contains("no-such.toml"), "{:?}", text(&out));
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let out = run_mftd(&["log", "--config", empty.to_str().unwrap()], &[]);
    assert!(
        text(&out).1.contains("--database-url-file"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn verify_leaves_an_upload_in_progress_alone_and_flags_an_old_leftover() {
    let mut pg = Postgres::start();
    let (mftd, _) = node(&pg, None, "");
    let resource = upload(&mftd, "report.pdf", &[7u8; 5000]);
    let loc = mft_storage::Location::parse(&resource).unwrap();
    let cfg = mftd.config_path().to_str().unwrap().to_owned();
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--config", cfg.as_str()];
        args.extend_from_slice(extra);
        let out = run_mftd(&args, &[]);
        let (o, e) = text(&out);
        (code(&out), format!("{o}{e}"))
    };
    let (c, report) = verify(&["--all"]);
    assert_eq!(c, 0, "{report}");

    // An upload being written: its temporary file just changed.
    let dir = mftd.node_dir().join(loc.dir());
    let fresh = dir.join(".20990101-00-im-fresh.data.000000000001.part");
    std::fs::write(&fresh, b"half a body").unwrap();
    let (c, report) = verify(&[]);
    assert_eq!(c, 0, "{report}");
    assert!(
        report.contains("upload in progress (not a finding)"),
        "{report}"
    );
    assert!(report.contains("1 uploads in progress"), "{report}");

    // One untouched for two hours is a leftover: exit 1, named with its age.
    let old = dir.join(".20990101-00-im-stale.data.000000000002.part");
    std::fs::write(&old, b"abandoned").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let prom = mftd.node_dir().join("verify.prom");
    let (c, report) = verify(&["--textfile", prom.to_str().unwrap()]);
    assert_eq!(c, 1, "{report}");
    assert!(
        report.contains("leftover temporary file: ")
            && report.contains("stale.data.000000000002.part (unchanged for 72"),
        "{report}"
    );
    assert!(
        !report.contains("fresh.data.000000000001.part (unchanged"),
        "{report}"
    );
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        metrics.contains("mftd_verify_temporary_files{node=\"node_1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mftd_verify_uploads_in_progress{node=\"node_1\"} 1"),
        "{metrics}"
    );
    // A shorter upload timeout makes the fresh one a leftover too.
    std::thread::sleep(Duration::from_millis(1100));
    let (c, report) = verify(&["--upload-timeout", "1s"]);
    assert_eq!(c, 1, "{report}");
    assert!(
        report.contains("fresh.data.000000000001.part (unchanged"),
        "{report}"
    );

    // The database away: verify cannot conclude, and says so (4).
    pg.stop();
    let (c, report) = verify(&[]);
    assert_eq!(c, 4, "{report}");
    assert!(report.contains("nothing was concluded"), "{report}");
}

#[test]
fn every_help_has_an_example_and_the_man_pages_come_from_the_cli() {
    for cmd in [
        &[][..],
        &["run"],
        &["check-config"],
        &["keys"],
        &["keys", "generate"],
        &["keys", "show"],
        &["fileserver"],
        &["fileserver", "status"],
        &["fileserver", "transferspeed"],
        &["db"],
        &["db", "migrate"],
        &["db", "status"],
        &["status"],
        &["log"],
        &["verify"],
        &["purge"],
        &["hold"],
        &["hold", "add"],
        &["hold", "remove"],
        &["hold", "list"],
        &["hold", "history"],
        &["hold", "check"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = run_mftd(&args, &[]);
        let (o, _) = text(&out);
        assert!(out.status.success(), "{args:?}");
        assert!(
            o.contains("\nExample"),
            "no example in `mftd {}`:\n{o}",
            args.join(" ")
        );
        assert!(o.contains(" mftd "), "{args:?}: {o}");
    }
    // Exit statuses are documented where cron and monitoring look.
    let (o, _) = text(&run_mftd(&["verify", "--help"], &[]));
    assert!(
        o.contains("Exit status: 0") && o.contains("4 the check could not run"),
        "{o}"
    );
    let (o, _) = text(&run_mftd(&["status", "--help"], &[]));
    assert!(o.contains("3 not running"), "{o}");

    let dir = tempfile::tempdir().unwrap();
    let out = run_mftd(&["man", "--out", dir.path().to_str().unwrap()], &[]);
    assert!(out.status.success(), "{:?}", text(&out));
    for page in [
        "mftd.1",
        "mftd-log.1",
        "mftd-status.1",
        "mftd-verify.1",
        "mftd-keys-generate.1",
    ] {
        let roff = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(roff.contains(".TH "), "{page}");
        assert!(roff.contains(".SH EXAMPLES"), "{page}");
    }
    let log = std::fs::read_to_string(dir.path().join("mftd-log.1")).unwrap();
    for option in [
        "\\-\\-database\\-url\\-file",
        "\\-\\-sha256",
        "\\-\\-room",
        "\\-\\-all",
    ] {
        assert!(log.contains(option), "{option} missing from mftd-log.1");
    }
    // man(1) renders it, when installed.
    if Path::new("/usr/bin/man").exists() {
        let shown = Command::new("man")
            .arg("-l")
            .arg(dir.path().join("mftd-status.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&shown.stdout).contains("--require-link"));
    }
}
