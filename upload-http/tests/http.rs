//! The HTTP endpoint against a real listener on 127.0.0.1:0 with a local
//! store, driven by a raw HTTP/1.1 client so malformed, short, slow and
//! mislabelled requests can be sent exactly as a bad client would.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mft_common::utc::unix_now;
use mft_storage::local::LocalBackend;
use mft_storage::meta::DESCRIPTION_XATTR;
use mft_storage::{ChatType, Location, Store};
use mft_upload_http::claim::RecipientSigner;
use mft_upload_http::urls::encode_segment;
use mft_upload_http::{serve, App, HttpSettings, SlotClaims, SlotSigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const KEY: &[u8] = b"http-test-key-0123456789";

struct Server {
    addr: SocketAddr,
    signer: SlotSigner,
    store: Store,
    node: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

async fn server_with(settings: HttpSettings, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    server_full(settings, tls, None).await
}

async fn server_full(
    settings: HttpSettings,
    tls: Option<tokio_rustls::TlsAcceptor>,
    recipients: Option<(RecipientSigner, bool)>,
) -> Server {
    let node = tempfile::tempdir().unwrap();
    let store = Store::new(LocalBackend::new(node.path()).unwrap());
    let signer = SlotSigner::new(KEY);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = App::new(
        signer.clone(),
        store.clone(),
        settings,
        None,
        "node_1".into(),
    );
    let app = Arc::new(match recipients {
        Some((r, require)) => app.with_recipients(r, require),
        None => app,
    });
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, app, tls, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        signer,
        store,
        node,
        _stop: stop,
    }
}

async fn server() -> Server {
    server_with(HttpSettings::default(), None).await
}

struct Slot {
    path: String,
    token: String,
    claims: SlotClaims,
}

impl Server {
    async fn slot(&self, name: &str, size: u64, content_type: Option<&str>) -> Slot {
        let loc = self.store.allocate(ChatType::Im).await.unwrap();
        let claims = SlotClaims {
            resource: loc.resource().to_owned(),
            filename: name.to_owned(),
            size,
            content_type: content_type.map(str::to_owned),
            uploader: "alice@example.test/laptop".into(),
            to: String::new(),
            expires: unix_now() + 300,
            purpose: None,
            expire_before: None,
        };
        Slot {
            path: format!("/{}/{}", loc.resource(), encode_segment(name)),
            token: self.signer.sign(&claims),
            claims,
        }
    }
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Sends `head` (request line and headers, without the blank line) and
/// `body`, then reads the whole answer (the request asks to close).
async fn send(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s.write_all(body).await.unwrap();
    read_reply(&mut s).await
}

async fn read_reply(s: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw)).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply { status, head, body }
}

async fn put(srv: &Server, slot: &Slot, body: &[u8], extra: &str) -> Reply {
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}{extra}",
        slot.path,
        slot.token,
        body.len()
    );
    send(srv.addr, &head, body).await
}

async fn get(srv: &Server, path: &str, extra: &str) -> Reply {
    send(
        srv.addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x{extra}"),
        b"",
    )
    .await
}

/// Every file below the node directory, temporary ones included.
fn all_files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 253) as u8).collect()
}

#[tokio::test]
async fn put_then_get_head_and_ranges() {
    let srv = server().await;
    let data = pattern(3 * 1024 * 1024 + 17);
    let slot = srv
        .slot(
            "report final.pdf",
            data.len() as u64,
            Some("application/pdf"),
        )
        .await;
    let r = put(&srv, &slot, &data, "\r\nContent-Type: application/pdf").await;
    assert_eq!(r.status, 201, "{}", r.head);

    let r = get(&srv, &slot.path, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("content-type").as_deref(), Some("application/pdf"));
    assert_eq!(r.header("content-length"), Some(data.len().to_string()));
    assert_eq!(
        r.header("content-security-policy").as_deref(),
        Some("default-src 'none'; frame-ancestors 'none'; form-action 'none'; sandbox")
    );
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(
        r.header("content-disposition").as_deref(),
        Some("attachment; filename*=UTF-8''report%20final.pdf")
    );
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(r.header("etag").is_some());

    let head = send(
        srv.addr,
        &format!("HEAD {} HTTP/1.1\r\nHost: x", slot.path),
        b"",
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(data.len().to_string()));
    assert!(head.body.is_empty());

    let r = get(&srv, &slot.path, "\r\nRange: bytes=2-5").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[2..6]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 2-5/{}", data.len()))
    );
    let r = get(&srv, &slot.path, "\r\nRange: bytes=-4").await;
    assert_eq!(r.body, &data[data.len() - 4..]);
    let r = get(&srv, &slot.path, "\r\nRange: bytes=99999999-").await;
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{}", data.len()))
    );
}

