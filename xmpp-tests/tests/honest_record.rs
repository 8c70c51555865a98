//! Hostile users against the record, through real parts (Prosody, mftd,
//! PostgreSQL, raw sockets and an HTTP/2 client): a log row says what really
//! happened, one bad row never takes a batch down, a slot is used once for
//! good on any node, only the uploader decides an upload's destination, and
//! transfers that stop moving lose their permits.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use mft_component::service::UploadService;
use mft_component::xml::Element;
use mft_storage::local::LocalBackend;
use mft_storage::transfer_log::{Share, TransferLog, TransferRecord};
use mft_storage::{ChatType, Store};
use mft_upload_http::SlotSigner;
use xmpp_tests::http::status_of;
use xmpp_tests::mftd::{binary, mint_slot, stored_files, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

const MIB: usize = 1024 * 1024;

/// mftd with a transfer log and `[http]` overrides from the environment.
fn mftd(prosody: &Prosody, pg: &Postgres, http: &[(&str, &str)]) -> Mftd {
    let mut opts = MftdOptions::for_prosody(prosody);
    opts.limits = "max_file_size = \"200 MiB\"\n".into();
    opts.extra = format!("[database]\nurl = \"{}\"\n", pg.url());
    let env = http
        .iter()
        .map(|(k, v)| (format!("MFTD_HTTP__{}", k.to_uppercase()), (*v).to_owned()))
        .collect();
    let m = Mftd::start_with(&opts, binary(), env);
    m.wait_connected(1);
    m
}

/// PUTs `body` into a minted slot; the status.
fn put(port: u16, path: &str, token: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    status_of(&raw)
}

/// Uploads `len` bytes; the resource and its URL path.
fn upload(port: u16, len: usize) -> (String, String) {
    let (path, token) = mint_slot(len as u64, "big.bin", ChatType::Im);
    assert_eq!(put(port, &path, &token, &vec![7u8; len]), 201);
    let resource = path.split('/').nth(1).unwrap().to_owned();
    (resource, path)
}

/// Sends a GET and returns the open connection (nothing read yet).
fn open_get(port: u16, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s
}

/// Reads a response until the server closes or `limit` body bytes came:
/// (status, body bytes received).
fn read_response(s: &mut TcpStream, limit: usize) -> (u16, usize) {
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = None;
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if head.is_none() {
            head = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        }
        if head.is_some_and(|h| raw.len() - h >= limit) {
            break;
        }
    }
    let h = head.unwrap_or(raw.len());
    (status_of(&raw), raw.len() - h)
}

/// Every GET row of `resource`: (status, bytes_sent), oldest first.
fn get_rows(pg: &Postgres, resource: &str) -> Vec<(u16, usize)> {
    pg.psql(&format!(
        "SELECT http_status, bytes_sent FROM aft_log WHERE method = 'GET' AND filename = '{resource}' ORDER BY aft_index"
    ))
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| {
        let (s, b) = l.split_once('|').unwrap();
        (s.trim().parse().unwrap(), b.trim().parse().unwrap())
    })
    .collect()
}

