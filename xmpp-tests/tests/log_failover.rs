//! The log outlives its primary: mftd's `[database] url` names a primary
//! and its streaming standby (`target_session_attrs=read-write`); while
//! uploads and downloads stream from a few threads the primary is killed
//! (SIGKILL) and the standby promoted. Every upload answered `201` has its
//! POST row on the promoted server, uploads succeed again without a restart
//! of mftd, and `mftd verify --log` finds the chains intact there.
//!
//! With synchronous replication nothing answered `201` may be missing;
//! with asynchronous replication rows committed on the old primary shortly
//! before it died may be lost with it — that run reports how many, and
//! holds the rest of the promises.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use mft_storage::ChatType;
use xmpp_tests::mftd::{binary, mint_slot, put_minted, Mftd, MftdOptions};
use xmpp_tests::pg_replica::Replicated;
use xmpp_tests::process::free_port;

const UPLOADERS: usize = 3;
const SIZE: usize = 16 * 1024;

/// One request and how it was answered.
struct Answer {
    resource: String,
    upload: bool,
    status: u16,
    started: Instant,
    answered: Instant,
}

fn start_mftd(url: &str) -> Mftd {
    let opts = MftdOptions {
        router: format!("127.0.0.1:{}", free_port()), // HTTP needs no router
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: "max_file_size = \"1 MiB\"\n".into(),
        store: None,
        extra: format!("[database]\nurl = \"{url}\"\nstatement_timeout = \"2s\"\n"),
        http_port: None,
    };
    let env = [("MFTD_HTTP__MAX_TRANSFERS_PER_CLIENT", "256")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Mftd::start_with(&opts, binary(), env)
}

/// The resource of a minted slot's path (`/<resource>/<name>`).
fn resource_of(path: &str) -> String {
    path.trim_start_matches('/')
        .rsplit_once('/')
        .map(|(r, _)| r.to_owned())
        .unwrap()
}

fn upload(port: u16, name: &str) -> Answer {
    let (path, token) = mint_slot(SIZE as u64, name, ChatType::Im);
    let started = Instant::now();
    let (status, _) = xmpp_tests::http::put(port, &path, &token, &vec![7u8; SIZE], None);
    Answer {
        resource: resource_of(&path),
        upload: true,
        status,
        started,
        answered: Instant::now(),
    }
}

fn download(port: u16, path: &str) -> Answer {
    let started = Instant::now();
    let status = xmpp_tests::http::status(&format!("http://127.0.0.1:{port}{path}"));
    Answer {
        resource: resource_of(path),
        upload: false,
        status,
        started,
        answered: Instant::now(),
    }
}

fn failover(synchronous: bool) {
    let mode = if synchronous {
        "synchronous"
    } else {
        "asynchronous"
    };
    let mut pair = Replicated::start(synchronous);
    let mftd = start_mftd(&pair.url());
    let port = mftd.http_port;

    // A file to download throughout, on the standby before the crash.
    let (status, body) = put_minted(port, "seed.bin", SIZE);
    assert_eq!(status, 201, "{body}\n{}", mftd.log());
    let seed: String = pair
        .primary
        .psql("SELECT filename FROM aft_log WHERE method = 'POST' ORDER BY aft_index LIMIT 1")
        .trim()
        .to_owned();
    let seed_path = format!("/{seed}/seed.bin");
    pair.wait_caught_up();

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let mut workers = Vec::new();
    for t in 0..=UPLOADERS {
        let (stop, answers, seed_path) = (stop.clone(), answers.clone(), seed_path.clone());
        workers.push(thread::spawn(move || {
            let mut i = 0;
            // Bounded: at most 3 minutes, whatever happens.
            let deadline = Instant::now() + Duration::from_secs(180);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let answer = if t == UPLOADERS {
                    download(port, &seed_path)
                } else {
                    upload(port, &format!("t{t}-{i}.bin"))
                };
                let failed = !matches!(answer.status, 200 | 201);
                answers.lock().unwrap().push(answer);
                i += 1;
                // Failures come at once; do not spin on them.
                thread::sleep(Duration::from_millis(if failed { 50 } else { 10 }));
            }
        }));
    }

    thread::sleep(Duration::from_secs(3));
    let killing = Instant::now();
    pair.kill_primary();
    let killed = Instant::now();
    // What an operator or Patroni takes to decide: a moment.
    thread::sleep(Duration::from_secs(1));
    let promotion = pair.promote();
    let promoted = Instant::now();
    // Until an upload started after the promotion is stored, then a while on.
    let recovered = Instant::now() + Duration::from_secs(60);
    loop {
        let ok_after = answers
            .lock()
            .unwrap()
            .iter()
            .any(|a| a.upload && a.status == 201 && a.started > promoted);
        if ok_after || Instant::now() > recovered {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());

    // The switch, as clients saw it: first failure to the first success
    // started after it.
    let first_failure = answers
        .iter()
        .filter(|a| !matches!(a.status, 200 | 201))
        .map(|a| a.started)
        .min()
        .expect("killing the primary failed no request: the test did not test the switch");
    let first_success = answers
        .iter()
        .filter(|a| a.status == 201 && a.started > first_failure)
        .map(|a| a.answered)
        .min()
        .unwrap_or_else(|| panic!("no upload succeeded after the failover\n{}", mftd.log()));
    let failed: Vec<&Answer> = answers
        .iter()
        .filter(|a| !matches!(a.status, 200 | 201))
        .collect();
    let mut statuses: Vec<u16> = failed.iter().map(|a| a.status).collect();
    statuses.sort_unstable();
    statuses.dedup();
    let uploads = answers.iter().filter(|a| a.upload).count();
    let stored: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.upload && a.status == 201)
        .collect();
    println!(
        "{mode}: {} requests ({uploads} uploads, {} stored); killing the primary took {:?}, \
         promotion {promotion:?}; switch (first failure to first success) {:?}; {} requests \
         failed meanwhile ({} uploads, {} downloads; statuses {statuses:?})",
        answers.len(),
        stored.len(),
        killed - killing,
        first_success - first_failure,
        failed.len(),
        failed.iter().filter(|a| a.upload).count(),
        failed.iter().filter(|a| !a.upload).count(),
    );

    // Failures are clean refusals, never a dropped connection.
    assert!(
        failed.iter().all(|a| a.status == 503),
        "requests failed with {statuses:?}, expected 503\n{}",
        mftd.log()
    );
    // Every upload started once one succeeded after the switch is stored.
    let late_failures: Vec<&&Answer> = failed
        .iter()
        .filter(|a| a.started > first_success)
        .collect();
    assert!(
        late_failures.is_empty(),
        "{} requests failed after uploads had recovered\n{}",
        late_failures.len(),
        mftd.log()
    );

    // Every 201 has its POST row on the promoted server.
    let logged: HashSet<String> = pair
        .standby
        .psql("SELECT filename FROM aft_log WHERE method = 'POST' AND http_status = 201")
        .lines()
        .map(str::to_owned)
        .collect();
    let missing: Vec<&&Answer> = stored
        .iter()
        .filter(|a| !logged.contains(&a.resource))
        .collect();
    let failed_uploads: HashSet<&str> = failed
        .iter()
        .filter(|a| a.upload)
        .map(|a| a.resource.as_str())
        .collect();
    let logged_but_refused = logged
        .iter()
        .filter(|r| failed_uploads.contains(r.as_str()))
        .count();
    for a in &missing {
        println!(
            "{mode}: missing {} answered {:?} after the kill began",
            a.resource,
            a.answered.saturating_duration_since(killing)
        );
    }
    println!(
        "{mode}: {} of {} stored uploads missing on the promoted server ({} answered before \
         the primary was dead); {logged_but_refused} uploads answered 503 have a row there (committed as \
         the primary died, the answer lost)",
        missing.len(),
        stored.len(),
        missing.iter().filter(|a| a.answered < killed).count(),
    );
    if synchronous {
        assert!(
            missing.is_empty(),
            "{} uploads answered 201 have no row on the promoted server\n{}",
            missing.len(),
            mftd.log()
        );
    } else {
        // Only what the old primary acknowledged before it was dead can be
        // lost (a commit acknowledged while it was being killed included).
        assert!(
            missing.iter().all(|a| a.answered < killed),
            "uploads answered after the kill have no row\n{}",
            mftd.log()
        );
    }

    // The chains on the promoted server are intact.
    let (ok, report) = mftd.command(&["verify", "--log"]);
    println!("{mode}: mftd verify --log: {}", report.trim());
    assert!(ok, "verify --log: {report}");
}

