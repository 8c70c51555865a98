//! The admin listener (`[admin] listen`): `/metrics` (Prometheus text, or
//! OpenMetrics when asked for), `/healthz` (the process serves), `/readyz`
//! (link, file server and transfer log are usable) and `/`, the read-only
//! status page. It is separate from the public endpoint and never serves
//! files; with `[admin] token` every request must carry it, as a bearer
//! token or as the password of HTTP basic auth (so a browser can log in).

mod health;
pub mod scanner;
mod status_page;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use mft_metrics::{metrics, Direction, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};
use mft_storage::error::chain;
use mft_storage::transfer_log::TransferLog;
use mft_storage::Store;
use mft_upload_http::conn::Deadlines;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use health::{not_ready, Sampler};
use status_page::{CheckLine, DatabaseView, StatusView};

use crate::config::Settings;

/// Latest log rows on the status page.
const LATEST_ROWS: i64 = 20;

/// How long the status page waits for the file server checks.
const CHECKS_TIMEOUT: Duration = Duration::from_secs(15);

/// What the admin listener reads.
pub struct Monitor {
    node: String,
    component_jid: String,
    store: Store,
    sftp: Option<(mft_storage::sftp::SftpSettings, f64)>,
    log: Option<TransferLog>,
    /// SHA-256 of the token; compared as digests so the comparison's time
    /// says nothing about the token.
    token_digest: Option<[u8; 32]>,
    started: Instant,
    /// The file server checks open an SSH connection of their own: they run
    /// at most once per `check_interval`, one page load at a time, whoever
    /// asks and however often (a reload loop must not become a stream of
    /// SSH logins).
    checks_cache: tokio::sync::Mutex<Option<(Instant, Vec<CheckLine>)>>,
    checks_every: Duration,
    /// The log chain check reads every record: at most once per
    /// [`LOG_CHAIN_EVERY`], one page load at a time.
    chain_cache: tokio::sync::Mutex<Option<(Instant, CheckLine)>>,
    /// The key checkpoint signatures must verify with.
    checkpoint_key: Option<ssh_key::PublicKey>,
}

/// How long the log chain check's result is shown before it runs again.
const LOG_CHAIN_EVERY: Duration = Duration::from_secs(600);

impl Monitor {
    /// The monitor of a node.
    pub fn new(settings: &Settings, store: Store, log: Option<TransferLog>) -> Monitor {
        let alarm = settings.store.space().alarm_free_percent;
        metrics().file_server_alarm_ratio.set(alarm / 100.0);
        let sftp = settings.store.sftp().map(|sftp| (sftp.clone(), alarm));
        Monitor {
            node: settings.node_name.clone(),
            component_jid: settings.link.jid.clone(),
            store,
            sftp,
            log,
            token_digest: settings
                .admin
                .token
                .as_ref()
                .map(|t| Sha256::digest(t.expose().as_bytes()).into()),
            started: Instant::now(),
            checks_cache: tokio::sync::Mutex::new(None),
            checks_every: settings.admin.check_interval,
            chain_cache: tokio::sync::Mutex::new(None),
            checkpoint_key: crate::log_chain_check::trusted_key(
                None,
                settings.log.checkpoint_key_file.as_deref(),
            )
            .ok()
            .flatten(),
        }
    }

    /// "log chain": `mftd verify --log`'s verdict, cached for
    /// [`LOG_CHAIN_EVERY`].
    async fn chain_check(&self) -> Option<CheckLine> {
        let log = self.log.as_ref()?;
        let mut cache = self.chain_cache.lock().await;
        if let Some((at, line)) = cache.as_ref() {
            if at.elapsed() < LOG_CHAIN_EVERY {
                return Some(line.clone());
            }
        }
        let run = async {
            let mut client = log.dedicated_client().await.map_err(|e| chain(&e))?;
            crate::log_chain_check::check(&mut client, self.checkpoint_key.as_ref())
                .await
                .map_err(|e| chain(&e))
        };
        let result = match tokio::time::timeout(CHECKS_TIMEOUT, run).await {
            Ok(Ok(check)) => check.summary(),
            Ok(Err(e)) => Err(format!("could not run: {e}")),
            Err(_) => Err(format!(
                "did not finish within {}s: run `mftd verify --log` from cron instead",
                CHECKS_TIMEOUT.as_secs()
            )),
        };
        let line = CheckLine {
            name: "log chain".into(),
            result,
        };
        *cache = Some((Instant::now(), line.clone()));
        Some(line)
    }

