//! The transfer log is append-only and tamper-evident: uploads and downloads
//! through the real path (Prosody, the slixmpp client, sshd, PostgreSQL)
//! leave hash-chained rows that `mftd verify --log` finds intact; an edit,
//! a delete and a forged insert done by hand in psql as the superuser are
//! each named by node, sequence number and row id; a restart continues the
//! chain; the daily checkpoint is signed and its signature checks with
//! OpenSSH's own `ssh-keygen -Y`; two nodes writing at once each keep a
//! valid chain.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::time::Duration;

use mft_storage::log_verify::{verify_chains, Problem};
use mft_storage::transfer_log::{TransferLog, TransferRecord};
use xmpp_tests::client;
use xmpp_tests::http::status;
use xmpp_tests::mftd::{binary, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};
use xmpp_tests::sshd::Sshd;

const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn verify_log(mftd: &Mftd) -> (i32, String) {
    let out = Command::new(binary())
        .args(["verify", "--log", "--config"])
        .arg(mftd.config_path())
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), text(&out))
}

/// Uploads `content` as `name`; returns the GET URL.
fn upload(prosody: &Prosody, dir: &std::path::Path, name: &str, content: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, content).unwrap();
    let out = client::run(
        prosody,
        ALICE.0,
        ALICE.1,
        &["upload", "--file", file.to_str().unwrap()],
    );
    assert_eq!(out["put_status"], 201, "{out}");
    assert_eq!(out["get_status"], 200, "{out}");
    out["get_url"].as_str().unwrap().to_owned()
}

