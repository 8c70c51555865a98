//! The HTTP(S) endpoint: accepts connections, speaks HTTP/1.1 and HTTP/2
//! (ALPN over TLS, prior knowledge in clear), routes PUT/GET/HEAD/OPTIONS,
//! and shuts down gracefully: stop accepting, let transfers in flight finish
//! until a deadline, then drop the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use mft_storage::transfer_log::TransferLog;
use mft_storage::{FileMeta, Location, Store};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::audit;
use crate::body::ResponseBody;
use crate::error::HttpError;
use crate::headers::{add_cors, add_download_security};
use crate::range::{self, RangeAnswer};
use crate::token::SlotSigner;
use crate::urls::parse_path;

/// Knobs of the HTTP side.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The path part of the public URL (`/` or e.g. `/upload`).
    pub base_path: String,
    /// How long a client may send nothing in the middle of a body.
    pub body_idle_timeout: Duration,
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
    /// How long transfers in flight may run on after shutdown was asked.
    pub shutdown_grace: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            base_path: "/".into(),
            body_idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
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
}

type Resp = Response<ResponseBody>;

/// Serves HTTP on `listener` until `shutdown` completes, then lets requests
/// in flight finish for up to `shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
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
    tokio::pin!(shutdown);
    loop {
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
                tokio::spawn(graceful.watch(conn));
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
            Method::PUT => put(&app, peer, req).await,
            Method::GET | Method::HEAD => get(&app, peer, req).await,
            Method::OPTIONS => Ok(with_status(StatusCode::NO_CONTENT, ResponseBody::empty())),
            _ => Err(HttpError::MethodNotAllowed),
        };
        let mut resp = result.unwrap_or_else(|e| error_response(&e));
        add_cors(resp.headers_mut());
        let status = resp.status().as_u16();
        if status >= 500 {
            tracing::warn!(
                status,
                ms = started.elapsed().as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::info!(status, ms = started.elapsed().as_millis() as u64, "request");
        }
        resp
    }
    .instrument(span)
    .await
}

