//! The database cannot write: a lock held by another session, or the disk
//! under its tables full. Uploads fail with `503` within `[database]
//! statement_timeout` (never hang), nothing unlogged is published, and
//! everything works again once the database can write — without a restart.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use xmpp_tests::mftd::{published_and_temporary, put_minted, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::{chown_to, is_root};
use xmpp_tests::prosody::{Prosody, ProsodyOptions};
use xmpp_tests::tmpfs::Tmpfs;

const KIB: usize = 1024;

fn start_mftd(prosody: &Prosody, pg: &Postgres, node: &Path) -> Mftd {
    let mut opts = MftdOptions::for_prosody(prosody);
    opts.store = Some(format!("kind = \"local\"\npath = \"{}\"\n", node.display()));
    opts.extra = format!(
        "[database]\nurl = \"{}\"\nstatement_timeout = \"2s\"\n",
        pg.url()
    );
    let mftd = Mftd::start(&opts);
    mftd.wait_connected(1);
    mftd
}

/// PUTs until one is stored (the writer reconnects on its back-off
/// schedule once the database can write again).
fn put_until_stored(mftd: &Mftd, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = put_minted(mftd.http_port, name, KIB);
        if status == 201 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "uploads never recovered: {status} {body}\n{}",
            mftd.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn published_named(node: &Path, needle: &str) -> usize {
    let (finals, temps) = published_and_temporary(node);
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
    finals.iter().filter(|f| f.contains(needle)).count()
}

#[test]
fn a_held_lock_fails_uploads_within_the_statement_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node_1");
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let mftd = start_mftd(&prosody, &pg, &node);
    let (status, body) = put_minted(mftd.http_port, "before.bin", KIB);
    assert_eq!(status, 201, "{body}\n{}", mftd.log());

    // Another session holds `files` exclusively: every upload needs it.
    let lock = pg.session("BEGIN; LOCK TABLE files IN ACCESS EXCLUSIVE MODE;");
    pg.psql_eventually(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         WHERE c.relname = 'files' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        "1",
    );
    let started = Instant::now();
    let (status, body) = put_minted(mftd.http_port, "during.bin", KIB);
    let took = started.elapsed();
    eprintln!("upload against the held lock answered {status} after {took:?}");
    assert_eq!(status, 503, "{body}\n{}", mftd.log());
    assert!(
        took < Duration::from_secs(20),
        "the upload waited {took:?} on a held lock"
    );
    assert!(!body.trim().is_empty(), "a 503 says why");
    assert_eq!(published_named(&node, "during"), 0);
    assert!(
        mftd.log().contains("statement timeout"),
        "the log names the cause:\n{}",
        mftd.log()
    );

    lock.end();
    put_until_stored(&mftd, "after.bin");
    assert_eq!(
        pg.psql_eventually(
            "SELECT count(*) FROM aft_log WHERE method = 'POST' AND http_status = 201",
            "2",
        ),
        "2"
    );
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM aft_log WHERE real_filename = 'during.bin' AND http_status = 201"
        )
        .trim(),
        "0"
    );
}