#[test]
fn the_log_follows_a_synchronous_standby_promoted_and_loses_no_row() {
    failover(true);
}

#[test]
fn the_log_follows_an_asynchronous_standby_promoted() {
    failover(false);
}

/// A list of hosts that does not say `target_session_attrs` still finds
/// the primary, whatever the order: the standby listed first is skipped
/// (it would refuse every row with 25006), and after the failover the
/// promoted standby is used.
/// Rows the old primary acknowledged but never sent to its standby are lost
/// with it; the chains go on from what the promoted server has, so
/// `mftd verify --log` finds them intact there (the writer must not link
/// its next record to a head only the dead primary had).
#[test]
fn the_chain_goes_on_from_the_promoted_server_when_the_last_rows_died_with_the_primary() {
    let mut pair = Replicated::start(false);
    let mftd = start_mftd(&pair.url());
    let (status, body) = put_minted(mftd.http_port, "kept.bin", SIZE);
    assert_eq!(status, 201, "{body}\n{}", mftd.log());
    pair.wait_caught_up();

    pair.detach_standby();
    for name in ["lost-1.bin", "lost-2.bin"] {
        let (status, body) = put_minted(mftd.http_port, name, SIZE);
        assert_eq!(status, 201, "{body}\n{}", mftd.log());
    }
    pair.kill_primary();
    pair.promote();
    let lost = pair
        .standby
        .psql("SELECT count(*) FROM aft_log WHERE real_filename LIKE 'lost-%'");
    assert_eq!(
        lost.trim(),
        "0",
        "the scenario needs rows only the old primary had"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = put_minted(mftd.http_port, "after.bin", SIZE);
        if status == 201 {
            break;
        }
        assert_eq!(status, 503, "{body}\n{}", mftd.log());
        assert!(
            Instant::now() < deadline,
            "uploads never recovered: {status} {body}\n{}",
            mftd.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    let (ok, report) = mftd.command(&["verify", "--log"]);
    assert!(ok, "verify --log: {report}\n{}", mftd.log());
}

#[test]
fn a_host_list_without_session_attrs_skips_the_standby_listed_first() {
    let mut pair = Replicated::start(false);
    let url = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/mftd",
        pair.standby.port, pair.primary.port
    );
    let mftd = start_mftd(&url);
    let (status, body) = put_minted(mftd.http_port, "before.bin", SIZE);
    assert_eq!(status, 201, "{body}\n{}", mftd.log());
    assert_eq!(
        pair.primary
            .psql("SELECT count(*) FROM aft_log WHERE real_filename = 'before.bin'")
            .trim(),
        "1"
    );

    pair.kill_primary();
    let (status, _) = put_minted(mftd.http_port, "during.bin", SIZE);
    assert_eq!(status, 503, "{}", mftd.log());
    let both = format!(
        "127.0.0.1:{},127.0.0.1:{} as user \"postgres\", database \"mftd\" (each host in turn, \
         for one that takes writes",
        pair.standby.port, pair.primary.port
    );
    assert!(
        mftd.log().contains(&both),
        "the log names every host and what was looked for:\n{}",
        mftd.log()
    );
    pair.promote();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = put_minted(mftd.http_port, "after.bin", SIZE);
        if status == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "uploads never recovered: {status} {body}\n{}",
            mftd.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        pair.standby.psql_eventually(
            "SELECT count(*) FROM aft_log WHERE real_filename = 'after.bin'",
            "1"
        ),
        "1"
    );
}

