//! `mftd run`: builds the store, the HTTP endpoint and the component from
//! the settings, runs them side by side, and on SIGINT/SIGTERM stops
//! accepting, lets transfers in flight finish within the grace period,
//! closes the XMPP stream and returns.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mft_storage::local::LocalBackend;
use mft_storage::sftp::SftpBackend;
use mft_storage::transfer_log::TransferLog;
use mft_storage::Store;
use mft_upload_http::{serve, App, HttpSettings, SlotSigner};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::component::{self, LinkSettings};
use crate::config::{Settings, StoreKind};
use crate::rate::SlotRateLimiter;
use crate::service::UploadService;
use crate::space::SpaceGuard;
use mft_storage::quota::Quotas;

/// Opens the configured store.
pub fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store_cfg = &settings.config.store;
    match store_cfg.kind {
        StoreKind::Local => {
            let path = store_cfg
                .path
                .as_ref()
                .context("store.path is required for kind = \"local\"")?;
            let backend = LocalBackend::new(path)
                .with_context(|| format!("while opening the node directory {}", path.display()))?;
            Ok(Store::new(backend))
        }
        StoreKind::Sftp => {
            let sftp = settings
                .sftp()
                .context("[store.sftp] is required for kind = \"sftp\"")?;
            Ok(Store::new(SftpBackend::new(sftp)))
        }
    }
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
            tracing::warn!(error = %e, "cannot read the open-file limit");
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

/// Runs mftd until a stop signal.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let cfg = &settings.config;
    let store = open_store(&settings)?;
    let max_connections = connection_budget(cfg.http.max_connections);
    let signer = SlotSigner::new(settings.token_key.expose().as_bytes());
    let tls = match (&cfg.http.tls_cert, &cfg.http.tls_key) {
        (Some(cert), Some(key)) => Some(mft_upload_http::tls::acceptor(cert, key)?),
        _ => None,
    };
    let log = match settings.database() {
        Some(db) => {
            tracing::info!("connecting to the transfer log database");
            let started = tokio::select! {
                log = TransferLog::start(db, Duration::MAX) => log,
                () = stop_signal() => {
                    tracing::info!("stop signal received before the database was reachable");
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
    // Before any upload can start: clean what a crash left behind.
    match mft_storage::reconcile::recover(
        &store,
        log.as_ref(),
        Some(mft_storage::reconcile::date_days_ago(RECOVERY_DAYS)),
    )
    .await
    {
        Ok(done) if done != Default::default() => {
            tracing::warn!(?done, "recovered from an interrupted run")
        }
        Ok(_) => tracing::debug!("start-up recovery: nothing to clean"),
        Err(e) => tracing::warn!(
            error = %e,
            "start-up recovery skipped (store or database unavailable); run `mftd verify` later"
        ),
    }
    let listener = TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("while binding http.listen = {}", cfg.http.listen))?;
    tracing::info!(
        listen = %cfg.http.listen,
        public_url = %cfg.http.public_url,
        tls = tls.is_some(),
        file_server = %store.file_server(),
        node = %cfg.node.name,
        "HTTP: listening"
    );
    let quotas = Quotas {
        per_user: cfg.quotas.per_user_daily.map_or(0, |b| b.0),
        global: cfg.quotas.global_daily.map_or(0, |b| b.0),
    };
    let http_app = Arc::new(App::new(
        signer.clone(),
        store.clone(),
        HttpSettings {
            base_path: settings.base_path.clone(),
            body_idle_timeout: cfg.http.body_idle_timeout.0,
            header_timeout: cfg.http.header_timeout.0,
            first_byte_timeout: cfg.http.first_byte_timeout.0,
            shutdown_grace: cfg.http.shutdown_grace.0,
            max_connections,
            max_transfers: cfg.http.max_transfers,
            min_rate: cfg.http.min_rate.0,
            rate_grace: cfg.http.rate_grace.0,
            quotas,
        },
        log.clone(),
        cfg.node.name.clone(),
    ));
    let space = SpaceGuard::default();
    let service = Arc::new(UploadService {
        signer,
        store: store.clone(),
        public_url: cfg.http.public_url.clone(),
        max_file_size: settings.max_file_size,
        slot_ttl: cfg.limits.slot_ttl.0,
        allowed_domains: settings.allowed_domains.clone(),
        space: space.clone(),
        log,
        quotas,
        slot_rate: SlotRateLimiter::new(cfg.limits.slots_per_minute, cfg.limits.slot_burst),
        chat: cfg.chat.clone(),
    });
    let link = LinkSettings {
        router: cfg.xmpp.router.clone(),
        jid: cfg.xmpp.component_jid.clone(),
        secret: settings.component_secret.expose().to_owned(),
        keepalive: cfg.xmpp.keepalive.0,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(serve(listener, http_app, tls, async move {
        let _ = http_stop.changed().await;
    }));
    if let Some(sftp) = cfg
        .store
        .sftp
        .as_ref()
        .filter(|_| cfg.store.kind == StoreKind::Sftp)
    {
        tokio::spawn(space.watch(
            store.clone(),
            sftp.alarm_free_percent,
            sftp.min_free_bytes.0,
            stop_rx.clone(),
        ));
        match store.health_check().await {
            Ok(()) => {
                tracing::info!(host = %sftp.host, directory = %sftp.directory, "file server ready")
            }
            Err(e) => {
                tracing::warn!(error = %e, "file server not ready yet; slots wait until it is")
            }
        }
    }
    let xmpp = tokio::spawn(component::run(link, service, stop_rx));

    stop_signal().await;
    tracing::info!("stop signal received: shutting down");
    let _ = stop_tx.send(true);
    let (http, _) = tokio::join!(http, xmpp);
    http.context("HTTP server task")?.context("HTTP server")?;
    tracing::info!("stopped");
    Ok(())
}
