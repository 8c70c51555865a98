//! The HTTP(S) endpoint: accepts connections (at most `max_connections` at
//! once, each under [`crate::conn::Deadlines`]), learns the client's address
//! from a trusted proxy ([`crate::proxy`]), speaks HTTP/1.1 and HTTP/2
//! (ALPN over TLS, prior knowledge in clear), routes PUT ([`crate::put`]) and
//! GET/HEAD ([`crate::get`]) and OPTIONS, and shuts down gracefully: stop
//! accepting, let transfers in flight finish until a deadline, then drop the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use mft_common::error::Chain;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use mft_metrics::metrics;
use mft_storage::error::chain;

use crate::app::{with_status, Conn, Resp};
pub use crate::app::{App, HttpSettings};
use crate::body::ResponseBody;
use crate::conn::Deadlines;
use crate::error::HttpError;
use crate::headers::add_cors;
use crate::proxy::{self, ProxyError};
use crate::{get, put};

/// HTTP/2 streams one connection may have open at once: each may hold a
/// transfer's read-ahead, so this bounds what one connection can pin.
const MAX_H2_STREAMS: u32 = 32;

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

/// The most an HTTP/1 connection's read buffer grows to. It lives outside
/// the transfer memory budget (hyper owns it), so it is kept small: 1024
/// stalled uploads hold 64 MiB of it at most.
const HTTP1_READ_BUFFER: usize = 64 * 1024;

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
        .max_buf_size(HTTP1_READ_BUFFER);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .initial_stream_window_size(1024 * 1024)
        .initial_connection_window_size(4 * 1024 * 1024)
        .max_concurrent_streams(MAX_H2_STREAMS)
        .max_frame_size(256 * 1024);
    // Transfers that stopped moving lose their connection (and so their
    // permits), whatever else keeps the connection busy.
    let reaper = {
        let app = Arc::downgrade(&app);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                match app.upgrade() {
                    Some(app) => app.reap_stalled(),
                    None => return,
                }
            }
        })
    };
    let graceful = GracefulShutdown::new();
    let limit = crate::accept::ConnectionLimit {
        places: Arc::new(Semaphore::new(app.settings.max_connections.max(1))),
        when_full: "HTTP: connection limit reached (http.max_connections)",
    };
    crate::accept::accept_until(&listener, &limit, shutdown, |tcp, peer, place| {
        let _ = tcp.set_nodelay(true);
        let permit = OpenConnection::new(place);
        // Everything that waits on the client (a PROXY header, the TLS
        // handshake, HTTP) runs in the connection's own task, never here.
        let connection = serve_connection(
            app.clone(),
            tcp,
            peer,
            tls.clone(),
            builder.clone(),
            graceful.watcher(),
        );
        tokio::spawn(async move {
            connection.await;
            drop(permit);
        });
    })
    .await;
    drop(listener);
    reaper.abort();
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

/// One connection from its first byte to its end: the PROXY header (read
/// only from a trusted proxy, before TLS, within `first_byte_timeout`),
/// TLS, then HTTP under [`Deadlines`].
async fn serve_connection(
    app: Arc<App>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
) {
    let settings = &app.settings;
    let trusted = settings.trusted_proxies.contains(peer.ip());
    let (io, client) = match proxy::accept(tcp, peer, trusted, settings.first_byte_timeout).await {
        Ok(accepted) => accepted,
        Err(e @ (ProxyError::Malformed(_) | ProxyError::TooLong)) => {
            tracing::warn!(
                %peer,
                error = %Chain(&e),
                "closing a connection from a trusted proxy (http.trusted_proxies): \
                 a proxy there must send a valid PROXY header (HAProxy send-proxy or \
                 send-proxy-v2) or none; remove it from the list if it is not one"
            );
            return;
        }
        Err(e) => {
            tracing::debug!(%peer, error = %chain(&e), "dropping a connection from a trusted proxy: no whole PROXY header");
            return;
        }
    };
    let io = Deadlines::new(io, settings.first_byte_timeout, settings.body_idle_timeout);
    let conn = Conn {
        peer,
        client: client.ip(),
        closer: Arc::new(Notify::new()),
    };
    let closer = conn.closer.clone();
    let service = {
        let app = app.clone();
        service_fn(move |req| {
            let app = app.clone();
            let conn = conn.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(app, conn, req).await) }
        })
    };
    match tls {
        None => {
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::select! {
                _ = watcher.watch(conn) => {}
                () = closer.notified() => {}
            }
        }
        Some(acceptor) => {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(io));
            match handshake.await {
                Ok(Ok(stream)) => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = watcher.watch(conn) => {}
                        () = closer.notified() => {}
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, %client, error = %Chain(&e), "TLS handshake failed")
                }
                Err(_) => tracing::debug!(%peer, %client, "TLS handshake timed out"),
            }
        }
    }
}

async fn handle(app: Arc<App>, mut conn: Conn, req: Request<Incoming>) -> Resp {
    // Per request: a trusted proxy's forwarding headers may name the client.
    conn.client =
        proxy::forwarded_client(&app.settings.trusted_proxies, conn.client, req.headers());
    // The query (which may hold a token) is never logged.
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        client = %conn.client,
        via = tracing::field::Empty,
    );
    if conn.client != conn.peer.ip().to_canonical() {
        span.record("via", tracing::field::display(conn.peer));
    }
    async move {
        let started = Instant::now();
        let method = req.method().clone();
        let result = match method {
            Method::PUT => put::put(&app, &conn, req).await,
            Method::GET | Method::HEAD => get::get(&app, &conn, req).await,
            Method::OPTIONS => Ok(with_status(StatusCode::NO_CONTENT, ResponseBody::empty())),
            _ => Err(HttpError::MethodNotAllowed),
        };
        // The one place a failure becomes a status: log it here, with its cause.
        let mut resp = result.unwrap_or_else(|e| {
            let status = e.status().as_u16();
            if status >= 500 {
                tracing::warn!(status, error = %chain(&e), "request failed");
            } else {
                tracing::info!(status, reason = %Chain(&e), "request refused");
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