/// A hung primary (every process stopped: its port still accepts TCP
/// connections, nothing answers on them) is passed over: queries on the
/// connections already open give up after `statement_timeout` and a grace,
/// and each host gets the connect timeout, so the promoted standby listed
/// after it is found.
#[test]
fn a_hung_primary_is_passed_over_for_the_promoted_standby() {
    let pair = Replicated::start(false);
    let mftd = start_mftd(&pair.url());
    let (status, body) = put_minted(mftd.http_port, "before.bin", SIZE);
    assert_eq!(status, 201, "{body}\n{}", mftd.log());
    pair.wait_caught_up();

    pair.primary.freeze();
    let frozen = Instant::now();
    pair.promote();
    let deadline = frozen + Duration::from_secs(90);
    let mut failed = Vec::new();
    let mut i = 0;
    loop {
        let (status, body) = put_minted(mftd.http_port, &format!("after-{i}.bin"), SIZE);
        if status == 201 {
            break;
        }
        failed.push(status);
        assert!(
            Instant::now() < deadline,
            "uploads never recovered from the hung primary: {status} {body}\n{}",
            mftd.log()
        );
        i += 1;
        thread::sleep(Duration::from_millis(200));
    }
    println!(
        "hung primary: first upload stored {:?} after the freeze; {} failed before it ({failed:?})",
        frozen.elapsed(),
        failed.len()
    );
    assert!(
        failed.iter().all(|s| *s == 503),
        "failures other than 503: {failed:?}\n{}",
        mftd.log()
    );
    assert!(
        mftd.log().contains("the database did not answer within"),
        "the log says the hung host did not answer:\n{}",
        mftd.log()
    );
    assert_eq!(
        pair.standby.psql_eventually(
            &format!("SELECT count(*) FROM aft_log WHERE real_filename = 'after-{i}.bin'"),
            "1"
        ),
        "1"
    );
}
