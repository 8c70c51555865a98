//! mftd on an S3 store: a real three-node Garage cluster (replication
//! factor 3) on 127.0.0.1, a real PostgreSQL for the log, uploads and
//! downloads over mftd's HTTP endpoint, and the bucket looked at with an
//! independent client (curl's own SigV4 signing).
//!
//! The promises are the SFTP store's: files land in the MFT layout, a 201
//! only once the object is complete, ranges and HEAD are served, a crash of
//! mftd leaves no unfinished upload behind once it is back, the loss of one
//! Garage node loses no file, and any mftd node serves any node's file.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::thread;
use std::time::Duration;

use mft_storage::ChatType;
use sha2::{Digest, Sha256};
use xmpp_tests::garage::Garage;
use xmpp_tests::mftd::{binary, mint_slot, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::free_port;

/// One Garage cluster at a time: four of them at once (twelve nodes, with
/// their mftd and PostgreSQL) starved each other on a 2-core CI machine.
fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn start_mftd(garage: &Garage, pg: &Postgres, node: &str) -> Mftd {
    let opts = MftdOptions {
        router: format!("127.0.0.1:{}", free_port()), // HTTP needs no router
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: "max_file_size = \"64 MiB\"\n".into(),
        store: Some(garage.store_section(0, node)),
        extra: format!("[database]\nurl = \"{}\"\n", pg.url()),
        http_port: None,
    };
    let env = vec![("MFTD_NODE__NAME".to_owned(), node.to_owned())];
    Mftd::start_with(&opts, binary(), env)
}

fn body(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u64 * 31 + u64::from(seed)) as u8)
        .collect()
}

/// Uploads `data` as `name`; (status, the slot's path).
fn upload(port: u16, name: &str, data: &[u8]) -> (u16, String) {
    let (path, token) = mint_slot(data.len() as u64, name, ChatType::Im);
    let (status, answer) = xmpp_tests::http::put(port, &path, &token, data, None);
    assert!(status == 201 || status >= 500, "{status} {answer}");
    (status, path)
}

/// GETs `path` with curl: (status, body).
fn download(port: u16, path: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("body");
    let mut curl = Command::new("curl");
    curl.args(["-s", "-o"])
        .arg(&out)
        .args(["-w", "%{http_code}"]);
    if let Some(r) = range {
        curl.args(["-H", &format!("Range: {r}")]);
    }
    let done = curl
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&done.stdout).parse().unwrap_or(0);
    (status, std::fs::read(&out).unwrap_or_default())
}

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// The resource of a slot path (`/<resource>/<name>`).
fn resource(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap()
}

#[test]
fn files_land_in_the_bucket_in_the_layout_and_come_back_whole_and_in_ranges() {
    let _turn = one_cluster_at_a_time();
    let garage = Garage::start();
    let pg = Postgres::start();
    let mftd = start_mftd(&garage, &pg, "node_1");
    let port = mftd.http_port;

    // One small file (one PUT) and one of three parts (a multipart upload).
    let small = body(100_000, 1);
    let large = body(20 * 1024 * 1024 + 123, 2);
    let (status, small_path) = upload(port, "small.bin", &small);
    assert_eq!(status, 201, "{}", mftd.log());
    let (status, large_path) = upload(port, "large.bin", &large);
    assert_eq!(status, 201, "{}", mftd.log());

    // In the bucket, in the layout: files/im/<YYYYMMDD>/<HH>/<resource>.
    let keys = garage.list_keys("mftFileStore/node_1/files/im/");
    for path in [&small_path, &large_path] {
        let r = resource(path);
        let key = keys
            .iter()
            .find(|k| k.ends_with(&format!("/{r}")))
            .unwrap_or_else(|| panic!("{r} not in the bucket: {keys:?}"));
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 7, "{key}");
        assert_eq!(parts[4].len(), 8, "{key}");
        assert!(parts[5].starts_with(|c: char| c.is_ascii_digit()), "{key}");
        // One PUT carries its description as the object's metadata; a
        // multipart upload's goes beside it.
        let beside = keys.contains(&format!("{key}.meta"));
        assert_eq!(beside, path == &large_path, "{path}: {keys:?}");
    }
    assert_eq!(garage.unfinished_uploads(), 0);

    // Whole, in a range, and its head.
    for (path, data) in [(&small_path, &small), (&large_path, &large)] {
        let (status, got) = download(port, path, None);
        assert_eq!(status, 200);
        assert_eq!(sha(&got), sha(data), "{path}");
    }
    let (status, got) = download(port, &large_path, Some("bytes=10000000-10000099"));
    assert_eq!(status, 206);
    assert_eq!(got, &large[10_000_000..10_000_100]);
    let (status, got) = download(port, &large_path, Some("bytes=-5"));
    assert_eq!(status, 206);
    assert_eq!(got, &large[large.len() - 5..]);
    let head = xmpp_tests::http::get_head(
        &format!("http://127.0.0.1:{port}{large_path}"),
        &[("Range", "bytes=0-0")],
    );
    assert!(
        head.contains(&format!("content-range: bytes 0-0/{}", large.len())),
        "{head}"
    );

    // The log has every upload and download, with the SHA-256 of the bytes.
    let sums = pg.psql("SELECT sha256 FROM files ORDER BY sha256");
    for data in [&small, &large] {
        assert!(sums.contains(&sha(data)), "{sums}");
    }
    let gets = pg.psql("SELECT count(*) FROM aft_log WHERE method = 'GET'");
    assert!(gets.trim().parse::<u32>().unwrap() >= 5, "{gets}");

    let (ok, report) = mftd.command(&["verify"]);
    assert!(ok, "{report}");
}