fn with_status(status: StatusCode, body: ResponseBody) -> Resp {
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
        HttpError::Unavailable => {
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

/// The token from `Authorization: Bearer …`, or from `?token=` for old
/// clients (XEP-0363 v0.2) that cannot send headers.
fn token_of<B>(req: &Request<B>) -> Option<String> {
    if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
        let auth = auth.to_str().ok()?;
        let (scheme, token) = auth.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_owned)
}

fn header_str<B>(req: &Request<B>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn same_media_type(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

async fn put(app: &App, peer: SocketAddr, req: Request<Incoming>) -> Result<Resp, HttpError> {
    let started = Instant::now();
    let (resource, filename) =
        parse_path(&app.settings.base_path, req.uri().path()).ok_or(HttpError::NotFound)?;
    let token = token_of(&req).ok_or(HttpError::MissingToken)?;
    let claims = app.signer.verify(&token, mft_storage::utc::unix_now())?;
    if claims.resource != resource || claims.filename != filename {
        return Err(HttpError::WrongSlot);
    }
    let loc = Location::parse(resource).ok_or(HttpError::NotFound)?;
    let length: u64 = header_str(&req, header::CONTENT_LENGTH)
        .ok_or(HttpError::LengthRequired)?
        .trim()
        .parse()
        .map_err(|_| HttpError::BadRequest("Content-Length is not a number".into()))?;
    if length > claims.size {
        return Err(HttpError::TooLarge {
            got: length,
            slot: claims.size,
        });
    }
    if length < claims.size {
        return Err(HttpError::BadRequest(format!(
            "Content-Length {length} differs from the slot size {}",
            claims.size
        )));
    }
    let sent_type = header_str(&req, header::CONTENT_TYPE).map(str::to_owned);
    let content_type = match (&claims.content_type, &sent_type) {
        (Some(declared), Some(sent)) if !same_media_type(declared, sent) => {
            return Err(HttpError::BadRequest(format!(
                "Content-Type {sent} differs from the declared {declared}"
            )))
        }
        (Some(declared), _) => Some(declared.clone()),
        (None, sent) => sent.clone(),
    };
    if app.log.as_ref().is_some_and(|log| !log.is_available()) {
        // Refuse before the body arrives: it could not be logged.
        return Err(HttpError::Unavailable);
    }
    let user_agent = header_str(&req, header::USER_AGENT)
        .unwrap_or("")
        .to_owned();
    let meta = FileMeta {
        real_name: claims.filename.clone(),
        content_type,
        size: claims.size,
        sha256: String::new(),
        uploader: claims.uploader.clone(),
        to: claims.to.clone(),
        created: 0,
    };
    let mut upload = app.store.begin_upload(loc.clone(), meta);
    let mut body = req.into_body();
    loop {
        let frame = match tokio::time::timeout(app.settings.body_idle_timeout, body.frame()).await {
            Err(_) => return Err(HttpError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(HttpError::BadRequest(format!("request body broken: {e}")))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            upload.write(data).await?;
        }
    }
    let stored = upload.finish().await?;
    if let Some(log) = &app.log {
        let record = audit::upload_record(app, &claims, &stored, peer, &user_agent, started);
        if let Err(e) = log.record_upload(record).await {
            tracing::error!(error = %e, path = %stored.path, "upload stored but its log rows could not be committed: removing the file");
            if let Err(e) = app.store.remove(&loc).await {
                tracing::error!(error = %e, path = %stored.path, "could not remove the unlogged file; remove it by hand");
            }
            return Err(HttpError::Unavailable);
        }
    }
    tracing::info!(
        path = %stored.path,
        size = stored.meta.size,
        sha256 = %stored.meta.sha256,
        uploader = %stored.meta.uploader,
        "stored upload"
    );
    let mut resp = with_status(StatusCode::CREATED, ResponseBody::empty());
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(resp)
}

async fn get(app: &App, peer: SocketAddr, req: Request<Incoming>) -> Result<Resp, HttpError> {
    let started = Instant::now();
    let (resource, _) =
        parse_path(&app.settings.base_path, req.uri().path()).ok_or(HttpError::NotFound)?;
    let loc = Location::parse(resource).ok_or(HttpError::NotFound)?;
    let row = match &app.log {
        Some(log) => log.file(resource).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot look up the file in the database");
            HttpError::Unavailable
        })?,
        None => None,
    };
    if row.as_ref().is_some_and(|r| r.deleted.is_some()) {
        return Err(HttpError::Gone);
    }
    let info = app.store.stat(&loc).await?;
    let (status, start, len) = match range::answer(header_str(&req, header::RANGE), info.size) {
        RangeAnswer::Whole => (StatusCode::OK, 0, info.size),
        RangeAnswer::Partial { start, len } => (StatusCode::PARTIAL_CONTENT, start, len),
        RangeAnswer::Unsatisfiable => {
            return Err(HttpError::RangeNotSatisfiable { size: info.size })
        }
    };
    let content_type = info
        .meta
        .as_ref()
        .and_then(|m| m.content_type.clone())
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let filename = info
        .meta
        .as_ref()
        .map_or(resource, |m| m.real_name.as_str());
    let body = if req.method() == Method::HEAD {
        ResponseBody::empty()
    } else {
        let report = match &app.log {
            Some(log) => {
                let user_agent = header_str(&req, header::USER_AGENT).unwrap_or("");
                let record = audit::download_record(
                    app,
                    &loc,
                    &info,
                    row.as_ref(),
                    peer,
                    user_agent,
                    status,
                    len,
                );
                let id = log.record_download(record).await.map_err(|e| {
                    tracing::warn!(error = %e, "download refused: its log row could not be committed");
                    HttpError::Unavailable
                })?;
                Some(audit::DownloadReport::new(
                    log.clone(),
                    id,
                    started,
                    i32::from(status.as_u16()),
                    len,
                ))
            }
            None => None,
        };
        ResponseBody::Stream {
            rx: app.store.read(&loc, start, len),
            left: len,
            report,
        }
    };
    let mut resp = with_status(status, body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let range = format!("bytes {start}-{}/{}", start + len - 1, info.size);
        if let Ok(v) = HeaderValue::from_str(&range) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    if let Some(sha) = info
        .meta
        .as_ref()
        .map(|m| &m.sha256)
        .filter(|s| !s.is_empty())
    {
        if let Ok(v) = HeaderValue::from_str(&format!("\"{sha}\"")) {
            h.insert(header::ETAG, v);
        }
    }
    add_download_security(h, &content_type, filename);
    Ok(resp)
}