    /// The file server checks and their age: cached for `check_interval`.
    async fn cached_checks(&self) -> (Vec<CheckLine>, Duration) {
        let mut cache = self.checks_cache.lock().await;
        if let Some((at, checks)) = cache.as_ref() {
            if at.elapsed() < self.checks_every {
                return (checks.clone(), at.elapsed());
            }
        }
        let checks = self.checks().await;
        *cache = Some((Instant::now(), checks.clone()));
        (checks, Duration::ZERO)
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(want) = &self.token_digest else {
            return true;
        };
        let Some(value) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let given = if let Some(token) = value.strip_prefix("Bearer ") {
            token.trim().to_owned()
        } else if let Some(basic) = value.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            match decoded.as_deref().and_then(|d| d.split_once(':')) {
                Some((_, password)) => password.to_owned(),
                None => return false,
            }
        } else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        digest == *want
    }

    async fn checks(&self) -> Vec<CheckLine> {
        match &self.sftp {
            Some((sftp, alarm)) => {
                let (sftp, alarm) = (sftp.clone(), *alarm);
                let run =
                    tokio::task::spawn_blocking(move || crate::fileserver::status(&sftp, alarm));
                match tokio::time::timeout(CHECKS_TIMEOUT, run).await {
                    Ok(Ok(checks)) => checks
                        .into_iter()
                        .map(|c| CheckLine {
                            name: c.name.to_owned(),
                            result: c.result,
                        })
                        .collect(),
                    _ => vec![CheckLine {
                        name: "reachable".into(),
                        result: Err(format!(
                            "the checks did not finish within {}s",
                            CHECKS_TIMEOUT.as_secs()
                        )),
                    }],
                }
            }
            None => {
                let mut checks = vec![CheckLine {
                    name: "node directory readable".into(),
                    result: self
                        .store
                        .health_check()
                        .await
                        .map(|()| self.store.file_server())
                        .map_err(|e| chain(&e)),
                }];
                if let Ok(Some(space)) = self.store.free_space().await {
                    checks.push(CheckLine {
                        name: "free space".into(),
                        result: Ok(format!(
                            "{:.1} GiB free ({:.1} %)",
                            space.available as f64 / f64::from(1u32 << 30),
                            space.percent_free()
                        )),
                    });
                }
                checks
            }
        }
    }

    async fn database(&self) -> Option<Result<DatabaseView, String>> {
        let log = self.log.as_ref()?;
        let read = async {
            let client = log.read_client().await?;
            let schema_version = mft_storage::db::schema_version(&client).await?;
            let today = std::time::UNIX_EPOCH
                + Duration::from_secs(mft_common::utc::unix_now() / 86_400 * 86_400);
            let totals = mft_storage::log_query::totals_since(&client, today).await?;
            let latest = mft_storage::log_query::latest(&client, LATEST_ROWS).await?;
            Ok::<_, mft_storage::db::DbError>(DatabaseView {
                schema_version,
                known_version: mft_storage::db::MIGRATIONS.last().map_or(0, |m| m.0),
                totals,
                latest,
            })
        };
        Some(match tokio::time::timeout(CHECKS_TIMEOUT, read).await {
            Ok(Ok(view)) => Ok(view),
            Ok(Err(e)) => Err(format!("cannot read the transfer log: {}", chain(&e))),
            Err(_) => Err("the transfer log did not answer in time".into()),
        })
    }

    async fn status_page(&self) -> String {
        let ((mut checks, checks_age), database, log_chain) =
            tokio::join!(self.cached_checks(), self.database(), self.chain_check());
        checks.extend(log_chain);
        status_page::render(&StatusView {
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION"),
            uptime: self.started.elapsed(),
            component_jid: self.component_jid.clone(),
            link: crate::node_state::link(),
            not_ready: health::not_ready(),
            file_server: self.store.file_server(),
            checks,
            checks_age,
            database,
            scanner: scanner::state().map(|s| match &s.answer {
                Ok(_) => Ok(scanner::describe(&s)),
                Err(_) => Err(scanner::describe(&s)),
            }),
            uploads_in_flight: metrics().in_flight(Direction::Upload),
            downloads_in_flight: metrics().in_flight(Direction::Download),
        })
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.authorized(&req) {
            let mut resp = reply(StatusCode::UNAUTHORIZED, "text/plain", "token required\n");
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mftd admin\", charset=\"UTF-8\""),
            );
            // A client without the token keeps no connection open.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "read-only\n");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        let mut resp = match req.uri().path() {
            "/metrics" => {
                health::refresh_live(self.log.as_ref());
                let wants_openmetrics = req
                    .headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains("application/openmetrics-text"));
                if wants_openmetrics {
                    reply(
                        StatusCode::OK,
                        OPENMETRICS_CONTENT_TYPE,
                        metrics().render_openmetrics(),
                    )
                } else {
                    reply(
                        StatusCode::OK,
                        PROMETHEUS_CONTENT_TYPE,
                        metrics().render_prometheus(),
                    )
                }
            }
            "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
            "/readyz" => readiness(health::readyz()),
            "/readyz/xmpp" => readiness(health::readyz_xmpp()),
            "/" => reply(
                StatusCode::OK,
                "text/html; charset=utf-8",
                self.status_page().await,
            ),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        };
        if req.method() == Method::HEAD {
            *resp.body_mut() = Full::new(Bytes::new());
        }
        resp
    }
}

