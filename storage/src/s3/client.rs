//! One S3 endpoint spoken to over HTTP/1.1 (TLS when the endpoint is
//! `https`, trusting only the configured CA when one is given): requests
//! signed with SigV4, path-style addressing, a small pool of idle
//! connections, and every exchange bounded by the I/O timeout. The
//! requests run on a runtime of their own, so the blocking file
//! interface ([`Session`](crate::backend::Session)) can wait on them from
//! the store's blocking threads.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::sigv4::{self, Credentials, ToSign, UNSIGNED_PAYLOAD};
use super::xml;
use crate::StoreError;

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 16;

/// The largest answer read whole (a listing of 1000 keys is about 300 KiB):
/// a larger one is a broken or hostile service, not held in memory.
const MAX_ANSWER: usize = 8 << 20;

/// Where the S3 service listens, read from `store.s3.endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https` (else plain HTTP).
    pub https: bool,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `http://host:port` or `https://host[:port]` (no path).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{url:?} must start with http:// or https://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?} names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "{url:?} must be the service's address only (the bucket is store.s3.bucket)"
            ));
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Endpoint { https, host, port })
    }

    /// The `Host` header value.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.https, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

/// How to reach and sign for one bucket.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The service.
    pub endpoint: Endpoint,
    /// The bucket.
    pub bucket: String,
    /// The region signed for (`garage` for Garage, `us-east-1` …).
    pub region: String,
    /// The access key.
    pub credentials: Credentials,
    /// TLS trust, for `https` endpoints.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Limit for connecting.
    pub connect_timeout: Duration,
    /// Limit for each request's answer and each piece of a body.
    pub io_timeout: Duration,
}

/// A signed-request client for one bucket.
pub struct Client {
    settings: ClientSettings,
    idle: Mutex<Vec<SendRequest<Chunks>>>,
}

/// An answer whose body has not been read yet; it holds its connection,
/// which goes back to the pool once the body is read to its end.
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    body: Incoming,
    conn: Option<SendRequest<Chunks>>,
}

/// A request body made of pieces sent one after the other: a part is
/// gathered in 1 MiB pieces, never copied into one large buffer (large
/// allocations, freed on another thread, were what the allocator kept).
#[derive(Default, Clone)]
pub struct Chunks {
    pieces: std::collections::VecDeque<Bytes>,
    left: u64,
}

impl Chunks {
    /// Appends a piece (an empty one is dropped).
    pub fn push(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        self.left += piece.len() as u64;
        self.pieces.push_back(piece);
    }

    /// Bytes in all the pieces.
    pub fn len(&self) -> u64 {
        self.left
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.left == 0
    }
}

impl From<Bytes> for Chunks {
    fn from(piece: Bytes) -> Self {
        let mut c = Chunks::default();
        c.push(piece);
        c
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let piece = self.pieces.pop_front();
        if let Some(p) = &piece {
            self.left -= p.len() as u64;
        }
        std::task::Poll::Ready(piece.map(|p| Ok(http_body::Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// The runtime the S3 requests run on: two workers, started on first use and
/// kept for the life of the process.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mftd-s3")
            .enable_all()
            .build()
            .expect("starting the S3 I/O runtime")
    })
}

/// Runs `work` on the S3 runtime and waits for it: for blocking threads.
pub fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    runtime().block_on(work)
}

/// Starts `work` on the S3 runtime without waiting (from any thread,
/// async ones included).
pub fn runtime_spawn<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    runtime().spawn(work)
}

impl Client {
    /// A client; nothing is connected until the first request.
    pub fn new(settings: ClientSettings) -> Client {
        Client {
            settings,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Sends one signed request for `key` (empty: the bucket itself).
    pub async fn send(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: impl Into<Chunks>,
    ) -> Result<Reply, StoreError> {
        let s = &self.settings;
        let path = if key.is_empty() {
            format!("/{}", sigv4::encode(&s.bucket, true))
        } else {
            format!(
                "/{}/{}",
                sigv4::encode(&s.bucket, true),
                sigv4::encode(key, false)
            )
        };
        let query_string = sigv4::canonical_query(query);
        let amz_date = amz_date();
        let host = s.endpoint.authority();
        let mut signed: Vec<(&str, &str)> = vec![
            ("host", &host),
            ("x-amz-content-sha256", UNSIGNED_PAYLOAD),
            ("x-amz-date", &amz_date),
        ];
        signed.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
        let authorization = sigv4::authorization(
            &s.credentials,
            &s.region,
            &amz_date,
            &ToSign {
                method: method.as_str(),
                path: &path,
                query,
                headers: &signed,
                payload_hash: UNSIGNED_PAYLOAD,
            },
        );
        let uri = if query_string.is_empty() {
            path
        } else {
            format!("{path}?{query_string}")
        };
        let request = |body: Chunks| {
            let mut request = Request::builder().method(method.clone()).uri(&uri);
            for (name, value) in &signed {
                request = request.header(*name, *value);
            }
            request
                .header("authorization", authorization.as_str())
                .body(body)
                .map_err(|e| {
                    StoreError::io(format!("building {method} {uri}"), std::io::Error::other(e))
                })
        };
        let body: Chunks = body.into();
        let (mut conn, reused) = self.checkout().await?;
        let what = || format!("{method} {uri} at {}", s.endpoint);
        let mut answer =
            tokio::time::timeout(s.io_timeout, conn.send_request(request(body.clone())?)).await;
        if reused
            && matches!(&answer, Ok(Err(e)) if e.is_canceled() || e.is_closed() || e.is_incomplete_message())
        {
            // The service closed an idle connection just as it was reused
            // (services close idle ones after a while): once more, on a new one.
            conn = self.connect().await?;
            answer = tokio::time::timeout(s.io_timeout, conn.send_request(request(body)?)).await;
        }
        let response = answer
            .map_err(|_| {
                StoreError::unavailable(format!(
                    "the S3 service did not answer {} within {:?}",
                    what(),
                    s.io_timeout
                ))
            })?
            .map_err(|e| StoreError::unavailable_because(what(), e))?;
        let (parts, body) = response.into_parts();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            conn: Some(conn),
        })
    }

