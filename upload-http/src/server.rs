//! The HTTP(S) endpoint: accepts connections (at most `max_connections` at
//! once, each under [`crate::conn::Deadlines`]), speaks HTTP/1.1 and HTTP/2
//! (ALPN over TLS, prior knowledge in clear), routes PUT ([`crate::put`]) and
//! GET/HEAD ([`crate::get`]) and OPTIONS, and shuts down gracefully: stop
//! accepting, let transfers in flight finish until a deadline, then drop the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use mft_storage::transfer_log::TransferLog;
use mft_storage::Store;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use mft_metrics::{metrics, Direction};
use mft_storage::error::chain;

use crate::body::ResponseBody;
use crate::conn::Deadlines;
use crate::error::HttpError;
use crate::headers::add_cors;
use crate::token::SlotSigner;
use crate::{get, put};

/// Knobs of the HTTP side.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The path part of the public URL (`/` or e.g. `/upload`).
    pub base_path: String,
    /// How long a connection may make no progress in either direction
    /// (a client silent in the middle of a body, or not reading a download).
    pub body_idle_timeout: Duration,
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
    /// How long a new connection may take to send its first byte.
    pub first_byte_timeout: Duration,
    /// How long transfers in flight may run on after shutdown was asked.
    pub shutdown_grace: Duration,
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Uploads and downloads in flight at once; more get `503`.
    pub max_transfers: usize,
    /// The slowest a body or download may move after `rate_grace`, in
    /// bytes per second (0: no floor).
    pub min_rate: u64,
    /// How long a transfer may run before the rate floor applies.
    pub rate_grace: Duration,
    /// The rolling upload quotas a PUT re-checks (needs the transfer log).
    pub quotas: mft_storage::quota::Quotas,
    /// Also speak HTTP/2 (ALPN `h2` over TLS, prior knowledge in clear).
    /// Off by default: one large request per transfer gains nothing from
    /// multiplexing, HTTP/1.1 moved 1 GiB over TLS 15–25 % faster here, and
    /// HTTP/2 brings its own denial-of-service surface.
    pub http2: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            base_path: "/".into(),
            body_idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(30),
            first_byte_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 10_000,
            max_transfers: 512,
            min_rate: 1024,
            rate_grace: Duration::from_secs(20),
            quotas: mft_storage::quota::Quotas::default(),
            http2: false,
        }
    }
}

/// Everything a request handler needs.
pub struct App {
    /// Verifies slot tokens.
    pub signer: SlotSigner,
    /// Where files go.
    pub store: Store,
    /// Timeouts and paths.
    pub settings: HttpSettings,
    /// The transfer log; `None` runs without a database (files only).
    pub log: Option<TransferLog>,
    /// This node's name, for the log.
    pub node: String,
    /// Admission for transfers in flight (`max_transfers` permits).
    pub transfers: Arc<Semaphore>,
    /// Checks per-recipient claims from the router module, when configured.
    pub recipients: Option<crate::claim::RecipientSigner>,
    /// Refuse downloads without a recipient claim.
    pub require_recipient: bool,
}

impl App {
    /// An app with admission sized from `settings`.
    pub fn new(
        signer: SlotSigner,
        store: Store,
        settings: HttpSettings,
        log: Option<TransferLog>,
        node: String,
    ) -> App {
        let transfers = Arc::new(Semaphore::new(settings.max_transfers.max(1)));
        App {
            signer,
            store,
            settings,
            log,
            node,
            transfers,
            recipients: None,
            require_recipient: false,
        }
    }

    /// Attributes downloads to the recipients the router module names,
    /// optionally refusing downloads that name none.
    pub fn with_recipients(mut self, signer: crate::claim::RecipientSigner, require: bool) -> App {
        self.recipients = Some(signer);
        self.require_recipient = require;
        self
    }

    /// This node and its file server, for log rows.
    pub(crate) fn place(&self) -> crate::audit::Place {
        crate::audit::Place {
            node: self.node.clone(),
            file_server: self.store.file_server(),
        }
    }

    /// A permit for one more transfer, or `503` when `max_transfers` are in flight.
    pub(crate) fn admit(&self, direction: Direction) -> Result<Admitted, HttpError> {
        let permit = self.transfers.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(
                max_transfers = self.settings.max_transfers,
                "transfer refused: http.max_transfers are in flight"
            );
            HttpError::Busy
        })?;
        metrics().transfer_started(direction);
        Ok(Admitted {
            _permit: permit,
            direction,
            since: Instant::now(),
        })
    }
}