#[test]
fn a_crash_of_mftd_mid_upload_leaves_nothing_once_it_is_back() {
    let _turn = one_cluster_at_a_time();
    let garage = Garage::start();
    let pg = Postgres::start();
    let mut mftd = start_mftd(&garage, &pg, "node_1");
    let port = mftd.http_port;

    // Four uploads, each sending more than one part and then stalling.
    let size = 24 * 1024 * 1024;
    let mut streams = Vec::new();
    let mut resources = Vec::new();
    for i in 0..4 {
        let (path, token) = mint_slot(size as u64, &format!("cut-{i}.bin"), ChatType::Im);
        resources.push(resource(&path).to_owned());
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        use std::io::Write;
        write!(
            s,
            "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: {size}\r\n\r\n"
        )
        .unwrap();
        s.write_all(&body(10 * 1024 * 1024, i)).unwrap();
        streams.push(s);
    }
    // Wait until the parts are in Garage, then crash.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while garage.unfinished_uploads() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "no multipart uploads started\n{}",
            mftd.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    mftd.kill9();
    drop(streams);
    assert_eq!(garage.unfinished_uploads(), 4);

    // Start-up recovery aborts them; nothing of them is in the bucket.
    mftd.restart();
    assert_eq!(garage.unfinished_uploads(), 0, "{}", mftd.log());
    let keys = garage.list_keys("mftFileStore/node_1/");
    for r in &resources {
        assert!(
            !keys.iter().any(|k| k.contains(r.as_str())),
            "{r} in {keys:?}"
        );
    }
    let rows = pg.psql("SELECT count(*) FROM aft_log WHERE method = 'POST' AND http_status = 201");
    assert_eq!(rows.trim(), "0");

    // And the node works on.
    let data = body(9 * 1024 * 1024, 9);
    let (status, path) = upload(port, "after.bin", &data);
    assert_eq!(status, 201, "{}", mftd.log());
    assert_eq!(sha(&download(port, &path, None).1), sha(&data));
    let (ok, report) = mftd.command(&["verify"]);
    assert!(ok, "{report}");
}

