//! `mftd run`: builds the store, the transfer log, the HTTP endpoint and the
//! component from the settings and runs them side by side on listeners the
//! caller bound, until the caller's shutdown future completes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mft_common::error::Chain;
use mft_storage::local::LocalBackend;
use mft_storage::s3::S3Backend;
use mft_storage::sftp::SftpBackend;
use mft_storage::transfer_log::TransferLog;
use mft_storage::Store;
use mft_upload_http::scan::Scanner;
use mft_upload_http::{serve, App, SlotSigner};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Settings, StoreSettings};
use mft_component::component;
use mft_component::rate::SlotRateLimiter;
use mft_component::service::UploadService;
use mft_component::space::SpaceGuard;

/// Opens the configured store.
pub fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let budget = mft_storage::budget::Budget::new(settings.http.memory_budget);
    let store = match &settings.store {
        StoreSettings::Local { path, .. } => {
            let backend = LocalBackend::new(path).with_context(|| {
                format!(
                    "while opening the node directory {} (store.path)",
                    path.display()
                )
            })?;
            Store::new(backend)
        }
        StoreSettings::Sftp { sftp, .. } => Store::new(SftpBackend::new((**sftp).clone())),
        StoreSettings::S3 { s3 } => Store::new(S3Backend::new((**s3).clone())),
    };
    Ok(store.with_budget(budget))
}

/// The XEP-0050 ad-hoc commands, when `[adhoc]` offers them (they need the
/// transfer log).
fn commands(
    settings: &Settings,
    log: Option<&TransferLog>,
    store: &Store,
) -> Option<Arc<mft_component::adhoc::Commands>> {
    let adhoc = &settings.adhoc;
    let log = log.filter(|_| adhoc.offered)?;
    Some(Arc::new(mft_component::adhoc::Commands {
        log: log.clone(),
        store: store.clone(),
        node: settings.node_name.clone(),
        floor: settings.retention.floor,
        rules: settings.retention.rules,
        admins: adhoc.admins.clone(),
        allowed_domains: settings.allowed_domains.clone(),
        sessions: mft_component::adhoc::session::Sessions::new(adhoc.session_timeout),
    }))
}

/// How many days back start-up recovery looks for leftovers of a crash.
const RECOVERY_DAYS: u64 = 2;

/// Descriptors kept for everything that is not an HTTP connection: the
/// router link, file server sessions, database connections, files.
const RESERVED_DESCRIPTORS: u64 = 512;

/// Raises the open-file limit to what the system allows and returns how
/// many HTTP connections fit under it, at most `configured`.
fn connection_budget(configured: usize) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "cannot read the open-file limit");
            return configured;
        }
    };
    let fits =
        usize::try_from(limit.saturating_sub(RESERVED_DESCRIPTORS).max(16)).unwrap_or(usize::MAX);
    if fits < configured {
        tracing::warn!(
            open_file_limit = limit,
            max_connections = fits,
            configured,
            "http.max_connections lowered to fit the open-file limit (raise LimitNOFILE to allow more)"
        );
        return fits;
    }
    configured
}

/// Waits for SIGINT or SIGTERM.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Re-reads the TLS certificate and key on every SIGHUP (`systemctl
/// reload mftd`): new handshakes get the new pair, open connections and
/// transfers in flight keep theirs. A pair that does not load is refused
/// and the old one stays.
async fn reload_on_hangup(certs: Option<Arc<mft_upload_http::tls::CertStore>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; TLS reload unavailable");
        return;
    };
    while hangups.recv().await.is_some() {
        let Some(certs) = &certs else {
            tracing::info!("SIGHUP: no TLS configured, nothing to reload");
            continue;
        };
        crate::systemd::notify("RELOADING=1");
        let (cert, key) = certs.files();
        match certs.reload() {
            Ok(()) => {
                tracing::info!(cert = %cert.display(), key = %key.display(), "SIGHUP: TLS certificate reloaded")
            }
            Err(e) => {
                tracing::error!(error = %Chain(&e), "SIGHUP: TLS certificate not reloaded; the previous one stays in use")
            }
        }
        crate::systemd::reloaded();
    }
}