#[tokio::test]
async fn token_problems_are_refused_and_store_nothing() {
    let srv = server().await;
    let data = pattern(100);
    let slot = srv.slot("a.bin", 100, None).await;

    let no_token = send(
        srv.addr,
        &format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\nContent-Length: 100",
            slot.path
        ),
        &data,
    )
    .await;
    assert_eq!(no_token.status, 401);
    assert_eq!(
        no_token.header("www-authenticate").as_deref(),
        Some("Bearer")
    );

    let garbage = Slot {
        token: "v1.nonsense.xyz".into(),
        ..slot_copy(&slot)
    };
    assert_eq!(put(&srv, &garbage, &data, "").await.status, 403);

    let other_key = SlotSigner::new(b"some-other-key-0123456789");
    let forged = Slot {
        token: other_key.sign(&slot.claims),
        ..slot_copy(&slot)
    };
    assert_eq!(put(&srv, &forged, &data, "").await.status, 403);

    let mut expired_claims = slot.claims.clone();
    expired_claims.expires = unix_now() - 1;
    let expired = Slot {
        token: srv.signer.sign(&expired_claims),
        ..slot_copy(&slot)
    };
    let r = put(&srv, &expired, &data, "").await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("expired"));

    // A genuine token used on another URL.
    let other = srv.slot("b.bin", 100, None).await;
    let swapped = Slot {
        token: other.token.clone(),
        ..slot_copy(&slot)
    };
    assert_eq!(put(&srv, &swapped, &data, "").await.status, 403);
    let renamed = Slot {
        path: slot.path.replace("a.bin", "evil.html"),
        ..slot_copy(&slot)
    };
    assert_eq!(put(&srv, &renamed, &data, "").await.status, 403);

    assert!(
        all_files(srv.node.path()).is_empty(),
        "{:?}",
        all_files(srv.node.path())
    );
}

fn slot_copy(s: &Slot) -> Slot {
    Slot {
        path: s.path.clone(),
        token: s.token.clone(),
        claims: s.claims.clone(),
    }
}

#[tokio::test]
async fn wrong_length_or_type_is_refused() {
    let srv = server().await;
    let slot = srv.slot("a.txt", 10, Some("text/plain")).await;
    let auth = format!("Authorization: Bearer {}", slot.token);

    let chunked = send(
        srv.addr,
        &format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\n{auth}\r\nTransfer-Encoding: chunked",
            slot.path
        ),
        b"a\r\n0123456789\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(chunked.status, 411);
    assert_eq!(
        put(&srv, &slot, &pattern(11), "\r\nContent-Type: text/plain")
            .await
            .status,
        413
    );
    assert_eq!(
        put(&srv, &slot, &pattern(9), "\r\nContent-Type: text/plain")
            .await
            .status,
        400
    );
    let r = put(&srv, &slot, &pattern(10), "\r\nContent-Type: text/html").await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("Content-Type"));
    assert!(all_files(srv.node.path()).is_empty());
    // The right request still works afterwards.
    assert_eq!(
        put(&srv, &slot, &pattern(10), "\r\nContent-Type: text/plain")
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn a_body_that_ends_early_leaves_nothing_behind() {
    let srv = server().await;
    let slot = srv.slot("a.bin", 1_000_000, None).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 1000000\r\n\r\n",
        slot.path, slot.token
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&pattern(300_000)).await.unwrap();
    s.shutdown().await.unwrap();
    let r = read_reply(&mut s).await;
    assert!(r.status == 400 || r.status == 0, "{}", r.head);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        all_files(srv.node.path())
            .iter()
            .all(|f| Path::new(f).is_dir()),
        "{:?}",
        all_files(srv.node.path())
    );
    // The slot is still usable.
    assert_eq!(put(&srv, &slot, &pattern(1_000_000), "").await.status, 201);
}