/// Waits until `resource` has `n` GET rows and none changes for a moment.
fn settled_rows(pg: &Postgres, resource: &str, n: usize) -> Vec<(u16, usize)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = Vec::new();
    loop {
        let rows = get_rows(pg, resource);
        if rows.len() >= n && rows == last || Instant::now() > deadline {
            return rows;
        }
        last = rows;
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn refused_stalled_and_broken_downloads_never_read_as_deliveries() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    // One permit: whoever holds it makes everyone else's download a 503.
    let m = mftd(
        &prosody,
        &pg,
        &[("max_transfers", "1"), ("stall_timeout", "3s")],
    );
    let size = 64 * MIB;
    let (resource, path) = upload(m.http_port, size);

    // A client that asks and never reads takes the permit …
    let mut idle = open_get(m.http_port, &path);
    std::thread::sleep(Duration::from_millis(500));
    // … ten others are refused, and a refusal writes no row.
    for _ in 0..10 {
        let mut s = open_get(m.http_port, &path);
        assert_eq!(read_response(&mut s, usize::MAX).0, 503);
    }
    // The stalled one loses its connection (and so the permit) after
    // http.stall_timeout, though its socket is still open.
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let (status, idle_received) = read_response(&mut idle, usize::MAX);
    assert_eq!(status, 200);
    assert!(
        idle_received < size,
        "a stalled download cannot have completed"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed by the stall deadline"
    );

    // A client that reads 1 MiB and leaves.
    let mut early = open_get(m.http_port, &path);
    let (status, early_received) = read_response(&mut early, MIB);
    assert_eq!(status, 200);
    early.shutdown(Shutdown::Both).unwrap();
    drop(early);
    // A client that takes it all.
    std::thread::sleep(Duration::from_millis(500));
    let mut full = open_get(m.http_port, &path);
    assert_eq!(read_response(&mut full, usize::MAX), (200, size));

    let rows = settled_rows(&pg, &resource, 3);
    assert_eq!(
        rows.len(),
        3,
        "one row per admitted download, none for the 503s: {rows:?}\n{}",
        m.log()
    );
    // Bytes handed to the connection: at least what the client got, at
    // most one more piece still in flight inside the server.
    let slack = MIB + 64 * 1024;
    let (idle_row, early_row, full_row) = (rows[0], rows[1], rows[2]);
    assert_eq!(idle_row.0, 499, "{rows:?}");
    assert!(
        idle_row.1 >= idle_received && idle_row.1 <= idle_received + slack,
        "{rows:?} vs {idle_received}"
    );
    assert_eq!(early_row.0, 499, "{rows:?}");
    assert!(
        early_row.1 >= early_received && early_row.1 < size,
        "{rows:?}"
    );
    assert_eq!(full_row, (200, size));
}

/// An HTTP/2 connection with prior knowledge and the given stream window.
async fn h2_client(
    port: u16,
    window: u32,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<()>,
) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    // The connection task answers the server's pings for as long as it lives.
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, driver)
}