/// The sockets mftd serves on, bound by the caller so a test can hand in
/// `127.0.0.1:0` (mini-redis style).
pub struct Listeners {
    /// The public upload/download endpoint.
    pub http: TcpListener,
    /// The admin listener (metrics, health, status page), when configured.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds what the configuration names.
    pub async fn bind(settings: &Settings) -> anyhow::Result<Listeners> {
        let listen = settings.http.listen;
        let http = TcpListener::bind(listen)
            .await
            .with_context(|| format!("while binding http.listen = {listen}"))?;
        let admin = match settings.admin.listen {
            Some(listen) => Some(
                TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("while binding admin.listen = {listen}"))?,
            ),
            None => None,
        };
        Ok(Listeners { http, admin })
    }
}

/// How long a start waits for a node lock a killed process may still hold.
const NODE_LOCK_WAIT: Duration = Duration::from_secs(10);

/// Runs mftd on `listeners` until `shutdown` completes, then stops
/// accepting, lets transfers in flight finish within the grace period and
/// closes the XMPP stream. `ready` is called once the endpoint serves:
/// after the transfer log is open and start-up recovery has run.
pub async fn run(
    settings: Settings,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(),
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("stop signal received: shutting down");
        let _ = stop_tx.send(true);
    });
    let store = open_store(&settings)?;
    let mut http_settings = settings.http.settings.clone();
    http_settings.max_connections = connection_budget(http_settings.max_connections);
    let signer = SlotSigner::new(settings.token_key.expose().as_bytes()).with_previous(
        settings
            .previous_token_keys
            .iter()
            .map(|k| k.expose().as_bytes().to_vec()),
    );
    let (tls, certs) = match &settings.http.tls {
        Some(files) => {
            let (acceptor, certs) =
                mft_upload_http::tls::acceptor(&files.cert, &files.key, http_settings.http2)?;
            (Some(acceptor), Some(certs))
        }
        None => (None, None),
    };
    // SIGHUP's default action ends the process: it is always handled.
    tokio::spawn(reload_on_hangup(certs));
    let log = match settings.database.clone() {
        Some(db) => {
            tracing::info!("connecting to the transfer log database");
            let mut stopping = stop_rx.clone();
            let started = tokio::select! {
                log = TransferLog::start(db, Duration::MAX) => log,
                _ = stopping.wait_for(|stop| *stop) => {
                    tracing::info!("stopped before the database was reachable");
                    return Ok(());
                }
            };
            Some(started.context("while opening the transfer log ([database] url)")?)
        }
        None => {
            tracing::warn!("no [database] configured: transfers are not logged");
            None
        }
    };
    // One process per node name: the second refuses before it touches the
    // node directory (recovery below removes and quarantines files).
    let _node_lock = match &log {
        Some(log) => Some(
            mft_storage::node_lock::NodeLock::acquire(log, &settings.node_name, NODE_LOCK_WAIT)
                .await
                .context("while making sure no other process runs as this node")?,
        ),
        None => None,
    };
    // This process continues the node's log chains (it holds the node lock)
    // and writes its daily checkpoint of their heads.
    if let Some(log) = &log {
        log.set_node(&settings.node_name);
        let key = match &settings.log.checkpoint_key_file {
            Some(path) => Some(Arc::new(crate::checkpoint_key::SshSigner::load(path)?)
                as Arc<dyn mft_storage::log_chain::CheckpointSigner>),
            None => None,
        };
        tokio::spawn(crate::log_lifecycle::ahead(log.clone(), stop_rx.clone()));
        tokio::spawn(crate::checkpoint_key::daily(
            log.clone(),
            settings.node_name.clone(),
            key,
            stop_rx.clone(),
        ));
    }
    recover_before_serving(&store, log.as_ref(), &settings.node_name).await;
    let listener = listeners.http;
    tracing::info!(
        listen = %listener.local_addr().map_or_else(|_| settings.http.listen.to_string(), |a| a.to_string()),
        public_url = %settings.http.public_url,
        tls = tls.is_some(),
        file_server = %store.file_server(),
        node = %settings.node_name,
        trusted_proxies = %http_settings.trusted_proxies,
        "HTTP: listening"
    );
    let scanner = settings.scan.clone().map(Scanner::new);
    let http_app = Arc::new(http_app(
        &settings,
        http_settings,
        signer.clone(),
        &store,
        log.clone(),
        scanner.clone(),
    ));
    let space = SpaceGuard::default();
    let commands = commands(&settings, log.as_ref(), &store);
    let service = Arc::new(upload_service(
        &settings,
        signer,
        &store,
        space.clone(),
        log,
        commands,
    ));
    let link = settings.link.clone();

    if let Some(log) = http_app.log.clone() {
        tokio::spawn(mft_storage::retention::sweep_periodically(
            log,
            store.clone(),
            settings.node_name.clone(),
            settings.retention.rules,
            settings.retention.floor,
            settings.retention.sweep_interval,
            stop_rx.clone(),
        ));
    }
    crate::monitor::start(
        &settings,
        listeners.admin,
        store.clone(),
        http_app.log.clone(),
        stop_rx.clone(),
    );
    if let Some(scanner) = scanner {
        let every = settings.admin.check_interval;
        tokio::spawn(crate::monitor::scanner::watch(
            scanner,
            every,
            stop_rx.clone(),
        ));
    }
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(async move {
        crate::node_state::set_http_serving(true);
        let served = serve(listener, http_app, tls, async move {
            let _ = http_stop.wait_for(|stop| *stop).await;
        })
        .await;
        crate::node_state::set_http_serving(false);
        served
    });
    tokio::spawn(crate::systemd::keep_watchdog(stop_rx.clone()));
    ready();
    let limits = settings.store.space();
    tokio::spawn(space.watch(
        store.clone(),
        limits.alarm_free_percent,
        limits.min_free_bytes,
        settings.admin.check_interval,
        stop_rx.clone(),
    ));
    if !matches!(settings.store, StoreSettings::Local { .. }) {
        match store.health_check().await {
            Ok(()) => tracing::info!(store = %store.file_server(), "file server ready"),
            Err(e) => {
                tracing::warn!(store = %store.file_server(), error = %Chain(&e), "file server not ready yet; slots wait until it is")
            }
        }
    }
    tokio::spawn(crate::systemd::report_readiness(stop_rx.clone()));
    let xmpp = tokio::spawn(component::run(link, service, stop_rx));
    let (http, _) = tokio::join!(http, xmpp);
    http.context("HTTP server task")?.context("HTTP server")?;
    tracing::info!("stopped");
    Ok(())
}