#[tokio::test]
async fn a_used_slot_cannot_overwrite() {
    let srv = server().await;
    let slot = srv.slot("a.bin", 5, None).await;
    assert_eq!(put(&srv, &slot, b"first", "").await.status, 201);
    let r = put(&srv, &slot, b"later", "").await;
    assert_eq!(r.status, 409);
    assert_eq!(get(&srv, &slot.path, "").await.body, b"first");
    // Nothing extra stayed behind: one file, its description on it.
    let files = all_files(srv.node.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let described = rustix::fs::getxattr(&files[0], DESCRIPTION_XATTR, &mut [0u8; 4096][..]);
    assert!(described.is_ok_and(|n| n > 0), "{files:?}");
}

#[tokio::test]
async fn legacy_clients_may_send_the_token_in_the_query() {
    let srv = server().await;
    let slot = srv.slot("a.bin", 5, None).await;
    let head = format!(
        "PUT {}?token={} HTTP/1.1\r\nHost: x\r\nContent-Length: 5",
        slot.path, slot.token
    );
    assert_eq!(send(srv.addr, &head, b"hello").await.status, 201);
}

#[tokio::test]
async fn options_cors_unknown_names_and_path_tricks() {
    let srv = server().await;
    let r = send(
        srv.addr,
        "OPTIONS /anything/x HTTP/1.1\r\nHost: x\r\nOrigin: https://web.example",
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("PUT"));
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Authorization"));

    let r = send(srv.addr, "DELETE /x/y HTTP/1.1\r\nHost: x", b"").await;
    assert_eq!(r.status, 405);

    let unknown = Location::new_random(ChatType::Im, "20260101", "00");
    for path in [
        format!("/{}/x.txt", unknown.resource()),
        "/../../etc/passwd".into(),
        "/%2e%2e/%2e%2e/etc/passwd".into(),
        "/20261126-00-im-..%2F..%2F..%2Fetc%2Fpasswd/x".into(),
        "/".into(),
    ] {
        assert_eq!(get(&srv, &path, "").await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn a_silent_client_times_out() {
    let srv = server_with(
        HttpSettings {
            body_idle_timeout: Duration::from_millis(500),
            ..HttpSettings::default()
        },
        None,
    )
    .await;
    let slot = srv.slot("a.bin", 100, None).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100\r\n\r\n",
        slot.path, slot.token
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&pattern(10)).await.unwrap();
    let r = read_reply(&mut s).await;
    assert_eq!(r.status, 408, "{}", r.head);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(all_files(srv.node.path())
        .iter()
        .all(|f| Path::new(f).is_dir()));
}

/// HTTPS through curl asking for HTTP/2: by default the endpoint offers only
/// HTTP/1.1 (ALPN) and curl falls back to it; with `http2` on, the same
/// upload and download run over HTTP/2.
#[tokio::test]
async fn https_through_curl_speaks_http2_only_when_enabled() {
    https_through_curl(false, "1.1").await;
    https_through_curl(true, "2").await;
}

async fn https_through_curl(http2: bool, want_version: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl CLI")
        .status
        .success();
    assert!(ok);
    let (tls, _) = mft_upload_http::tls::acceptor(&cert, &key, http2).unwrap();
    let settings = HttpSettings {
        http2,
        ..HttpSettings::default()
    };
    let srv = server_with(settings, Some(tls)).await;
    let file = dir.path().join("payload");
    let data = pattern(2 * 1024 * 1024);
    std::fs::write(&file, &data).unwrap();
    let slot = srv.slot("p.bin", data.len() as u64, None).await;
    let url = format!("https://localhost:{}{}", srv.addr.port(), slot.path);
    let curl = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args(args)
                .output()
                .expect("curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let put = curl(vec![
        "-sk".into(),
        "--http2".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code} %{http_version}".into(),
        "-H".into(),
        format!("Authorization: Bearer {}", slot.token),
        "-T".into(),
        file.display().to_string(),
        "--resolve".into(),
        format!("localhost:{}:127.0.0.1", srv.addr.port()),
        url.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(put, format!("201 {want_version}"));
    let back = dir.path().join("back");
    let got = curl(vec![
        "-sk".into(),
        "--http2".into(),
        "-o".into(),
        back.display().to_string(),
        "-w".into(),
        "%{http_code} %{http_version}".into(),
        "--resolve".into(),
        format!("localhost:{}:127.0.0.1", srv.addr.port()),
        url,
    ])
    .await
    .unwrap();
    assert_eq!(got, format!("200 {want_version}"));
    assert_eq!(std::fs::read(back).unwrap(), data);
}

/// A normal upload and download, each within `limit`.
async fn normal_transfer_works(srv: &Server, limit: Duration) {
    let slot = srv.slot("ok.bin", 5000, None).await;
    let body = pattern(5000);
    let done = tokio::time::timeout(limit, async {
        let r = put(srv, &slot, &body, "").await;
        assert_eq!(r.status, 201, "{}", r.head);
        let r = get(srv, &slot.path, "").await;
        assert_eq!(r.status, 200, "{}", r.head);
        r.body
    })
    .await
    .expect("a normal upload and download did not get through");
    assert_eq!(done, body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_and_capped() {
    let srv = server_with(
        HttpSettings {
            first_byte_timeout: Duration::from_millis(800),
            max_connections: 100,
            ..HttpSettings::default()
        },
        None,
    )
    .await;
    // More silent sockets than the cap: they hold their places only until
    // the first-byte deadline, then normal clients get in.
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(srv.addr).await.unwrap());
    }
    normal_transfer_works(&srv, Duration::from_secs(15)).await;
    // The first ones were closed by the server (EOF), not left open.
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), silent[0].read(&mut buf))
        .await
        .expect("the server never closed a silent socket");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let srv = server_with(
        HttpSettings {
            body_idle_timeout: Duration::from_millis(700),
            ..HttpSettings::default()
        },
        None,
    )
    .await;
    let slot = srv.slot("k.bin", 10, None).await;
    assert_eq!(put(&srv, &slot, &pattern(10), "").await.status, 201);
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", slot.path).as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "keep-alive connection left open");
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_upload_falls_below_the_rate_floor() {
    let srv = server_with(
        HttpSettings {
            min_rate: 1000,
            rate_grace: Duration::from_secs(1),
            ..HttpSettings::default()
        },
        None,
    )
    .await;
    let slot = srv.slot("slow.bin", 10_000, None).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 10000\r\n\r\n",
        slot.path, slot.token
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let trickle = async {
        // One byte every 300 ms keeps the connection "active" forever.
        for _ in 0..100 {
            if s.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(4), trickle).await;
    let r = read_reply(&mut s).await;
    assert_eq!(r.status, 408, "{}", r.head);
    assert!(started.elapsed() < Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(all_files(srv.node.path())
        .iter()
        .all(|f| Path::new(f).is_dir()));
}

#[test]
fn stalled_transfers_do_not_use_up_the_blocking_pool() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let srv = server().await;
        let big = srv.slot("big.bin", 4 << 20, None).await;
        assert_eq!(put(&srv, &big, &pattern(4 << 20), "").await.status, 201);
        let mut held = Vec::new();
        // Uploads that sent a little and went quiet.
        for i in 0..20 {
            let slot = srv.slot(&format!("t{i}.bin"), 1000, None).await;
            let mut s = TcpStream::connect(srv.addr).await.unwrap();
            let head = format!(
                "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 1000\r\n\r\nabc",
                slot.path, slot.token
            );
            s.write_all(head.as_bytes()).await.unwrap();
            held.push(s);
        }
        // Downloads that never read.
        for _ in 0..20 {
            let mut s = TcpStream::connect(srv.addr).await.unwrap();
            s.write_all(format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", big.path).as_bytes())
                .await
                .unwrap();
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        normal_transfer_works(&srv, Duration::from_secs(15)).await;
        drop(held);
    });
}

#[tokio::test]
async fn html_in_disguise_is_an_attachment_in_a_sandbox() {
    let srv = server().await;
    for (declared, sent) in [
        (None, "text/plain;,text/html"),
        (None, "text/html"),
        (None, "image/svg+xml"),
    ] {
        let slot = srv.slot("page.txt", 20, declared).await;
        let r = put(
            &srv,
            &slot,
            b"<form>phish</form>..",
            &format!("\r\nContent-Type: {sent}"),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.head);
        let r = get(&srv, &slot.path, "").await;
        let disposition = r.header("content-disposition").unwrap();
        assert!(
            disposition.starts_with("attachment"),
            "{sent}: {disposition}"
        );
        let ct = r.header("content-type").unwrap();
        assert!(!ct.contains(','), "{ct}");
        let csp = r.header("content-security-policy").unwrap();
        assert!(
            csp.contains("sandbox") && csp.contains("form-action 'none'"),
            "{csp}"
        );
    }
    // A plain image stays inline.
    let slot = srv.slot("p.png", 4, Some("image/png")).await;
    assert_eq!(
        put(&srv, &slot, b"\x89PNG", "\r\nContent-Type: image/png")
            .await
            .status,
        201
    );
    let r = get(&srv, &slot.path, "").await;
    assert!(r
        .header("content-disposition")
        .unwrap()
        .starts_with("inline"));
}

#[tokio::test]
async fn conditional_and_case_insensitive_range_requests() {
    let srv = server().await;
    let slot = srv.slot("c.bin", 100, None).await;
    assert_eq!(put(&srv, &slot, &pattern(100), "").await.status, 201);
    let r = get(&srv, &slot.path, "").await;
    let etag = r.header("etag").expect("etag");
    let r = get(&srv, &slot.path, &format!("\r\nIf-None-Match: {etag}")).await;
    assert_eq!(r.status, 304, "{}", r.head);
    assert!(r.body.is_empty());
    let r = get(&srv, &slot.path, "\r\nIf-None-Match: \"other\"").await;
    assert_eq!(r.status, 200);
    let r = get(&srv, &slot.path, "\r\nRange: Bytes=10-19").await;
    assert_eq!(r.status, 206, "{}", r.head);
    assert_eq!(r.body, &pattern(100)[10..20]);
}

#[tokio::test]
async fn recipient_claims_are_checked_and_can_be_required() {
    let key = RecipientSigner::new(b"share-key-0123456789");
    let srv = server_full(HttpSettings::default(), None, Some((key.clone(), true))).await;
    let slot = srv.slot("r.bin", 10, None).await;
    assert_eq!(put(&srv, &slot, &pattern(10), "").await.status, 201);
    // Required: a URL naming nobody is refused.
    assert_eq!(get(&srv, &slot.path, "").await.status, 403);
    let claim = key.claim(&slot.claims.resource, "bob@example.test");
    let r = get(&srv, &format!("{}?for={claim}", slot.path), "").await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, pattern(10));
    // Someone else's key, or a claim for another file: refused.
    let other = RecipientSigner::new(b"another-key-0123456789")
        .claim(&slot.claims.resource, "bob@example.test");
    assert_eq!(
        get(&srv, &format!("{}?for={other}", slot.path), "")
            .await
            .status,
        403
    );
    let elsewhere = key.claim("20200101-00-im-AAAAAAAAAAAAAAAAAAAAAA", "bob@example.test");
    assert_eq!(
        get(&srv, &format!("{}?for={elsewhere}", slot.path), "")
            .await
            .status,
        403
    );
}