fn h2_get(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://127.0.0.1{path}"))
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_resets_and_windowless_streams_hold_nothing_and_claim_nothing() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = std::sync::Arc::new(Postgres::start());
    let m = mftd(
        &prosody,
        &pg,
        &[
            ("http2", "true"),
            ("max_transfers", "2"),
            ("max_transfers_per_client", "2"),
            ("stall_timeout", "3s"),
        ],
    );
    let port = m.http_port;
    let size = 32 * MIB;
    let (resource, path) = tokio::task::spawn_blocking(move || upload(port, size))
        .await
        .unwrap();

    // Rapid reset: HEADERS then RST_STREAM, many times on one connection.
    // The server may end the connection with GOAWAY ENHANCE_YOUR_CALM
    // ("too many resets") part-way — how soon depends on how fast it
    // accepts streams on a loaded machine; that is the defence working.
    let calmed =
        |e: &h2::Error| e.is_go_away() && e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
    let (client, _driver) = h2_client(port, 65_535).await;
    let mut client = client;
    for _ in 0..300 {
        client = match client.ready().await {
            Ok(c) => c,
            Err(e) if calmed(&e) => break,
            Err(e) => panic!("rapid reset: {e}"),
        };
        let (response, mut stream) = match client.send_request(h2_get(&path), true) {
            Ok(sent) => sent,
            Err(e) if calmed(&e) => break,
            Err(e) => panic!("rapid reset: {e}"),
        };
        drop(response);
        stream.send_reset(h2::Reason::CANCEL);
    }
    // A stream whose window is never opened, on a connection that answers pings.
    let (windowless, driver) = h2_client(port, 0).await;
    let mut windowless = windowless.ready().await.unwrap();
    let (response, _stream) = windowless.send_request(h2_get(&path), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let _body = response.into_body();
    // It is closed by the stall deadline, whatever keeps the connection alive.
    let closed = tokio::time::timeout(Duration::from_secs(15), driver).await;
    assert!(
        closed.is_ok(),
        "a windowless stream kept its connection open"
    );

    let rows = tokio::task::spawn_blocking({
        let resource = resource.clone();
        let pg = pg.clone();
        move || {
            std::thread::sleep(Duration::from_secs(2));
            get_rows(&pg, &resource)
        }
    })
    .await
    .unwrap();
    assert!(
        !rows.is_empty(),
        "some reset streams were admitted and logged"
    );
    for (status, bytes) in &rows {
        assert!(
            *status == 499 && *bytes < size,
            "a reset or windowless stream reads as a delivery: {rows:?}"
        );
    }
    // Nothing is held any more: a plain download gets the whole file.
    let full = tokio::task::spawn_blocking(move || {
        let mut s = open_get(port, &path);
        read_response(&mut s, usize::MAX)
    })
    .await
    .unwrap();
    assert_eq!(full, (200, size), "{}", m.log());
}

#[test]
fn a_slot_is_used_once_on_any_node_and_after_its_file_was_retired() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let a = mftd(&prosody, &pg, &[]);
    let body = vec![3u8; 100_000];
    let (path, token) = mint_slot(body.len() as u64, "once.bin", ChatType::Im);
    let resource = path.split('/').nth(1).unwrap().to_owned();

    // A body that ends early stores nothing and leaves the slot usable.
    {
        let mut s = TcpStream::connect(("127.0.0.1", a.http_port)).unwrap();
        write!(
            s,
            "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(&body[..1000]).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        assert!(status_of(&raw) >= 400, "{}", String::from_utf8_lossy(&raw));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(put(a.http_port, &path, &token, &body), 201, "{}", a.log());
    assert_eq!(put(a.http_port, &path, &token, &body), 409);

    // Another node on the same log refuses the same token.
    let prosody2 = Prosody::start(ProsodyOptions::default());
    let b = {
        let mut opts = MftdOptions::for_prosody(&prosody2);
        opts.extra = format!("[database]\nurl = \"{}\"\n", pg.url());
        let m = Mftd::start_with(
            &opts,
            binary(),
            vec![("MFTD_NODE__NAME".into(), "node_2".into())],
        );
        m.wait_connected(1);
        m
    };
    assert_eq!(put(b.http_port, &path, &token, &body), 409);
    assert!(
        stored_files(&b.node_dir()).is_empty(),
        "nothing stored on the other node"
    );

    // Retention retires the file: the token still cannot store it again.
    for f in stored_files(&a.node_dir()) {
        std::fs::remove_file(a.node_dir().join(f)).unwrap();
    }
    pg.psql(&format!(
        "UPDATE files SET deleted = now() WHERE resource = '{resource}'"
    ));
    assert_eq!(put(a.http_port, &path, &token, &body), 409);
    assert!(
        stored_files(&a.node_dir()).is_empty(),
        "{:?}",
        stored_files(&a.node_dir())
    );
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM aft_log WHERE method = 'POST' AND filename = '{resource}'"
        ))
        .trim(),
        "1"
    );

    // Two PUTs of one fresh slot at once: one stores, the other is refused.
    let (path, token) = mint_slot(body.len() as u64, "race.bin", ChatType::Im);
    let (port_a, port_b) = (a.http_port, b.http_port);
    let racers: Vec<_> = [port_a, port_b]
        .into_iter()
        .map(|port| {
            let (path, token, body) = (path.clone(), token.clone(), body.clone());
            std::thread::spawn(move || put(port, &path, &token, &body))
        })
        .collect();
    let mut statuses: Vec<u16> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409]);
}