#[test]
fn losing_one_garage_node_loses_no_file_and_any_mftd_node_serves_any_file() {
    let _turn = one_cluster_at_a_time();
    let mut garage = Garage::start();
    let pg = Postgres::start();
    let one = start_mftd(&garage, &pg, "node_1");
    let two = start_mftd(&garage, &pg, "node_2");

    let mut stored = Vec::new();
    for i in 0..4u8 {
        let data = body(if i == 0 { 12 * 1024 * 1024 } else { 64 * 1024 }, i);
        let (status, path) = upload(one.http_port, &format!("before-{i}.bin"), &data);
        assert_eq!(status, 201, "{}", one.log());
        stored.push((path, sha(&data)));
    }

    // A node of the cluster dies while uploads stream through both mftd
    // nodes: every upload started after the kill is stored, and those in
    // flight at the kill are stored or refused cleanly.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let killed = std::sync::Mutex::new(None::<std::time::Instant>);
    let answers = std::sync::Mutex::new(Vec::new());
    // Counts answers to uploads started after `since` (all, with `None`).
    let answered_since = |since: Option<std::time::Instant>| {
        answers
            .lock()
            .unwrap()
            .iter()
            .filter(|a: &&(std::time::Instant, u16, String, String)| since.is_none_or(|k| a.0 > k))
            .count()
    };
    let wait_for = |want: usize, since: Option<std::time::Instant>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while answered_since(since) < want {
            assert!(
                std::time::Instant::now() < deadline,
                "uploads stopped being answered"
            );
            thread::sleep(Duration::from_millis(50));
        }
    };
    thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let data = body(256 * 1024, i as u8);
                let port = if i.is_multiple_of(2) {
                    one.http_port
                } else {
                    two.http_port
                };
                let started = std::time::Instant::now();
                let (status, path) = upload(port, &format!("stream-{i}.bin"), &data);
                answers
                    .lock()
                    .unwrap()
                    .push((started, status, path, sha(&data)));
                i += 1;
            }
        });
        // Some uploads stored before the kill, some started after it.
        wait_for(3, None);
        let at = std::time::Instant::now();
        *killed.lock().unwrap() = Some(at);
        garage.kill_node(2);
        wait_for(6, Some(at));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let streamed = answers.into_inner().unwrap();
    let killed = killed.lock().unwrap().unwrap();
    let after: Vec<_> = streamed.iter().filter(|a| a.0 > killed).collect();
    assert!(
        !after.is_empty() && streamed.len() > after.len(),
        "uploads before and after the kill"
    );
    for (started, status, path, _) in &streamed {
        if *started > killed {
            assert_eq!(*status, 201, "{path} started after the kill\n{}", one.log());
        } else {
            assert!(*status == 201 || *status == 503, "{path}: {status}");
        }
    }
    println!(
        "{} uploads streamed, {} started after the Garage node was killed, {} refused",
        streamed.len(),
        after.len(),
        streamed.iter().filter(|a| a.1 != 201).count()
    );
    stored.extend(
        streamed
            .into_iter()
            .filter(|a| a.1 == 201)
            .map(|(_, _, path, sum)| (path, sum)),
    );
    for i in 0..4u8 {
        let data = body(if i == 0 { 12 * 1024 * 1024 } else { 64 * 1024 }, 100 + i);
        let port = if i.is_multiple_of(2) {
            one.http_port
        } else {
            two.http_port
        };
        let (status, path) = upload(port, &format!("during-{i}.bin"), &data);
        assert_eq!(status, 201, "upload with a Garage node down\n{}", one.log());
        stored.push((path, sha(&data)));
    }
    for (path, sum) in &stored {
        for port in [one.http_port, two.http_port] {
            let (status, got) = download(port, path, None);
            assert_eq!(status, 200, "{path} on {port}");
            assert_eq!(&sha(&got), sum, "{path} on {port}");
        }
    }

    // It comes back; another one dies: still every file, on any node.
    garage.start_node(2);
    let back = std::time::Instant::now();
    garage.wait_healthy();
    println!(
        "garage node 2 back in the cluster {:?} after its restart",
        back.elapsed()
    );
    garage.kill_node(1);
    for (path, sum) in &stored {
        let (status, got) = download(two.http_port, path, None);
        assert_eq!(status, 200, "{path} after the second loss\n{}", two.log());
        assert_eq!(&sha(&got), sum, "{path}");
    }
    garage.start_node(1);
    for (mftd, node) in [(&one, "node_1"), (&two, "node_2")] {
        let (ok, report) = mftd.command(&["verify"]);
        assert!(ok, "{node}: {report}");
    }
}

/// `mftd fileserver status` on an S3 store: both checks pass with the
/// right key, and a wrong secret is named for what it is; mftd with that
/// key refuses uploads with a 503 (nothing stored, nothing logged as
/// stored) and its log says what to check.
#[test]
fn a_wrong_key_is_named_and_stores_nothing() {
    let _turn = one_cluster_at_a_time();
    let garage = Garage::start();
    let pg = Postgres::start();
    let good = start_mftd(&garage, &pg, "node_1");
    let status = |mftd: &Mftd| mftd.command(&["fileserver", "status"]);
    let (ok, report) = status(&good);
    assert!(ok, "{report}");
    assert!(
        report.contains("bucket answers") && report.contains("node prefix writable"),
        "{report}"
    );
    drop(good);

    let config = std::fs::read_to_string(garage.secret_file()).unwrap();
    std::fs::write(garage.secret_file(), format!("{}x", config.trim())).unwrap();
    let bad = start_mftd(&garage, &pg, "node_1");
    let (ok, report) = status(&bad);
    assert!(!ok, "{report}");
    assert!(
        report.contains("FAIL") && report.contains("store.s3.access_key_id"),
        "{report}"
    );
    let (status, _) = upload(bad.http_port, "refused.bin", &body(1000, 1));
    assert_eq!(status, 503, "{}", bad.log());
    assert!(
        bad.log().contains("store.s3.access_key_id"),
        "{}",
        bad.log()
    );
    assert!(
        garage.list_keys("mftFileStore/").is_empty(),
        "the probe or the refused upload left an object"
    );
    let rows = pg.psql("SELECT count(*) FROM aft_log WHERE method = 'POST' AND http_status = 201");
    assert_eq!(rows.trim(), "0");
}