    /// Sends a request and reads its whole (small) answer; a status outside
    /// `ok` is an error saying what S3 said.
    pub async fn call(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: impl Into<Chunks>,
        ok: &[u16],
    ) -> Result<(HeaderMap, Bytes), StoreError> {
        let what = format!("{method} {key:?}");
        let reply = self.send(method, key, query, headers, body).await?;
        let status = reply.status;
        let headers = reply.headers.clone();
        let bytes = self.read_all(reply).await?;
        if ok.contains(&status.as_u16()) {
            return Ok((headers, bytes));
        }
        Err(refusal(&what, key, status, &bytes))
    }

    /// Reads an answer's body to its end and returns the connection to the
    /// pool.
    pub async fn read_all(&self, mut reply: Reply) -> Result<Bytes, StoreError> {
        let limit = self.settings.io_timeout;
        let collected = tokio::time::timeout(limit, async {
            let mut all = bytes::BytesMut::new();
            while let Some(frame) = reply.body.frame().await {
                let frame =
                    frame.map_err(|e| StoreError::unavailable_because("reading an S3 answer", e))?;
                if let Ok(data) = frame.into_data() {
                    if all.len() + data.len() > MAX_ANSWER {
                        return Err(StoreError::unavailable(format!(
                            "the S3 service sent an answer over {} MiB where a short one was expected",
                            MAX_ANSWER >> 20
                        )));
                    }
                    all.extend_from_slice(&data);
                }
            }
            Ok(all.freeze())
        })
        .await
        .map_err(|_| StoreError::unavailable("the S3 service stopped sending an answer"))??;
        self.checkin(reply.conn.take());
        Ok(collected)
    }