fn record(resource: &str, jid: &str) -> TransferRecord {
    TransferRecord {
        jid: jid.into(),
        resource: resource.into(),
        real_filename: "a.txt".into(),
        file_type: "txt".into(),
        chat_type: "im".into(),
        file_server: "localhost".into(),
        file_path: format!("files/im/20260101/00/{resource}"),
        file_size: 5,
        sha256: "00".repeat(32),
        node: "node_1".into(),
        http_status: 201,
        bytes_sent: 5,
        purpose: "message".into(),
        ..TransferRecord::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_row_fails_alone_and_never_takes_its_batch_down() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let log = TransferLog::start(&pg.url(), Duration::from_secs(10))
        .await
        .unwrap();
    log.record_upload(record("used-before", "alice@example.test"))
        .await
        .unwrap();
    // A constraint only the test has: a row the database refuses.
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "ALTER TABLE aft_log_rows ADD CONSTRAINT test_refuses_evil CHECK (real_filename <> 'evil')",
        )
        .await
        .unwrap();
    // Rounds of concurrent rows, so the bad ones share batches with good ones.
    for round in 0..5 {
        let mut jobs = Vec::new();
        for i in 0..40 {
            let log = log.clone();
            jobs.push(tokio::spawn(async move {
                match i {
                    0 => log
                        .record_upload(record("used-before", "mallory@example.test"))
                        .await
                        .map_err(|e| e.is_slot_used()),
                    1 => {
                        let mut r = record(&format!("evil-{round}"), "");
                        r.real_filename = "evil".into();
                        log.record_download(r).await.map_err(|_| false)
                    }
                    i if i % 2 == 0 => log
                        .record_upload(record(&format!("fresh-{round}-{i}"), "bob@example.test"))
                        .await
                        .map_err(|_| false),
                    _ => log
                        .record_download(record("used-before", ""))
                        .await
                        .map_err(|_| false),
                }
            }));
        }
        let results: Vec<_> = futures_join(jobs).await;
        assert_eq!(
            results[0],
            Err(true),
            "the replayed slot is refused as used"
        );
        assert_eq!(results[1], Err(false), "the refused row fails");
        for (i, r) in results.iter().enumerate().skip(2) {
            assert!(r.is_ok(), "bystander {i} failed in round {round}: {r:?}");
        }
    }
    let count = |sql: &str| {
        let client = &client;
        let sql = sql.to_owned();
        async move { client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        count("SELECT count(*) FROM files WHERE resource LIKE 'fresh-%'").await,
        5 * 19
    );
    assert_eq!(
        count("SELECT count(*) FROM aft_log WHERE method = 'POST' AND filename = 'used-before'")
            .await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM aft_log WHERE method = 'GET' AND filename = 'used-before'")
            .await,
        5 * 19
    );
    assert_eq!(
        count("SELECT count(*) FROM aft_log WHERE real_filename = 'evil'").await,
        0
    );
}

async fn futures_join<T: Send + 'static>(jobs: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        out.push(j.await.unwrap());
    }
    out
}

fn share_iq(from: &str, resource: &str, sender: &str, recipient: &str, chat: &str) -> Element {
    Element::new("iq", "jabber:component:accept")
        .attr("type", "set")
        .attr("id", "s1")
        .attr("from", from)
        .attr("to", "upload.example.test")
        .child(
            Element::new("share", "urn:mftd:share:0")
                .attr("resource", resource)
                .attr("sender", sender)
                .attr("recipient", recipient)
                .attr("chat-type", chat),
        )
}