/// Before any upload can start, cleans what a crash left behind: leftover
/// temporary files and unlogged uploads, then users' deletions and
/// erasures a kill interrupted between removing a file and recording it
/// (a file must not be served as live once its bytes are gone). A store or
/// database that is not there yet only postpones this, said in the log.
async fn recover_before_serving(store: &Store, log: Option<&TransferLog>, node: &str) {
    match mft_storage::reconcile::recover(
        store,
        log,
        Some(mft_storage::reconcile::date_days_ago(RECOVERY_DAYS)),
    )
    .await
    {
        Ok(done) if done != Default::default() => {
            tracing::warn!(?done, "recovered from an interrupted run")
        }
        Ok(_) => tracing::debug!("start-up recovery: nothing to clean"),
        Err(e) => tracing::warn!(
            error = %Chain(&e),
            "start-up recovery skipped (store or database unavailable); run `mftd verify` later"
        ),
    }
    let Some(log) = log else { return };
    let deletions = async {
        let mut client = log.dedicated_client().await?;
        let done = mft_storage::user_deletion::resume(&mut client, store, node).await?;
        anyhow::Ok((done != Default::default(), format!("{done:?}")))
    };
    report_resumed(
        deletions.await,
        "finished users' deletions a crash interrupted",
        "interrupted users' deletions not finished now (store or database unavailable); the next start finishes them",
    );
    let erasures = async {
        let mut client = log.dedicated_client().await?;
        let done = mft_storage::erasure::resume(&mut client, store, node).await?;
        anyhow::Ok((done != Default::default(), format!("{done:?}")))
    };
    report_resumed(
        erasures.await,
        "finished erasures a crash interrupted",
        "interrupted erasures not finished now (store or database unavailable); the next `mftd erase` finishes them",
    );
}