#[test]
fn verify_log_finds_edits_deletes_and_forged_rows_and_a_restart_continues_the_chain() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = sshd.node_key(dir.path(), "node_1");
    let cp_key = dir.path().join("checkpoint.key");
    let out = Command::new(binary())
        .args(["keys", "generate", "--node", "node_1", "--key"])
        .arg(&cp_key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let public_line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("ssh-ed25519 "))
        .unwrap()
        .to_owned();
    let mut m = MftdOptions::for_prosody(&prosody);
    m.store = Some(sshd.store_toml("node_1", &key));
    m.extra = format!(
        "[database]\nurl = \"{}\"\n[log]\ncheckpoint_key_file = \"{}\"\n",
        pg.url(),
        cp_key.display()
    );
    let mut mftd = Mftd::start(&m);
    mftd.wait_connected(1);

    // Uploads and downloads through the real path (the client fetches
    // what it uploaded): POST rows, GET rows and the downloads' ends
    // (amendments).
    for i in 0..3 {
        upload(
            &prosody,
            dir.path(),
            &format!("f{i}.txt"),
            &"x".repeat(100 + i),
        );
    }
    assert_eq!(
        pg.psql_eventually(
            "SELECT count(*) FROM aft_log_amends WHERE what = 'end'",
            "3"
        ),
        "3",
        "{}",
        mftd.log()
    );
    assert_eq!(
        pg.psql("SELECT string_agg(method || ':' || http_status || ':' || bytes_sent, ',' ORDER BY aft_index) FROM aft_log")
            .trim(),
        "POST:201:100,GET:200:100,POST:201:101,GET:200:101,POST:201:102,GET:200:102",
        "the view shows each GET with its end"
    );
    // Today's checkpoint, signed.
    assert_eq!(
        pg.psql_eventually(
            "SELECT count(*) FROM log_checkpoints WHERE node = 'node_1' AND signature <> ''",
            "1"
        ),
        "1",
        "{}",
        mftd.log()
    );
    let (code, report) = verify_log(&mftd);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("node \"node_1\": 6 rows, 3 amendments, 1 checkpoints"),
        "{report}"
    );
    assert!(
        report.contains("1 checkpoints signed and verified"),
        "{report}"
    );
    assert!(report.ends_with("clean\n"), "{report}");

    // The SQL definition of the encoding gives the same hashes as mftd.
    assert_eq!(
        pg.psql(
            "SELECT (SELECT count(*) FROM aft_log_rows r \
                     WHERE r.chain_hash <> mftd_chain_hash(r.chain_prev, mftd_canon_row(r))) \
                  + (SELECT count(*) FROM aft_log_amends a \
                     WHERE a.chain_hash <> mftd_chain_hash(a.chain_prev, mftd_canon_amend(a))) \
                  + (SELECT count(*) FROM log_checkpoints c \
                     WHERE c.chain_hash <> mftd_chain_hash(c.chain_prev, mftd_canon_checkpoint(c)))"
        )
        .trim(),
        "0"
    );
    // The checkpoint's signature checks with OpenSSH alone.
    let msg = pg.psql(
        "SELECT encode(convert_to(mftd_canon_checkpoint(c), 'UTF8'), 'base64') FROM log_checkpoints c",
    );
    let msg = xmpp_tests::postgres::base64_bytes(&msg);
    let sig = pg.psql("SELECT signature FROM log_checkpoints");
    xmpp_tests::sshd::verify_log_signature(dir.path(), &public_line, &sig, &msg).unwrap();

    // Even the superuser cannot change a row without disabling the trigger.
    let refused = Command::new("psql")
        .args([
            pg.url().as_str(),
            "-c",
            "UPDATE aft_log_rows SET jid = 'mallory@example.test'",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("audit record"),
        "{}",
        text(&refused)
    );

    // 1. An edit, by hand, with the trigger disabled on purpose.
    let (id, seq) = row_at(&pg, 3);
    pg.psql(&format!(
        "ALTER TABLE aft_log_rows DISABLE TRIGGER aft_log_rows_append_only; \
         UPDATE aft_log_rows SET jid = 'mallory@example.test' WHERE aft_index = {id}"
    ));
    let (code, report) = verify_log(&mftd);
    assert_eq!(code, 1, "{report}");
    let first = report.lines().next().unwrap();
    assert!(
        first.contains(&format!(
            "aft_log_rows node \"node_1\" seq {seq} (aft_index {id}): EDITED"
        )),
        "{report}"
    );
    pg.psql(&format!(
        "UPDATE aft_log_rows SET jid = 'alice@example.test' WHERE aft_index = {id}"
    ));
    assert_eq!(verify_log(&mftd).0, 0, "restored, clean again");

    // 2. A delete (an upload's row, which no amendment refers to).
    let (id, seq) = row_at(&pg, 3);
    let (next_id, _) = row_at(&pg, 4);
    pg.psql(&format!(
        "CREATE TABLE saved AS SELECT * FROM aft_log_rows WHERE aft_index = {id}; \
         DELETE FROM aft_log_rows WHERE aft_index = {id}"
    ));
    let (code, report) = verify_log(&mftd);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.lines().next().unwrap().contains(&format!(
            "seq {} (aft_index {next_id}): DELETED before it — row {seq}..={seq} missing",
            seq + 1
        )),
        "{report}"
    );
    pg.psql("INSERT INTO aft_log_rows SELECT * FROM saved; DROP TABLE saved");
    assert_eq!(verify_log(&mftd).0, 0, "restored, clean again");

    // 3. A forged row, appended with a made-up hash.
    pg.psql(
        "INSERT INTO aft_log_rows (aft_index, jid, to_jid, method, filename, real_filename, file_type, \
         chat_type, file_server, file_path, file_size, date_time, node, chain_seq, chain_prev, chain_hash) \
         SELECT 999999, 'alice@example.test', '', 'POST', 'forged', 'forged.txt', 'txt', 'im', 'fs', \
         'files/im/forged', 1, now(), 'node_1', chain_seq + 1, chain_hash, repeat('a', 64) \
         FROM aft_log_rows WHERE node = 'node_1' ORDER BY chain_seq DESC LIMIT 1",
    );
    let (code, report) = verify_log(&mftd);
    assert_eq!(code, 1, "{report}");
    assert!(
        report
            .lines()
            .next()
            .unwrap()
            .contains("seq 7 (aft_index 999999): EDITED"),
        "{report}"
    );
    pg.psql(
        "DELETE FROM aft_log_rows WHERE aft_index = 999999; \
             ALTER TABLE aft_log_rows ENABLE TRIGGER aft_log_rows_append_only",
    );
    assert_eq!(verify_log(&mftd).0, 0);

    // A crash and a restart: the chain goes on from its head.
    mftd.kill9();
    mftd.restart();
    mftd.wait_connected(2);
    let url = upload(&prosody, dir.path(), "after.txt", "after the restart");
    assert_eq!(status(&url), 200, "a second download");
    assert_eq!(
        pg.psql_eventually("SELECT max(chain_seq) FROM aft_log_amends", "5"),
        "5",
        "{}",
        mftd.log()
    );
    assert_eq!(
        pg.psql("SELECT max(chain_seq) || '/' || count(*) FROM aft_log_rows WHERE node = 'node_1'")
            .trim(),
        "9/9"
    );
    let (code, report) = verify_log(&mftd);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("9 rows, 5 amendments, 1 checkpoints"),
        "{report}"
    );

    // A checkpoint changed by hand (here: the row head it recorded) no
    // longer gives its hash, its signature fails, and the row chain does
    // not have the recorded hash at the new head.
    pg.psql(
        "ALTER TABLE log_checkpoints DISABLE TRIGGER log_checkpoints_append_only; \
         UPDATE log_checkpoints SET rows_seq = 9",
    );
    let (code, report) = verify_log(&mftd);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("log_checkpoints node \"node_1\" seq 1 (checkpoint 1): EDITED"),
        "{report}"
    );
    assert!(
        report.contains("checkpoint signature does not verify"),
        "{report}"
    );
    drop(sshd);
}