fn error_condition(reply: &Element) -> Option<String> {
    if reply.get_attr("type") != Some("error") {
        return None;
    }
    let error = reply.elements().find(|e| e.name == "error")?;
    error.elements().next().map(|c| c.name.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_uploader_decides_where_an_upload_went() {
    let pg = tokio::task::spawn_blocking(Postgres::start).await.unwrap();
    let log = TransferLog::start(&pg.url(), Duration::from_secs(10))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut svc = UploadService::new(
        SlotSigner::new(b"share-test-key-0123456789abcdef"),
        Store::new(LocalBackend::new(dir.path()).unwrap()),
        "https://up.example.test/",
        vec!["example.test".into(), "federated.test".into()],
    );
    svc.log = Some(log.clone());
    svc.share_reporters = vec!["example.test".into()];
    let resource = mft_storage::Location::new_random(ChatType::Im, "20260101", "00")
        .resource()
        .to_owned();
    log.record_upload(record(&resource, "alice@example.test"))
        .await
        .unwrap();
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let destination = || {
        let client = &client;
        let resource = resource.clone();
        async move {
            let post = client
                .query_one(
                    "SELECT to_jid, chat_type FROM aft_log WHERE method = 'POST' AND filename = $1",
                    &[&resource],
                )
                .await
                .unwrap();
            let file = client
                .query_one(
                    "SELECT to_jid, chat_type FROM files WHERE resource = $1",
                    &[&resource],
                )
                .await
                .unwrap();
            let post: (String, String) = (post.get(0), post.get(1));
            let file: (String, String) = (file.get(0), file.get(1));
            assert_eq!(post, file);
            post
        }
    };
    let ask = |iq: Element| {
        let svc = &svc;
        async move { error_condition(&svc.handle(&iq).await.unwrap()) }
    };

    // bob re-posts alice's link in a room first: a share row, no rewrite.
    assert_eq!(
        ask(share_iq(
            "example.test",
            &resource,
            "bob@example.test/phone",
            "lunch@conference.example.test",
            "groupchat"
        ))
        .await,
        None
    );
    assert_eq!(destination().await, (String::new(), "im".into()));
    // A server may report only its own users, and only a listed one at all.
    assert_eq!(
        ask(share_iq(
            "example.test",
            &resource,
            "alice@elsewhere.test/x",
            "eve@example.test",
            "im"
        ))
        .await
        .as_deref(),
        Some("forbidden")
    );
    assert_eq!(
        ask(share_iq(
            "federated.test",
            &resource,
            "mallory@federated.test/x",
            "eve@example.test",
            "groupchat"
        ))
        .await
        .as_deref(),
        Some("forbidden")
    );
    assert_eq!(
        ask(share_iq(
            "bob@example.test",
            &resource,
            "bob@example.test/x",
            "eve@example.test",
            "im"
        ))
        .await
        .as_deref(),
        Some("forbidden")
    );
    // alice's own first share decides; later ones are rows, not rewrites.
    assert_eq!(
        ask(share_iq(
            "example.test",
            &resource,
            "alice@example.test/laptop",
            "carol@example.test",
            "im"
        ))
        .await,
        None
    );
    assert_eq!(
        destination().await,
        ("carol@example.test".into(), "im".into())
    );
    assert_eq!(
        ask(share_iq(
            "example.test",
            &resource,
            "alice@example.test/laptop",
            "room@conference.example.test",
            "groupchat"
        ))
        .await,
        None
    );
    assert_eq!(
        destination().await,
        ("carol@example.test".into(), "im".into())
    );
    let shares: i64 = client
        .query_one(
            "SELECT count(*) FROM shares WHERE resource = $1",
            &[&resource],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shares, 3, "bob's, and alice's two");

    // Shares of files that do not exist write nothing.
    let ghost = mft_storage::Location::new_random(ChatType::Im, "20260101", "00")
        .resource()
        .to_owned();
    assert_eq!(
        ask(share_iq(
            "example.test",
            &ghost,
            "bob@example.test/x",
            "eve@example.test",
            "im"
        ))
        .await
        .as_deref(),
        Some("item-not-found")
    );
    assert!(!log
        .record_share(&Share {
            resource: ghost.clone(),
            sender: "bob@example.test".into(),
            recipient: "eve@example.test".into(),
            chat_type: "im".into(),
            reported_by: "example.test".into(),
            sent_at: None,
        })
        .await
        .unwrap());
    let ghost_rows: i64 = client
        .query_one("SELECT count(*) FROM shares WHERE resource = $1", &[&ghost])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ghost_rows, 0);

    // One sender's flood is cut off; another sender is not affected.
    let mut refused = 0;
    for _ in 0..300 {
        if ask(share_iq(
            "example.test",
            &resource,
            "dave@example.test/x",
            "eve@example.test",
            "im",
        ))
        .await
        .as_deref()
            == Some("resource-constraint")
        {
            refused += 1;
        }
    }
    assert!(refused >= 150, "only {refused} of 300 refused");
    assert_eq!(
        ask(share_iq(
            "example.test",
            &resource,
            "erin@example.test/x",
            "eve@example.test",
            "im"
        ))
        .await,
        None
    );
}

/// One GET to the admin listener with the token; the status, or 0 when no
/// answer came within `limit`.
fn admin_get(port: u16, path: &str, token: &str, limit: Duration) -> u16 {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), limit) else {
        return 0;
    };
    s.set_read_timeout(Some(limit)).unwrap();
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    status_of(&raw)
}