/// 200 or 503 with the readiness text.
fn readiness((ok, body): (bool, String)) -> Response<Full<Bytes>> {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(status, "text/plain", body)
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// Admin connections open at once. Far more than a few scrapers and
/// operators need, so that the deadlines below — not the cap — decide how
/// long a hostile client can hold one, and `/healthz` and `/readyz` stay
/// reachable for the load balancer whatever else connects.
const MAX_ADMIN_CONNECTIONS: usize = 1024;
/// A new admin connection must send its first byte within this.
const ADMIN_FIRST_BYTE: Duration = Duration::from_secs(2);
/// Request headers must arrive within this.
const ADMIN_HEADERS: Duration = Duration::from_secs(3);
/// Nothing moving either way for this long closes the connection (longer
/// than the slowest status page, whose checks may take a while).
const ADMIN_IDLE: Duration = Duration::from_secs(20);
/// No admin connection lives longer than this, however busy.
const ADMIN_LIFETIME: Duration = Duration::from_secs(60);

/// Serves the admin listener until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    monitor: Arc<Monitor>,
    shutdown: impl Future<Output = ()>,
) {
    let limit = mft_upload_http::accept::ConnectionLimit {
        places: Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS)),
        when_full: "admin listener: connection limit reached",
    };
    mft_upload_http::accept::accept_until(&listener, &limit, shutdown, |tcp, _, place| {
        let monitor = monitor.clone();
        let service = service_fn(move |req| {
            let monitor = monitor.clone();
            async move { Ok::<_, std::convert::Infallible>(monitor.handle(req).await) }
        });
        let tcp = Deadlines::new(tcp, ADMIN_FIRST_BYTE, ADMIN_IDLE);
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADERS)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(ADMIN_LIFETIME, conn).await;
            drop(place);
        });
    })
    .await;
}

/// Starts the admin listener and the health sampler, when configured.
pub fn start(
    settings: &Settings,
    listener: Option<TcpListener>,
    store: Store,
    log: Option<TransferLog>,
    stop: watch::Receiver<bool>,
) {
    let sampler = Sampler {
        store: store.clone(),
        log: log.clone(),
        every: settings.admin.check_interval,
    };
    tokio::spawn(sampler.run(stop.clone()));
    let Some(listener) = listener else {
        return;
    };
    tracing::info!(
        listen = %listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
        token = settings.admin.token.is_some(),
        "admin: listening (metrics, health, status page)"
    );
    let monitor = Arc::new(Monitor::new(settings, store, log));
    let mut stop = stop;
    tokio::spawn(serve(listener, monitor, async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
}