#[test]
fn a_full_database_disk_fails_uploads_cleanly_and_recovers() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node_1");
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let mftd = start_mftd(&prosody, &pg, &node);
    let (status, body) = put_minted(mftd.http_port, "before.bin", KIB);
    assert_eq!(status, 201, "{body}\n{}", mftd.log());

    // Every table and index of the database onto a 16 MiB filesystem,
    // then filled by a table of incompressible rows.
    let space = Tmpfs::mount(&dir.path().join("pgspace"), "16m");
    chown_to(&space.path, "postgres");
    pg.psql(&format!(
        "CREATE TABLESPACE small LOCATION '{}'",
        space.path.display()
    ));
    pg.psql("ALTER TABLE ALL IN TABLESPACE pg_default SET TABLESPACE small");
    pg.psql("ALTER INDEX ALL IN TABLESPACE pg_default SET TABLESPACE small");
    pg.psql(
        "CREATE TABLE filler (x text) TABLESPACE small; \
         ALTER TABLE filler ALTER COLUMN x SET STORAGE PLAIN",
    );
    let mut full = None;
    for _ in 0..20 {
        if let Err(e) = pg.try_psql(
            "INSERT INTO filler SELECT string_agg(md5(random()::text), '') \
             FROM generate_series(1, 120000) s GROUP BY s % 2000",
        ) {
            full = Some(e);
            break;
        }
    }
    let full = full.expect("the tablespace never filled");
    assert!(full.contains("No space left"), "{full}");

    // Uploads now fail as soon as a row needs a new page: each within the
    // timeout, with a reason, and none published without its row.
    let mut stored = 1;
    let mut refused = 0;
    for i in 0..300 {
        let started = Instant::now();
        let (status, body) = put_minted(mftd.http_port, &format!("full-{i}.bin"), KIB);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "an upload hung for {:?}",
            started.elapsed()
        );
        match status {
            201 => stored += 1,
            503 => {
                assert!(!body.trim().is_empty(), "a 503 says why");
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {body}\n{}", mftd.log()),
        }
    }
    eprintln!("full database disk: {stored} stored before {refused} refused");
    assert!(refused > 0, "the full disk never refused an upload");
    assert!(
        mftd.log().contains("No space left"),
        "the log names the cause:\n{}",
        mftd.log()
    );

    // Space returns: uploads work again, and every stored file is a row.
    pg.psql("DROP TABLE filler");
    put_until_stored(&mftd, "after.bin");
    stored += 1;
    let rows = pg.psql_eventually(
        "SELECT count(*) FROM aft_log WHERE method = 'POST' AND http_status = 201",
        &stored.to_string(),
    );
    assert_eq!(rows, stored.to_string(), "{}", mftd.log());
    assert_eq!(published_named(&node, ""), stored);
    pg.psql("ALTER TABLE ALL IN TABLESPACE small SET TABLESPACE pg_default");
    pg.psql("ALTER INDEX ALL IN TABLESPACE small SET TABLESPACE pg_default");
}

/// Slot claims are committed without waiting for the disk (bookkeeping a
/// crash may lose while its upload is unanswered: a lost claim is a slot
/// usable again). Once an upload is answered `201` its slot stays used
/// through a crash of the database: the upload's rows, committed
/// synchronously after the claim, hold it (and flushed the claim too), so
/// the claim row is there after the restart and a replay is refused.
#[test]
fn a_used_slot_stays_used_after_the_database_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node_1");
    let prosody = Prosody::start(ProsodyOptions::default());
    let mut pg = Postgres::start();
    let mftd = start_mftd(&prosody, &pg, &node);
    let (path, token) =
        xmpp_tests::mftd::mint_slot(KIB as u64, "answered.bin", mft_storage::ChatType::Im);
    let body = vec![7u8; KIB];
    let (status, reply) = xmpp_tests::http::put(mftd.http_port, &path, &token, &body, None);
    assert_eq!(status, 201, "{reply}\n{}", mftd.log());
    // At once, killed as a crash would.
    pg.restart();
    let resource = path.trim_start_matches('/').rsplit_once('/').unwrap().0;
    assert_eq!(
        pg.psql_eventually(
            &format!("SELECT count(*) FROM used_slots WHERE resource = '{resource}'"),
            "1",
        ),
        "1",
        "the answered upload's claim was lost in the crash"
    );
    // The same token again: refused, whether the node asks the database
    // before or after the body.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, reply) = loop {
        let (status, reply) = xmpp_tests::http::put(mftd.http_port, &path, &token, &body, None);
        if status != 503 || Instant::now() > deadline {
            break (status, reply);
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        status,
        409,
        "a replay after the crash: {reply}\n{}",
        mftd.log()
    );
    let (published, temporaries) = published_and_temporary(&node);
    assert_eq!(published.len(), 1, "{published:?}");
    assert!(temporaries.is_empty(), "{temporaries:?}");
}