#[test]
fn health_stays_reachable_whatever_else_holds_the_admin_listener() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const TOKEN: &str = "admin-token-0123456789abcdef";
    let prosody = Prosody::start(ProsodyOptions::default());
    let admin = xmpp_tests::process::free_port();
    let mut opts = MftdOptions::for_prosody(&prosody);
    opts.extra = format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n");
    let m = Mftd::start(&opts);
    m.wait_connected(1);
    assert_eq!(
        admin_get(admin, "/healthz", TOKEN, Duration::from_secs(5)),
        200
    );

    // Sockets that say nothing …
    let silent: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", admin)).ok())
        .collect();
    // … and keep-alive clients that ask without the token every second.
    let stop = Arc::new(AtomicBool::new(false));
    let pests: Vec<_> = (0..80)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conn: Option<TcpStream> = None;
                while !stop.load(Ordering::Relaxed) {
                    let s = conn.get_or_insert_with(|| {
                        let s = TcpStream::connect(("127.0.0.1", admin)).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                        s
                    });
                    let mut buf = [0u8; 4096];
                    let alive = s
                        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                        .is_ok()
                        && s.read(&mut buf).is_ok_and(|n| n > 0);
                    if !alive {
                        conn = None;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    for round in 0..5 {
        for path in ["/healthz", "/readyz"] {
            let status = admin_get(admin, path, TOKEN, Duration::from_secs(2));
            assert!(
                status == 200 || status == 503,
                "round {round}: {path} answered {status}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    for p in pests {
        p.join().unwrap();
    }
    drop(silent);
    drop(m);
}

#[test]
fn user_supplied_names_are_quoted_in_the_text_log() {
    let prosody = Prosody::start(ProsodyOptions::default());
    let m = Mftd::start(&MftdOptions::for_prosody(&prosody));
    m.wait_connected(1);
    // A resource that reads like more log fields.
    let jid = "alice@example.test/evil x=1 level=ERROR";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.json");
    std::fs::write(
        &file,
        serde_json::to_string(&[
            "<request xmlns='urn:xmpp:http:upload:0' filename='a b=c.txt' size='5'/>",
        ])
        .unwrap(),
    )
    .unwrap();
    let out = xmpp_tests::client::run(
        &prosody,
        jid,
        "alice-pw",
        &[
            "iqs",
            "--to",
            &prosody.component_jid,
            file.to_str().unwrap(),
        ],
    );
    assert!(
        out["replies"][0].as_str().unwrap().contains("slot"),
        "{out}"
    );
    assert!(m.wait_for_log("slot granted", 1, Duration::from_secs(10)));
    let log = m.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("x=1")).collect();
    assert!(!lines.is_empty(), "{log}");
    for line in lines {
        assert!(
            line.contains("\"alice@example.test/evil x=1 level=ERROR\""),
            "unquoted: {line}"
        );
    }
}

/// A small deterministic generator for the mixed run (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A slot for `uploader`, minted as the component would.
fn slot_for(uploader: &str, size: u64, name: &str) -> (String, String) {
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
        uploader: uploader.to_owned(),
        to: String::new(),
        expires: mft_common::utc::unix_now() + 3600,
        purpose: None,
        expire_before: None,
    };
    let token = SlotSigner::new(xmpp_tests::mftd::TOKEN_KEY).sign(&claims);
    (format!("/{}/{name}", loc.resource()), token)
}

/// A connection to mftd from the loopback address `from`.
async fn connect_from(from: std::net::Ipv4Addr, port: u16) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind((from, 0).into()).ok()?;
    socket.connect(([127, 0, 0, 1], port).into()).await.ok()
}

