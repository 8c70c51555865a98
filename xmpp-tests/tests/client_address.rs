//! The client's real address behind a load balancer, against real parts:
//! HAProxy with `send-proxy-v2` in front of two mftd nodes sharing one
//! PostgreSQL, clients on distinct loopback addresses (127.0.0.2, .3, .4),
//! raw sockets for forged and hostile headers. What is checked is what
//! `aft_log.client_address` says, who gets a transfer permit, and that a
//! trusted peer's broken PROXY header holds nothing and delays no one.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use mft_storage::ChatType;
use mft_upload_http::{SlotClaims, SlotSigner};
use xmpp_tests::http::status_of;
use xmpp_tests::mftd::{binary, Mftd, MftdOptions, TOKEN_KEY};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::{free_port, wait_for_port, Guard};

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const UNTRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
/// HAProxy's (and the tests' "proxy" sockets') source address.
const PROXY: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A node with a local store under `parent` (nodes beside each other read
/// each other's files), trusting 127.0.0.1 only, plus `env` overrides.
fn node(parent: &Path, name: &str, pg: Option<&Postgres>, env: &[(&str, &str)]) -> Mftd {
    let opts = MftdOptions {
        router: format!("127.0.0.1:{}", free_port()),
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: String::new(),
        store: Some(format!(
            "kind = \"local\"\npath = \"{}\"",
            parent.join(name).display()
        )),
        extra: pg.map_or_else(String::new, |pg| {
            format!("[database]\nurl = \"{}\"\n", pg.url())
        }),
        http_port: None,
    };
    let mut vars = vec![
        ("MFTD_NODE__NAME".to_owned(), name.to_owned()),
        (
            "MFTD_HTTP__TRUSTED_PROXIES".to_owned(),
            "[\"127.0.0.1\"]".to_owned(),
        ),
    ];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Mftd::start_with(&opts, binary(), vars)
}

/// A slot of `size` bytes for `uploader`: (URL path, token).
fn slot(name: &str, size: u64, uploader: &str) -> (String, String) {
    let now = mft_common::utc::UtcTime::now();
    let loc = mft_storage::Location::new_random(
        ChatType::Im,
        &now.compact_date(),
        &format!("{:02}", now.hour),
    );
    let claims = SlotClaims {
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
    let token = SlotSigner::new(TOKEN_KEY).sign(&claims);
    (format!("/{}/{name}", loc.resource()), token)
}

/// A connection to 127.0.0.1:`port` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, port: u16) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    socket.connect((PROXY, port).into()).await.unwrap()
}

/// Sends `prefix` then `request` from `from`; the response's status (0 for
/// none: the connection was closed).
async fn exchange(from: Ipv4Addr, port: u16, prefix: &[u8], request: &[u8]) -> u16 {
    let mut s = connect_from(from, port).await;
    s.write_all(prefix).await.unwrap();
    let _ = s.write_all(request).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await;
    status_of(&raw)
}

fn get_request(path: &str, headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n").into_bytes()
}

fn put_request(path: &str, token: &str, body: &[u8], headers: &str) -> Vec<u8> {
    let mut r = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// HAProxy's `send-proxy` line for a client.
fn proxy_v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 40000 443\r\n").into_bytes()
}

/// HAProxy's `send-proxy-v2` header for an IPv4 client.
fn proxy_v2(client: Ipv4Addr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&client.octets());
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&40000u16.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

/// `curl` from `from` (`--interface`), returning the HTTP status.
fn curl(from: Ipv4Addr, args: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface"])
        .arg(from.to_string())
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// HAProxy in `mode http` with `send-proxy-v2` to every node, and a stats
/// page to see its health checks. Node 1 is checked on its HTTP port with
/// `port` set, which sends no PROXY header; node 2 without, so its checks
/// carry a v2 `LOCAL` header.
struct Haproxy {
    _guard: Guard,
    port: u16,
    stats: u16,
}

impl Haproxy {
    fn start(dir: &Path, nodes: &[&Mftd]) -> Haproxy {
        let (port, stats) = (free_port(), free_port());
        let mut cfg = format!(
            "global\n  maxconn 256\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
             listen stats\n  bind 127.0.0.1:{stats}\n  stats enable\n  stats uri /stats\n\
             frontend uploads\n  bind 127.0.0.1:{port}\n  option forwardfor\n  default_backend mftd\n\
             backend mftd\n  balance roundrobin\n  option httpchk OPTIONS /\n  http-check expect status 204\n\
             \x20 default-server inter 300ms fall 2 rise 1 send-proxy-v2\n"
        );
        for (i, n) in nodes.iter().enumerate() {
            let check = if i == 0 {
                format!("check port {}", n.http_port)
            } else {
                "check".to_owned()
            };
            cfg.push_str(&format!(
                "  server node_{} 127.0.0.1:{} {check}\n",
                i + 1,
                n.http_port
            ));
        }
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (Debian package haproxy) is installed");
        let h = Haproxy {
            _guard: Guard(Some(child)),
            port,
            stats,
        };
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "haproxy did not listen"
        );
        h
    }

    /// Each server's status as HAProxy's health checks see it.
    fn servers(&self) -> BTreeMap<String, String> {
        let (_, csv) =
            xmpp_tests::http::get_with(&format!("http://127.0.0.1:{}/stats;csv", self.stats), &[]);
        csv.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > 17 && f[0] == "mftd" && f[1].starts_with("node_"))
            .map(|f| (f[1].to_owned(), f[17].to_owned()))
            .collect()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// `aft_log` as (method, real file name) → client addresses, in order.
fn rows(pg: &Postgres) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in pg
        .psql("SELECT method, real_filename, client_address FROM aft_log ORDER BY aft_index")
        .lines()
    {
        let f: Vec<&str> = line.split('|').collect();
        out.entry((f[0].to_owned(), f[1].to_owned()))
            .or_default()
            .push(f[2].to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_with_send_proxy_v2_each_row_names_its_client() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let n1 = node(dir.path(), "node_1", Some(&pg), &[]);
    let n2 = node(dir.path(), "node_2", Some(&pg), &[]);
    let proxy = Haproxy::start(dir.path(), &[&n1, &n2]);
    // Both nodes answer HAProxy's checks: node 1's carry no PROXY header,
    // node 2's a v2 LOCAL one.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut servers = proxy.servers();
    while servers.values().filter(|s| *s == "UP").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "health checks never passed: {servers:?}\n{}\n{}",
            n1.log(),
            n2.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        servers = proxy.servers();
    }

    // A uploads two files and B two, each fetched by the other through
    // the proxy (round robin spreads them over both nodes); one fetch by A
    // forges both forwarding headers.
    let body = dir.path().join("body.txt");
    std::fs::write(&body, "a file through the proxy\n").unwrap();
    let size = std::fs::metadata(&body).unwrap().len();
    let mut expected: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (uploader, fetcher) in [(A, B), (B, A), (A, B), (B, A)] {
        let name = format!("from-{uploader}-{}.txt", expected.len());
        let (path, token) = slot(
            &name,
            size,
            &format!("u{}@example.test", uploader.octets()[3]),
        );
        let auth = format!("Authorization: Bearer {token}");
        let put = curl(
            uploader,
            &["-T", body.to_str().unwrap(), "-H", &auth, &proxy.url(&path)],
        );
        assert_eq!(put, 201, "{name}\n{}\n{}", n1.log(), n2.log());
        let mut get_args = vec![proxy.url(&path)];
        if fetcher == A {
            get_args.extend([
                "-H".into(),
                "X-Forwarded-For: 203.0.113.66".into(),
                "-H".into(),
                "Forwarded: for=203.0.113.66".into(),
            ]);
        }
        let get_args: Vec<&str> = get_args.iter().map(String::as_str).collect();
        assert_eq!(curl(fetcher, &get_args), 200, "{name}");
        expected.insert(("POST".into(), name.clone()), vec![uploader.to_string()]);
        expected.insert(("GET".into(), name), vec![fetcher.to_string()]);
    }
    let got = pg.psql_eventually("SELECT count(*) FROM aft_log WHERE http_status = 200", "4");
    assert_eq!(got.trim(), "4");
    assert_eq!(rows(&pg), expected);
    // Both nodes served clients (node 1, checked without a header, too).
    assert_eq!(
        pg.psql("SELECT string_agg(DISTINCT node, ',' ORDER BY node) FROM aft_log")
            .trim(),
        "node_1,node_2"
    );
    // The request log names the client and the proxy it came through.
    let logs = format!("{}{}", n1.log(), n2.log());
    assert!(logs.contains("client=127.0.0.2 via=127.0.0.1:"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_addresses_from_untrusted_peers_are_ignored() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let n = node(
        dir.path(),
        "node_1",
        Some(&pg),
        &[("MFTD_HTTP__MAX_TRANSFERS_PER_CLIENT", "1")],
    );
    let port = n.http_port;
    let forged = "X-Forwarded-For: 203.0.113.7\r\nForwarded: for=203.0.113.7\r\n";

    // An untrusted client forging both headers, on its upload and its download.
    let (path, token) = slot("forged.txt", 5, "u4@example.test");
    let put = put_request(&path, &token, b"hello", forged);
    assert_eq!(exchange(UNTRUSTED, port, b"", &put).await, 201);
    assert_eq!(
        exchange(UNTRUSTED, port, b"", &get_request(&path, forged)).await,
        200
    );
    // A PROXY header from an untrusted peer is not PROXY protocol to mftd,
    // only a bad request: 400, and no row.
    let get = get_request(&path, "");
    assert_eq!(
        exchange(UNTRUSTED, port, &proxy_v1("203.0.113.8"), &get).await,
        400
    );
    assert_eq!(
        exchange(
            UNTRUSTED,
            port,
            &proxy_v2(Ipv4Addr::new(203, 0, 113, 9)),
            &get
        )
        .await,
        400
    );
    // From the trusted address the same bytes are believed (so the checks
    // above could tell): the PROXY source, a lone X-Forwarded-For, and
    // two headers that disagree (neither is believed).
    assert_eq!(
        exchange(PROXY, port, &proxy_v1("203.0.113.8"), &get).await,
        200
    );
    let xff = get_request(&path, "X-Forwarded-For: 198.51.100.9\r\n");
    assert_eq!(exchange(PROXY, port, b"", &xff).await, 200);
    let disagree = get_request(
        &path,
        "X-Forwarded-For: 198.51.100.10\r\nForwarded: for=198.51.100.11\r\n",
    );
    assert_eq!(exchange(PROXY, port, b"", &disagree).await, 200);
    pg.psql_eventually(
        "SELECT count(*) FROM aft_log WHERE method = 'GET' AND http_status = 200",
        "4",
    );
    let mut want = BTreeMap::new();
    want.insert(
        ("POST".to_owned(), "forged.txt".to_owned()),
        vec!["127.0.0.4".to_owned()],
    );
    want.insert(
        ("GET".to_owned(), "forged.txt".to_owned()),
        ["127.0.0.4", "203.0.113.8", "198.51.100.9", "127.0.0.1"]
            .map(String::from)
            .to_vec(),
    );
    assert_eq!(rows(&pg), want, "{}", n.log());

    // The per-client share counts the client a trusted proxy names: with
    // one transfer per client, 192.0.2.10's stalled upload leaves
    // 192.0.2.11 served and refuses 192.0.2.10 a second one.
    let (p1, t1) = slot("held.bin", 1000, "held@example.test");
    let mut held = connect_from(PROXY, port).await;
    held.write_all(&proxy_v1("192.0.2.10")).await.unwrap();
    let mut head = put_request(&p1, &t1, &[0u8; 1000], "");
    head.truncate(head.len() - 990);
    held.write_all(&head).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (p2, t2) = slot("other.bin", 10, "other@example.test");
    let other = put_request(&p2, &t2, &[1u8; 10], "");
    assert_eq!(
        exchange(PROXY, port, &proxy_v1("192.0.2.11"), &other).await,
        201,
        "{}",
        n.log()
    );
    let (p3, t3) = slot("second.bin", 10, "second@example.test");
    let second = put_request(&p3, &t3, &[2u8; 10], "");
    assert_eq!(
        exchange(PROXY, port, &proxy_v1("192.0.2.10"), &second).await,
        503
    );
    drop(held);
    assert_eq!(
        pg.psql("SELECT client_address FROM aft_log WHERE real_filename = 'other.bin'")
            .trim(),
        "192.0.2.11"
    );
}

/// Reads from `s` until the server closes it (or `limit` passes); how long
/// after `since` that was.
async fn closed_after(mut s: TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::from_std(since + limit);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// `mftd_http_connections` from the admin listener.
fn open_connections(admin: u16) -> Option<u64> {
    let (_, metrics) =
        xmpp_tests::http::get_with(&format!("http://127.0.0.1:{admin}/metrics"), &[]);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("mftd_http_connections "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_peers_broken_proxy_header_holds_nothing_and_delays_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let admin_listen = format!("\"127.0.0.1:{admin}\"");
    let env = [
        ("MFTD_HTTP__FIRST_BYTE_TIMEOUT", "2s"),
        ("MFTD_HTTP__MAX_CONNECTIONS", "6"),
        ("MFTD_ADMIN__LISTEN", admin_listen.as_str()),
    ];
    let n = node(dir.path(), "node_1", None, &env);
    let port = n.http_port;
    let (path, token) = slot("served.txt", 5, "u2@example.test");
    assert_eq!(
        exchange(A, port, b"", &put_request(&path, &token, b"hello", "")).await,
        201
    );
    let get = get_request(&path, "");

    // A trusted peer starts three headers it never finishes: a v1 line
    // cut short, a v2 header cut short, and a whole v1 line trickled a
    // byte every 150 ms (it would take 7 s).
    let opened = Instant::now();
    let mut cut = connect_from(PROXY, port).await;
    cut.write_all(b"PROXY TCP4 192.0.2.").await.unwrap();
    let mut cut_v2 = connect_from(PROXY, port).await;
    cut_v2
        .write_all(&proxy_v2(Ipv4Addr::new(192, 0, 2, 1))[..20])
        .await
        .unwrap();
    let trickled = connect_from(PROXY, port).await;
    let (mut reader, mut writer) = trickled.into_split();
    let trickle = tokio::spawn(async move {
        for b in proxy_v1("192.0.2.99") {
            if writer.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    // Meanwhile everyone else is served at once: a client directly, and
    // one through the trusted peer with a whole header.
    let started = Instant::now();
    assert_eq!(exchange(B, port, b"", &get).await, 200);
    assert_eq!(
        exchange(PROXY, port, &proxy_v1("192.0.2.50"), &get).await,
        200
    );
    let served = started.elapsed();
    println!("two clients served in {served:?} beside three unfinished PROXY headers");
    assert!(served < Duration::from_secs(1), "{served:?}");
    // Each unfinished header is cut at the 2 s first-byte deadline (the
    // trickle too: the deadline is for the whole header, not per byte).
    let limit = Duration::from_secs(5);
    let cut_at = closed_after(cut, opened, limit).await;
    let cut_v2_at = closed_after(cut_v2, opened, limit).await;
    let mut buf = [0u8; 16];
    let trickle_at = tokio::time::timeout(limit, reader.read(&mut buf))
        .await
        .ok()
        .map(|_| opened.elapsed());
    trickle.abort();
    println!("unfinished headers closed after {cut_at:?}, {cut_v2_at:?}, {trickle_at:?}");
    for at in [cut_at, cut_v2_at, trickle_at] {
        let at = at.expect("an unfinished PROXY header kept its connection");
        assert!(
            at >= Duration::from_millis(1500) && at < Duration::from_secs(4),
            "{at:?}"
        );
    }

    // As many unfinished headers as http.max_connections: they hold their
    // places only until the deadline, then a client gets in.
    let mut stalled = Vec::new();
    for _ in 0..6 {
        let mut s = connect_from(PROXY, port).await;
        s.write_all(b"PROXY TCP6 2001:db8").await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(8), exchange(B, port, b"", &get)).await;
    let waited = started.elapsed();
    println!("with every connection held by an unfinished header, a client waited {waited:?}");
    assert_eq!(status.ok(), Some(200), "{}", n.log());
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    drop(stalled);
    // Nothing is left open on mftd's side.
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_connections(admin) != Some(0) {
        assert!(
            Instant::now() < deadline,
            "connections still open: {:?}",
            open_connections(admin)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n.log().contains("trusted proxy"), "{}", n.log());
}