/// (aft_index, chain_seq) of node_1's row number `seq`.
fn row_at(pg: &Postgres, seq: i64) -> (i64, i64) {
    let out = pg.psql(&format!(
        "SELECT aft_index, chain_seq FROM aft_log_rows WHERE node = 'node_1' AND chain_seq = {seq}"
    ));
    let (a, b) = out.trim().split_once('|').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

#[test]
fn two_nodes_writing_at_once_each_keep_a_valid_chain() {
    let pg = Postgres::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for node in ["node_a", "node_b"] {
            let log = TransferLog::start(&pg.url(), Duration::from_secs(10))
                .await
                .unwrap();
            log.set_node(node);
            // Many requests at once on each node, as the HTTP side sends them.
            for i in 0..100 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    let rec = TransferRecord {
                        jid: format!("u{i}@example.test"),
                        resource: format!("{node}-r{i}"),
                        real_filename: "a.bin".into(),
                        chat_type: "im".into(),
                        node: node.into(),
                        http_status: 200,
                        ..TransferRecord::default()
                    };
                    let id = log.record_download(rec).await.unwrap();
                    log.finish_download(id, 10, 1, 200);
                }));
            }
            assert!(log.checkpoint(node, None).await.unwrap());
            assert!(!log.checkpoint(node, None).await.unwrap(), "one a day");
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(
        pg.psql_eventually("SELECT count(*) FROM aft_log_amends", "200"),
        "200"
    );
    assert_eq!(
        pg.psql("SELECT string_agg(node || ':' || max, ',' ORDER BY node) FROM \
                 (SELECT node, max(chain_seq) || '/' || count(*) AS max FROM aft_log_rows GROUP BY node) n")
            .trim(),
        "node_a:100/100,node_b:100/100"
    );
    let report = rt.block_on(async {
        let mut client =
            mft_storage::db::connect(&pg.url().as_str().into(), Duration::from_secs(5))
                .await
                .unwrap();
        verify_chains(&mut client).await.unwrap()
    });
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.checkpoints.len(), 2);
    // And the library names a deletion, as the command does.
    pg.psql(
        "ALTER TABLE aft_log_amends DISABLE TRIGGER aft_log_amends_append_only; \
         DELETE FROM aft_log_amends WHERE node = 'node_b' AND chain_seq = 50",
    );
    let report = rt.block_on(async {
        let mut client =
            mft_storage::db::connect(&pg.url().as_str().into(), Duration::from_secs(5))
                .await
                .unwrap();
        verify_chains(&mut client).await.unwrap()
    });
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert_eq!(report.findings[0].node, "node_b");
    assert_eq!(report.findings[0].seq, 51);
    assert_eq!(
        report.findings[0].problem,
        Problem::Deleted { from: 50, to: 50 }
    );
}

#[test]
fn rows_written_before_the_chain_are_sealed_by_the_migration() {
    let pg = Postgres::start();
    // A database at schema 10, with rows of two nodes and an unnamed one.
    for (version, name, sql) in &mft_storage::db::MIGRATIONS[..10] {
        pg.psql(sql);
        pg.psql(&format!(
            "CREATE TABLE IF NOT EXISTS mftd_schema_migrations (version INTEGER PRIMARY KEY, \
             name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now()); \
             INSERT INTO mftd_schema_migrations (version, name) VALUES ({version}, '{name}')"
        ));
    }
    pg.psql(
        "INSERT INTO aft_log (jid, to_jid, method, filename, real_filename, file_type, chat_type, \
         file_server, file_path, file_size, date_time, node, http_status) \
         SELECT 'a@x', 'b@x', CASE WHEN g % 2 = 0 THEN 'GET' ELSE 'POST' END, 'r' || g, 'é ' || g, 'txt', \
         'im', 'fs', 'files/im/r' || g, g, now() - g * interval '1 hour', \
         (ARRAY['node_1', 'node_2', ''])[g % 3 + 1], 200 FROM generate_series(1, 30) g",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async {
        let log = TransferLog::start(&pg.url(), Duration::from_secs(10))
            .await
            .unwrap();
        log.set_node("node_1");
        // Chained on after the sealed rows.
        log.record_download(TransferRecord {
            jid: "c@x".into(),
            resource: "r1".into(),
            node: "node_1".into(),
            http_status: 200,
            ..TransferRecord::default()
        })
        .await
        .unwrap();
        let mut client =
            mft_storage::db::connect(&pg.url().as_str().into(), Duration::from_secs(5))
                .await
                .unwrap();
        verify_chains(&mut client).await.unwrap()
    });
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    use mft_storage::log_chain::ChainTable::Rows;
    assert_eq!(report.records[&(Rows, "node_1".to_owned())], 11);
    assert_eq!(report.records[&(Rows, "node_2".to_owned())], 10);
    assert_eq!(report.records[&(Rows, String::new())], 10);
    assert_eq!(
        pg.psql("SELECT string_agg(chain_seq::text, ',' ORDER BY aft_index) FROM aft_log_rows WHERE node = 'node_2'")
            .trim(),
        "1,2,3,4,5,6,7,8,9,10",
        "sealed oldest aft_index first"
    );
}