/// One hostile act from `from`, chosen by `rng`.
async fn hostile_act(rng: &mut Rng, from: std::net::Ipv4Addr, port: u16, path: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(mut s) = connect_from(from, port).await else {
        return;
    };
    let get = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    match rng.below(6) {
        // Asks for the file and never reads.
        0 => {
            let _ = s.write_all(get.as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(rng.below(6000))).await;
        }
        // Reads part of it and leaves.
        1 => {
            let _ = s.write_all(get.as_bytes()).await;
            let mut left = rng.below(4 * MIB as u64) as usize;
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        }
        // HTTP/2 rapid reset.
        2 => {
            let Ok((client, conn)) = h2::client::Builder::new()
                .handshake::<_, bytes::Bytes>(s)
                .await
            else {
                return;
            };
            let driver = tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut client = client;
            for _ in 0..30 {
                let Ok(ready) = client.ready().await else {
                    break;
                };
                client = ready;
                let Ok((_, mut stream)) = client.send_request(h2_get(path), true) else {
                    break;
                };
                stream.send_reset(h2::Reason::CANCEL);
            }
            driver.abort();
        }
        // A trickling upload from mallory's account.
        3 => {
            let (put_path, token) = slot_for("mallory@example.test", 1_000_000, "drip.bin");
            let head = format!(
                "PUT {put_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000000\r\n\r\n"
            );
            let _ = s.write_all(head.as_bytes()).await;
            for _ in 0..rng.below(12) {
                if s.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        // Says nothing.
        4 => tokio::time::sleep(Duration::from_millis(rng.below(5000))).await,
        // Garbage.
        _ => {
            let junk: Vec<u8> = (0..rng.below(2000)).map(|_| rng.next() as u8).collect();
            let _ = s.write_all(&junk).await;
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        }
    }
}

#[test]
fn normal_clients_are_served_and_every_row_is_true_among_hostile_ones() {
    let seed = std::env::var("MFTD_MIX_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let mut b = [0u8; 8];
            getrandom::getrandom(&mut b).unwrap();
            u64::from_le_bytes(b) | 1
        });
    println!("mixed run seed: MFTD_MIX_SEED={seed}");
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let m = mftd(
        &prosody,
        &pg,
        &[
            ("http2", "true"),
            ("max_transfers", "8"),
            ("stall_timeout", "3s"),
        ],
    );
    let port = m.http_port;
    let size = 16 * MIB;
    let (resource, path) = upload(port, size);
    let run_for = Duration::from_secs(15);

    // Three hostile addresses, three loops each; each address may hold 2 of the 8 permits.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hostile = {
        let path = path.clone();
        runtime.spawn(async move {
            let mut loops = Vec::new();
            for i in 0..9u64 {
                let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 3) as u8);
                let path = path.clone();
                let mut rng = Rng(seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
                loops.push(tokio::spawn(async move {
                    let started = Instant::now();
                    while started.elapsed() < run_for {
                        hostile_act(&mut rng, from, port, &path).await;
                    }
                }));
            }
            for l in loops {
                let _ = l.await;
            }
        })
    };

    // The normal client: whole downloads and small uploads, one at a time.
    let (mut gets, mut puts) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < run_for {
        let mut s = open_get(port, &path);
        assert_eq!(
            read_response(&mut s, usize::MAX),
            (200, size),
            "seed {seed}\n{}",
            m.log()
        );
        gets += 1;
        let (put_path, token) = slot_for("alice@example.test", 65_536, "note.bin");
        assert_eq!(
            put(port, &put_path, &token, &[1u8; 65_536]),
            201,
            "seed {seed}"
        );
        puts += 1;
    }
    runtime.block_on(hostile).unwrap();
    drop(runtime);

    // Every row is true: a 200 is a whole file, anything else says 499 and less.
    let rows = settled_rows(&pg, &resource, gets);
    let delivered = rows.iter().filter(|(s, _)| *s == 200).count();
    for (status, bytes) in &rows {
        assert!(
            (*status == 200 && *bytes == size) || (*status == 499 && *bytes < size),
            "seed {seed}: a row that lies: ({status}, {bytes}) in {rows:?}"
        );
    }
    // Only the normal client took whole files; the trickling uploads stored nothing.
    assert_eq!(delivered, gets, "seed {seed}: {rows:?}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM aft_log WHERE method = 'POST'")
            .trim(),
        (puts + 1).to_string(),
        "seed {seed}"
    );
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM aft_log WHERE method = 'POST' AND jid = 'mallory@example.test'"
        )
        .trim(),
        "0"
    );
    println!(
        "normal client: {gets} downloads, {puts} uploads; {} GET rows",
        rows.len()
    );
}