/// Logs what finishing interrupted removals did: (anything done, what).
fn report_resumed(outcome: anyhow::Result<(bool, String)>, done: &str, postponed: &str) {
    match outcome {
        Ok((true, what)) => tracing::warn!(done = %what, "{done}"),
        Ok((false, _)) => {}
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "{postponed}"),
    }
}

/// The upload endpoint: its settings, the store and log, content and quota
/// policy, and the recipients' claims when the router module signs them.
fn http_app(
    settings: &Settings,
    http_settings: mft_upload_http::HttpSettings,
    signer: SlotSigner,
    store: &Store,
    log: Option<TransferLog>,
    scanner: Option<Scanner>,
) -> App {
    let app = App::new(
        signer,
        store.clone(),
        http_settings,
        log,
        settings.node_name.clone(),
    )
    .with_content_policy(scanner, settings.types.clone())
    .with_quota_policy(Arc::new(mft_component::groups::GroupQuotas {
        groups: settings.groups.clone(),
        default: settings.quotas,
    }));
    match &settings.recipients.share_key {
        Some(key) => app.with_recipients(
            mft_upload_http::claim::RecipientSigner::new(key.expose().as_bytes()),
            settings.recipients.require_claim,
        ),
        None => app,
    }
}

/// The XEP-0363 service behind the component JID, from the checked settings.
fn upload_service(
    settings: &Settings,
    signer: SlotSigner,
    store: &Store,
    space: SpaceGuard,
    log: Option<TransferLog>,
    commands: Option<Arc<mft_component::adhoc::Commands>>,
) -> UploadService {
    UploadService {
        signer,
        store: store.clone(),
        public_url: settings.http.public_url.clone(),
        max_file_size: settings.max_file_size,
        slot_ttl: settings.slots.ttl,
        allowed_domains: settings.allowed_domains.clone(),
        space,
        log,
        quotas: settings.quotas,
        slot_rate: SlotRateLimiter::new(settings.slots.per_minute, settings.slots.burst),
        chat: settings.chat.clone(),
        allow_ephemeral: settings.default_limits.allow_ephemeral,
        allow_permanent: settings.default_limits.allow_permanent,
        floor: settings.retention.floor,
        share_reporters: settings.recipients.reporters.clone(),
        share_rate: SlotRateLimiter::new(
            settings.recipients.shares_per_minute,
            settings.recipients.shares_per_minute,
        ),
        reporter_rate: SlotRateLimiter::new(
            mft_component::service::SHARES_PER_REPORTER_MINUTE,
            mft_component::service::SHARES_PER_REPORTER_MINUTE / 10,
        ),
        types: settings.types.clone(),
        groups: settings.groups.clone(),
        commands,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_in_process_on_a_given_listener_and_stops_on_its_signal() {
        let parent = tempfile::tempdir().expect("tempdir");
        let node = parent.path().join("node_1");
        let text = format!(
            "[xmpp]\ncomponent_jid = \"upload.example.test\"\nsecret = \"s\"\nrouter = \"127.0.0.1:9\"\n\
             [http]\nlisten = \"127.0.0.1:1\"\npublic_url = \"http://127.0.0.1/\"\ntoken_key = \"0123456789abcdef0123\"\n\
             [node]\nname = \"node_1\"\n[store]\nkind = \"local\"\npath = \"{}\"\n",
            node.display()
        );
        let settings = Settings::from_toml(&text, "test.toml").expect("config");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = http.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(run(
            settings,
            Listeners { http, admin: None },
            async move {
                let _ = stopped.await;
            },
            move || {
                let _ = ready_tx.send(());
            },
        ));
        tokio::time::timeout(Duration::from_secs(20), ready_rx)
            .await
            .expect("ready in time")
            .expect("ready signalled");
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"OPTIONS / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.expect("read");
        assert!(reply.starts_with("HTTP/1.1 204"), "{reply}");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(20), running)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("clean stop");
    }
}
