//! The log's lifecycle against a real PostgreSQL, Prosody and client: the
//! record tables are partitioned by month, rows of several years (inserted
//! by the owner through the `aft_log` view and the tables, old times and
//! all) land in their months, mftd itself keeps this month's and the next
//! three months' partitions, inserts at a month boundary and a late share
//! with an old time work; `mftd db prune-log` drops the months older than
//! the limit and records each drop, keeps a month holding a held file's
//! rows; `mftd log` and the compliance queries still answer; `mftd verify
//! --log` is clean after the drop and still names a deletion at the new
//! start of the chain.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

use xmpp_tests::client;
use xmpp_tests::mftd::{binary, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");
/// The held file's resource name (in the form mftd generates).
const HELD: &str = "20200101-00-im-aGVsZGZpbGVfZm9yX21hdH";

fn mftd_cmd(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
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

/// A time in the month `n` months before this one (UTC), as SQL.
fn months_ago(n: u32) -> String {
    format!(
        "((date_trunc('month', now() AT TIME ZONE 'UTC') - interval '{n} months' \
           + interval '9 days 7 hours') AT TIME ZONE 'UTC')"
    )
}

/// `YYYY-MM` of the month `n` months before this one.
fn month_label(pg: &Postgres, n: i32) -> String {
    pg.psql(&format!(
        "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') - interval '{n} months', 'YYYY-MM')"
    ))
    .trim()
    .to_owned()
}

/// One upload (POST by `who`) and one download (GET by bob) of `res` in
/// the month `n` months ago, written the way an owner's import does:
/// through the `aft_log` view, which chains them into node_1's chain.
fn old_transfer(pg: &Postgres, n: u32, who: &str, res: &str) {
    let at = months_ago(n);
    pg.psql(&format!(
        "INSERT INTO aft_log (jid, to_jid, method, filename, real_filename, file_type, chat_type, \
                              file_server, file_path, file_size, date_time, node) VALUES \
         ('{who}', 'bob@example.test', 'POST', '{res}', 'r.txt', 'txt', 'im', 'fs', 'files/im/x', 5, {at}, 'node_1'), \
         ('bob@example.test', '{who}', 'GET', '{res}', 'r.txt', 'txt', 'im', 'fs', 'files/im/x', 5, {at} + interval '1 hour', 'node_1')"
    ));
    // The download's end, an amendment chained like mftd's own.
    pg.psql(&format!(
        "DO $$ DECLARE a aft_log_amends; BEGIN \
           a.amend_id := nextval('aft_log_amends_amend_id_seq'); \
           a.aft_index := (SELECT aft_index FROM aft_log_rows WHERE filename = '{res}' AND method = 'GET'); \
           a.node := 'node_1'; a.what := 'end'; a.http_status := 200; a.bytes_sent := 5; \
           a.duration_ms := 3; a.date_time := {at} + interval '2 hours'; \
           a.chain_seq := COALESCE((SELECT max(chain_seq) FROM aft_log_amends WHERE node = 'node_1'), 0) + 1; \
           a.chain_prev := COALESCE((SELECT chain_hash FROM aft_log_amends \
                                     WHERE node = 'node_1' AND chain_seq = a.chain_seq - 1), repeat('0', 64)); \
           a.chain_hash := mftd_chain_hash(a.chain_prev, mftd_canon_amend(a)); \
           PERFORM mftd_log_partition_for('aft_log_amends', a.date_time); \
           INSERT INTO aft_log_amends SELECT a.*; END $$"
    ));
    // The share that carried it and, for the oldest, its removal: straight
    // into the tables, where no month partition exists yet (the DEFAULT
    // partition takes them).
    pg.psql(&format!(
        "INSERT INTO shares (resource, sender, recipient, chat_type, reported_by, date_time, reported_at) \
         VALUES ('{res}', '{who}', 'bob@example.test', 'im', 'example.test', {at}, {at})"
    ));
}

fn partition_of(pg: &Postgres, table: &str, filter: &str) -> String {
    pg.psql(&format!(
        "SELECT string_agg(DISTINCT tableoid::regclass::text, ',') FROM {table} WHERE {filter}"
    ))
    .trim()
    .to_owned()
}

#[test]
fn old_months_are_dropped_and_recorded_held_months_kept_and_the_chain_stays_anchored() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let owner_url = dir.path().join("owner.url");
    std::fs::write(&owner_url, pg.url()).unwrap();
    let owner_url = owner_url.display().to_string();
    let (code, out) = mftd_cmd(&["db", "migrate", "--database-url-file", &owner_url]);
    assert_eq!(code, 0, "{out}");

    // Years of records, oldest first (so node_1's chain runs in time
    // order): months 40, 39 (a held file), 38, 26 and 2 ago.
    old_transfer(&pg, 40, "alice@example.test", "res-40");
    old_transfer(&pg, 39, "carol@example.test", HELD);
    old_transfer(&pg, 38, "alice@example.test", "res-38");
    old_transfer(&pg, 26, "alice@example.test", "res-26");
    old_transfer(&pg, 2, "alice@example.test", "res-2");
    pg.psql(&format!(
        "INSERT INTO removals (resource, storage_path, file_server, node, chat_type, purpose, size, \
                               sha256, created, reason, removed_by, removed_at) \
         VALUES ('res-40', 'files/im/x', 'fs', 'node_1', 'im', 'message', 5, '', {}, 'retention', \
                 'sweeper', {} + interval '3 days')",
        months_ago(40),
        months_ago(40)
    ));
    pg.psql(&format!(
        "INSERT INTO files (resource, storage_path, file_server, node, size, content_type, sha256, \
                            uploader, to_jid, chat_type, real_filename, created) \
         VALUES ('{HELD}', 'files/im/held', 'fs', 'node_1', 5, 'text/plain', '', \
                 'carol@example.test', 'bob@example.test', 'im', 'r.txt', {})",
        months_ago(39)
    ));
    let m40 = month_label(&pg, 40);
    let m39 = month_label(&pg, 39);
    let m38 = month_label(&pg, 38);
    let m26 = month_label(&pg, 26);
    let p = |m: &str| m.replace('-', "");
    assert_eq!(
        partition_of(&pg, "aft_log_rows", "filename = 'res-40'"),
        format!("aft_log_rows_p{}", p(&m40)),
        "an import through the view lands in its month"
    );
    assert_eq!(
        partition_of(&pg, "shares", "resource = 'res-40'"),
        "shares_pdefault",
        "a row no month partition takes goes to the DEFAULT partition, not an error"
    );

    // mftd (its role makes partitions ahead), a real upload and download;
    // its checkpoint key also signs the drops.
    let cp_key = dir.path().join("checkpoint.key");
    let cp_key_arg = cp_key.display().to_string();
    let (code, out) = mftd_cmd(&["keys", "generate", "--node", "node_1", "--key", &cp_key_arg]);
    assert_eq!(code, 0, "{out}");
    let public_line = out
        .lines()
        .find(|l| l.starts_with("ssh-ed25519 "))
        .unwrap()
        .to_owned();
    let mut m = MftdOptions::for_prosody(&prosody);
    m.extra = format!(
        "[database]\nurl = \"{}\"\n[log]\ncheckpoint_key_file = \"{cp_key_arg}\"\n",
        pg.url()
    );
    let mftd = Mftd::start(&m);
    mftd.wait_connected(1);
    let file = dir.path().join("now.txt");
    std::fs::write(&file, "this month").unwrap();
    let out = client::run(
        &prosody,
        ALICE.0,
        ALICE.1,
        &["upload", "--file", file.to_str().unwrap()],
    );
    assert_eq!(out["put_status"], 201, "{out}");
    assert_eq!(out["get_status"], 200, "{out}");
    assert_eq!(
        pg.psql_eventually(
            "SELECT count(*) FROM aft_log_amends WHERE date_time > now() - interval '1 hour'",
            "1"
        ),
        "1",
        "{}",
        mftd.log()
    );
    for table in ["aft_log_rows", "aft_log_amends", "shares", "removals"] {
        for ahead in 0..=3 {
            let exists = pg.psql(&format!(
                "SELECT to_regclass('{table}_p' || to_char(date_trunc('month', now() AT TIME ZONE 'UTC') \
                 + interval '{ahead} months', 'YYYYMM')) IS NOT NULL"
            ));
            assert_eq!(exists.trim(), "t", "{table}, {ahead} months ahead");
        }
    }
    assert_eq!(
        partition_of(&pg, "shares", "resource = 'res-40'"),
        format!("shares_p{}", p(&m40)),
        "mftd's run moved the DEFAULT partition's rows into their months"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM shares_pdefault").trim(), "0");

    // Month boundaries: the last microsecond of this month and the first
    // of the next go to their own partitions; a share reported late, with
    // a message time years old, is recorded now.
    pg.psql(
        "INSERT INTO aft_log (jid, to_jid, method, filename, real_filename, file_type, chat_type, \
                              file_server, file_path, file_size, date_time, node) \
         SELECT 'dave@example.test', '', 'POST', 'edge-' || i, 'e.txt', 'txt', 'im', 'fs', 'p', 1, \
                (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC' \
                    + (i || ' microseconds')::interval, 'edge' \
         FROM generate_series(-1, 0) i",
    );
    let this = pg
        .psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYYMM')")
        .trim()
        .to_owned();
    let next = pg
        .psql("SELECT to_char(now() AT TIME ZONE 'UTC' + interval '1 month', 'YYYYMM')")
        .trim()
        .to_owned();
    assert_eq!(
        partition_of(&pg, "aft_log_rows", "filename = 'edge--1'"),
        format!("aft_log_rows_p{this}")
    );
    assert_eq!(
        partition_of(&pg, "aft_log_rows", "filename = 'edge-0'"),
        format!("aft_log_rows_p{next}")
    );
    pg.psql(
        "INSERT INTO shares (resource, sender, recipient, chat_type, reported_by, date_time) \
         VALUES ('res-26', 'alice@example.test', 'room@conference.example.test', 'groupchat', \
                 'example.test', now() - interval '5 years')",
    );
    assert_eq!(
        partition_of(&pg, "shares", "date_time < now() - interval '4 years'"),
        format!("shares_p{this}")
    );

    // A legal hold on the file of month 39.
    let cfg = mftd.config_path().display().to_string();
    let (code, out) = mftd_cmd(&[
        "hold", "add", "--config", &cfg, "--file", HELD, "--reason", "matter 7", "--by", "legal",
    ]);
    assert_eq!(code, 0, "{out}");

    // Off by default: the configuration keeps the log forever.
    let (code, out) = mftd_cmd(&["db", "prune-log", "--config", &cfg]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing to drop"), "{out}");

    let rows_before = pg
        .psql("SELECT count(*) FROM aft_log_rows")
        .trim()
        .to_owned();
    let (code, out) = mftd_cmd(&[
        "db",
        "prune-log",
        "--database-url-file",
        &owner_url,
        "--older-than",
        "3y",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("would drop aft_log_rows {m40} (2 rows)")),
        "{out}"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM aft_log_rows").trim(),
        rows_before,
        "a dry run drops nothing"
    );

    let (code, out) = mftd_cmd(&[
        "db",
        "prune-log",
        "--database-url-file",
        &owner_url,
        "--older-than",
        "3y",
        "--by",
        "records: j.smith",
        "--checkpoint-key",
        &cp_key_arg,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("unsigned"), "{out}");
    for m in [&m40, &m38] {
        for table in ["aft_log_rows", "aft_log_amends", "shares"] {
            assert!(
                out.contains(&format!("dropped {table} {m} (")),
                "{table} {m}: {out}"
            );
        }
    }
    assert!(
        out.contains(&format!("dropped removals {m40} (1 rows)")),
        "{out}"
    );
    for table in ["aft_log_rows", "aft_log_amends", "shares"] {
        assert!(
            out.contains(&format!(
                "kept {table} {m39}: rows of files or people under legal hold 1"
            )),
            "{table}: {out}"
        );
    }
    assert!(!out.contains(&m26), "younger months untouched: {out}");
    for (table, m, kept) in [
        ("aft_log_rows", &m40, false),
        ("aft_log_rows", &m39, true),
        ("aft_log_rows", &m38, false),
        ("aft_log_rows", &m26, true),
        ("shares", &m40, false),
        ("removals", &m40, false),
    ] {
        let exists = pg.psql(&format!(
            "SELECT to_regclass('{table}_p{}') IS NOT NULL",
            p(m)
        ));
        assert_eq!(exists.trim() == "t", kept, "{table} {m}");
    }
    // The record of records.
    assert_eq!(
        pg.psql(&format!(
            "SELECT table_name || ':' || row_count || ':' || older_than || ':' || dropped_by \
             FROM log_drops WHERE month = to_date('{m40}', 'YYYY-MM') ORDER BY table_name"
        ))
        .trim(),
        "aft_log_amends:1:3y:records: j.smith\naft_log_rows:2:3y:records: j.smith\n\
         removals:1:3y:records: j.smith\nshares:1:3y:records: j.smith"
    );
    assert_eq!(
        pg.psql(
            "SELECT d.table_name || ':' || c.node || ':' || c.from_seq || '-' || c.to_seq \
             FROM log_drop_chains c JOIN log_drops d USING (drop_id) ORDER BY 1"
        )
        .trim(),
        "aft_log_amends:node_1:1-1\naft_log_amends:node_1:3-3\n\
         aft_log_rows:node_1:1-2\naft_log_rows:node_1:5-6"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM aft_log WHERE filename IN ('res-40', 'res-38')")
            .trim(),
        "0"
    );

    // The log still answers: mftd log, and every documented compliance query.
    let (code, out) = mftd_cmd(&["log", "--config", &cfg, "--resource", HELD]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("carol@example.test"), "{out}");
    let (code, out) = mftd_cmd(&[
        "log",
        "--config",
        &cfg,
        "--jid",
        "alice@example.test",
        "--all",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("now.txt") && !out.contains("res-40"), "{out}");
    let page = std::fs::read_to_string(format!(
        "{}/../docs/compliance.md",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut queries = 0;
    for sql in sql_blocks(&page) {
        let out = Command::new("psql")
            .args([
                "-X",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                "res=held-res",
                "-d",
            ])
            .arg(pg.url())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(sql.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        queries += 1;
    }
    assert!(queries >= 11, "{queries} queries");

    // The chain: clean after the drop, anchored at the recorded runs.
    let (code, report) = mftd_cmd(&["verify", "--log", "--config", &cfg]);
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("4 rows and 2 amendments dropped by prune-log"),
        "{report}"
    );
    assert!(
        report.contains("4 drop runs signed and verified, 0 unsigned"),
        "{report}"
    );
    // A run's signature checks with OpenSSH alone, over the SQL encoding.
    let msg = pg.psql(
        "SELECT encode(convert_to(mftd_canon_drop_run(d, c), 'UTF8'), 'base64') \
         FROM log_drop_chains c JOIN log_drops d USING (drop_id) \
         WHERE d.table_name = 'aft_log_rows' AND c.from_seq = 5",
    );
    let msg: Vec<u8> = xmpp_tests::postgres::base64_bytes(&msg);
    let sig = pg.psql(
        "SELECT signature FROM log_drop_chains c JOIN log_drops d USING (drop_id) \
         WHERE d.table_name = 'aft_log_rows' AND c.from_seq = 5",
    );
    xmpp_tests::sshd::verify_log_signature(dir.path(), &public_line, &sig, &msg).unwrap();
    // Deleting the first kept record (row 3, in the held month) is named.
    let first_kept = pg
        .psql("SELECT aft_index FROM aft_log_rows WHERE node = 'node_1' AND chain_seq = 3")
        .trim()
        .to_owned();
    let next = pg
        .psql("SELECT aft_index FROM aft_log_rows WHERE node = 'node_1' AND chain_seq = 4")
        .trim()
        .to_owned();
    pg.psql(&format!(
        "ALTER TABLE aft_log_rows DISABLE TRIGGER aft_log_rows_append_only; \
         DELETE FROM aft_log_rows WHERE aft_index = {first_kept}; \
         ALTER TABLE aft_log_rows ENABLE TRIGGER aft_log_rows_append_only"
    ));
    let (code, report) = mftd_cmd(&["verify", "--log", "--config", &cfg]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.lines().next().unwrap().contains(&format!(
            "aft_log_rows node \"node_1\" seq 4 (aft_index {next}): DELETED before it — row 3..=3 missing"
        )),
        "{report}"
    );
    // A superuser explains the deletion with a drop record of their own:
    // the gap is then accounted for, but the run is not signed.
    pg.psql(&format!(
        "WITH d AS (INSERT INTO log_drops (table_name, partition, month, row_count, older_than, \
                                         cut_before, dropped_by) \
                    VALUES ('aft_log_rows', 'aft_log_rows_p{m39p}', to_date('{m39}', 'YYYY-MM'), 1, '3y', \
                            now() - interval '3 years', 'records: j.smith') RETURNING drop_id) \
         INSERT INTO log_drop_chains (drop_id, node, from_seq, to_seq, records, last_hash) \
         SELECT drop_id, 'node_1', 3, 3, 1, \
                (SELECT chain_prev FROM aft_log_rows WHERE node = 'node_1' AND chain_seq = 4) FROM d",
        m39p = p(&m39)
    ));
    let (code, report) = mftd_cmd(&["verify", "--log", "--config", &cfg]);
    assert_eq!(code, 1, "{report}");
    assert!(
        !report.contains("DELETED"),
        "the forged run explains the gap: {report}"
    );
    assert!(
        report.contains("drop run NOT SIGNED") && report.contains("node \"node_1\" seq 3..=3"),
        "{report}"
    );
    // A signature copied from a real run does not sign a forged one.
    pg.psql(
        "WITH d AS (INSERT INTO log_drops (table_name, partition, month, row_count, older_than, \
                                         cut_before, dropped_by) \
                    VALUES ('aft_log_rows', 'aft_log_rows_p200001', '2000-01-01', 1, '3y', \
                            now() - interval '3 years', 'x') RETURNING drop_id) \
         INSERT INTO log_drop_chains (drop_id, node, from_seq, to_seq, records, last_hash, \
                                      public_key, signature) \
         SELECT d.drop_id, 'ghost', 1, 1, 1, c.last_hash, c.public_key, c.signature \
         FROM d, log_drop_chains c WHERE c.node = 'node_1' AND c.from_seq = 5",
    );
    let (code, report) = mftd_cmd(&["verify", "--log", "--config", &cfg]);
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("drop run signature does not verify")
            && report.contains("node \"ghost\" seq 1..=1"),
        "{report}"
    );
    drop(mftd);
}

/// The `sql` blocks of a page.
fn sql_blocks(page: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut block: Option<String> = None;
    for line in page.lines() {
        match &mut block {
            Some(_) if line.trim_end() == "```" => blocks.push(block.take().unwrap()),
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None if line.trim_end() == "```sql" => block = Some(String::new()),
            None => {}
        }
    }
    blocks
}