    /// The next piece of a streamed body (`None` at its end, when the
    /// connection goes back to the pool).
    pub async fn next_piece(&self, reply: &mut Reply) -> Result<Option<Bytes>, StoreError> {
        loop {
            let frame = tokio::time::timeout(self.settings.io_timeout, reply.body.frame())
                .await
                .map_err(|_| {
                    StoreError::unavailable(format!(
                        "the S3 service sent nothing for {:?}",
                        self.settings.io_timeout
                    ))
                })?;
            match frame {
                None => {
                    self.checkin(reply.conn.take());
                    return Ok(None);
                }
                Some(Err(e)) => {
                    return Err(StoreError::unavailable_because("reading an object", e));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
            }
        }
    }

    fn checkin(&self, conn: Option<SendRequest<Chunks>>) {
        let Some(conn) = conn else { return };
        if conn.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// An idle connection (`true`: reused) or a new one.
    async fn checkout(&self) -> Result<(SendRequest<Chunks>, bool), StoreError> {
        loop {
            let candidate = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match candidate {
                Some(conn) if conn.is_ready() => return Ok((conn, true)),
                Some(_) => continue,
                None => break,
            }
        }
        Ok((self.connect().await?, false))
    }

    async fn connect(&self) -> Result<SendRequest<Chunks>, StoreError> {
        let s = &self.settings;
        let unreachable = |e: std::io::Error| {
            StoreError::unavailable_because(
                format!("connecting to the S3 service {}", s.endpoint),
                e,
            )
        };
        let tcp = tokio::time::timeout(
            s.connect_timeout,
            TcpStream::connect((s.endpoint.host.as_str(), s.endpoint.port)),
        )
        .await
        .map_err(|_| {
            StoreError::unavailable(format!(
                "the S3 service {} did not accept a connection within {:?}",
                s.endpoint, s.connect_timeout
            ))
        })?
        .map_err(unreachable)?;
        let _ = tcp.set_nodelay(true);
        let handshake = |e: hyper::Error| {
            StoreError::unavailable_because(format!("HTTP with the S3 service {}", s.endpoint), e)
        };
        if s.endpoint.https {
            let config = s.tls.clone().ok_or_else(|| {
                StoreError::unavailable("an https S3 endpoint needs store.s3.ca_file")
            })?;
            let name = ServerName::try_from(s.endpoint.host.clone()).map_err(|e| {
                unreachable(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
            })?;
            let tls = tokio::time::timeout(
                s.connect_timeout,
                tokio_rustls::TlsConnector::from(config).connect(name, tcp),
            )
            .await
            .map_err(|_| StoreError::unavailable("the S3 service's TLS handshake timed out"))?
            .map_err(unreachable)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(handshake)?;
            tokio::spawn(conn);
            Ok(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(handshake)?;
            tokio::spawn(conn);
            Ok(sender)
        }
    }
}

/// The error for an answer outside the expected statuses, with S3's own
/// code and message and what the operator can do.
pub fn refusal(what: &str, key: &str, status: StatusCode, body: &[u8]) -> StoreError {
    let text = String::from_utf8_lossy(body);
    let code = xml::first(&text, "Code").unwrap_or_default();
    let message = xml::first(&text, "Message").unwrap_or_default();
    let said = format!("{what}: {status} {code} {message}")
        .trim()
        .to_owned();
    match status.as_u16() {
        404 if code != "NoSuchBucket" => StoreError::NotFound(key.to_owned()),
        409 | 412 => StoreError::AlreadyExists(key.to_owned()),
        401 | 403 => StoreError::unavailable(format!(
            "{said} (check store.s3.access_key_id, the secret key and the key's permissions on the bucket)"
        )),
        404 => StoreError::unavailable(format!("{said} (does store.s3.bucket exist?)")),
        500..=599 => StoreError::unavailable(said),
        _ => StoreError::io(said, std::io::Error::other("refused by the S3 service")),
    }
}

/// Now as SigV4 wants it: `YYYYMMDDTHHMMSSZ`.
fn amz_date() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_name_their_host() {
        let e = Endpoint::parse("http://127.0.0.1:3900").unwrap();
        assert_eq!(
            (e.https, e.host.as_str(), e.port),
            (false, "127.0.0.1", 3900)
        );
        assert_eq!(e.authority(), "127.0.0.1:3900");
        let e = Endpoint::parse("https://s3.example.com/").unwrap();
        assert_eq!(
            (e.https, e.port, e.authority().as_str()),
            (true, 443, "s3.example.com")
        );
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://x:1/bucket").is_err());
    }

    /// A service that answers a listing with an endless body, or not at
    /// all, is refused within bounds: at most `MAX_ANSWER` held, at most
    /// the I/O timeout waited.
    #[test]
    fn a_hostile_service_cannot_make_the_client_hold_memory_or_hang() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let mut s = stream.unwrap();
                let mut head = [0u8; 4096];
                let _ = s.read(&mut head);
                if i == 0 {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
                    let chunk = vec![b'x'; 1 << 20];
                    while s.write_all(&chunk).is_ok() {}
                } else {
                    // Accept, read, never answer.
                    std::thread::sleep(Duration::from_secs(5));
                }
            }
        });
        let client = test_client(port);
        let list = || {
            block_on(client.call(
                Method::GET,
                "",
                &[("list-type", "2")],
                &[],
                Bytes::new(),
                &[200],
            ))
        };
        let e = list().unwrap_err();
        assert!(e.to_string().contains("over 8 MiB"), "{e}");
        let started = std::time::Instant::now();
        let e = list().unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(started.elapsed() < Duration::from_secs(4), "{e}");
    }

    /// A service that closes each connection right after answering (as
    /// services do with idle ones) never fails a request: a reused
    /// connection found closed is replaced once.
    #[test]
    fn a_connection_the_service_closed_is_replaced() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut s = stream.unwrap();
                let mut head = [0u8; 4096];
                let _ = s.read(&mut head);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                // Closed without saying so (no `Connection: close`).
            }
        });
        let client = test_client(port);
        for i in 0..40 {
            let answer = block_on(client.call(Method::GET, "k", &[], &[], Bytes::new(), &[200]));
            assert_eq!(answer.unwrap().1.as_ref(), b"ok", "request {i}");
        }
    }

    fn test_client(port: u16) -> Client {
        Client::new(ClientSettings {
            endpoint: Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            bucket: "b".into(),
            region: "r".into(),
            credentials: Credentials {
                access_key_id: "k".into(),
                secret_access_key: "s".into(),
            },
            tls: None,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(2),
        })
    }

    #[test]
    fn refusals_say_what_s3_said_and_what_to_check() {
        let body = b"<Error><Code>AccessDenied</Code><Message>Forbidden</Message></Error>";
        let e = refusal("PUT \"k\"", "k", StatusCode::FORBIDDEN, body);
        assert!(e.is_unavailable());
        assert!(e.to_string().contains("AccessDenied"), "{e}");
        assert!(e.to_string().contains("store.s3.access_key_id"), "{e}");
        assert!(refusal(
            "GET",
            "k",
            StatusCode::NOT_FOUND,
            b"<Error><Code>NoSuchKey</Code></Error>"
        )
        .is_not_found());
        assert!(refusal("PUT", "k", StatusCode::PRECONDITION_FAILED, b"").is_already_exists());
    }
}