/// One admitted transfer: holds its `max_transfers` permit and is counted
/// in flight until dropped, when its duration is recorded.
pub(crate) struct Admitted {
    _permit: OwnedSemaphorePermit,
    direction: Direction,
    since: Instant,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        metrics().transfer_ended(self.direction, self.since.elapsed());
    }
}

/// One open connection: holds its `max_connections` permit and is counted
/// in `mftd_http_connections` until dropped.
struct OpenConnection {
    _permit: OwnedSemaphorePermit,
}

impl OpenConnection {
    fn new(permit: OwnedSemaphorePermit) -> OpenConnection {
        metrics().http_connections.inc();
        OpenConnection { _permit: permit }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics().http_connections.dec();
    }
}

pub(crate) type Resp = Response<ResponseBody>;

/// Serves HTTP on `listener` until `shutdown` completes, then lets requests
/// in flight finish for up to `shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if !app.settings.http2 {
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(app.settings.header_timeout)
        .max_buf_size(256 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .initial_stream_window_size(1024 * 1024)
        .initial_connection_window_size(4 * 1024 * 1024)
        .max_frame_size(256 * 1024);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(app.settings.max_connections.max(1)));
    let mut at_limit_logged = false;
    tokio::pin!(shutdown);
    loop {
        // Past the cap, new connections wait in the kernel's backlog rather
        // than take the descriptors every other part of mftd needs.
        let permit = match connections.clone().try_acquire_owned() {
            Ok(p) => {
                at_limit_logged = false;
                p
            }
            Err(_) => {
                if !at_limit_logged {
                    tracing::warn!(
                        max_connections = app.settings.max_connections,
                        "HTTP: connection limit reached (http.max_connections); new connections wait until one closes"
                    );
                    at_limit_logged = true;
                }
                tokio::select! {
                    p = connections.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let permit = OpenConnection::new(permit);
        let tcp = Deadlines::new(
            tcp,
            app.settings.first_byte_timeout,
            app.settings.body_idle_timeout,
        );
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(app, peer, req).await) }
        });
        match &tls {
            None => {
                let conn = builder
                    .serve_connection(TokioIo::new(tcp), service)
                    .into_owned();
                let watched = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = watched.await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let conn = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .into_owned();
                            let _ = watcher.watch(conn).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    let grace = app.settings.shutdown_grace;
    tracing::info!(
        grace_secs = grace.as_secs(),
        "HTTP: no longer accepting; finishing transfers in flight"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP: shutdown deadline passed; dropping remaining transfers");
    }
    Ok(())
}

async fn handle(app: Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> Resp {
    // The query (which may hold a token) is never logged.
    let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), %peer);
    async move {
        let started = Instant::now();
        let method = req.method().clone();
        let result = match method {
            Method::PUT => put::put(&app, peer, req).await,
            Method::GET | Method::HEAD => get::get(&app, peer, req).await,
            Method::OPTIONS => Ok(with_status(StatusCode::NO_CONTENT, ResponseBody::empty())),
            _ => Err(HttpError::MethodNotAllowed),
        };
        // The one place a failure becomes a status: log it here, with its cause.
        let mut resp = result.unwrap_or_else(|e| {
            let status = e.status().as_u16();
            if status >= 500 {
                tracing::warn!(status, error = %chain(&e), "request failed");
            } else {
                tracing::info!(status, reason = %e, "request refused");
            }
            error_response(&e)
        });
        add_cors(resp.headers_mut());
        let status = resp.status().as_u16();
        match method {
            Method::PUT => metrics().upload_answered(status),
            Method::GET => metrics().download_answered(status),
            _ => {}
        }
        if status < 400 {
            tracing::info!(status, ms = started.elapsed().as_millis() as u64, "request");
        }
        resp
    }
    .instrument(span)
    .await
}

pub(crate) fn with_status(status: StatusCode, body: ResponseBody) -> Resp {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp
}

fn error_response(e: &HttpError) -> Resp {
    let mut resp = with_status(e.status(), ResponseBody::text(format!("{e}\n")));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    match e {
        HttpError::MissingToken => {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        e if e.is_temporary() => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        }
        HttpError::MethodNotAllowed => {
            h.insert(
                header::ALLOW,
                HeaderValue::from_static("OPTIONS, HEAD, GET, PUT"),
            );
        }
        HttpError::RangeNotSatisfiable { size } => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        _ => {}
    }
    resp
}

/// A header's value as text, if it is text.
pub(crate) fn header_str<B>(req: &Request<B>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}
