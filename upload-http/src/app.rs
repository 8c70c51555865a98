//! What every request handler shares: the settings, the store and log, and
//! admission — the `max_transfers` permits, the share of them one client may
//! hold, and the leases by which a transfer keeps its permit only while it
//! makes progress. A leaf module: `server`, `put` and `get` import it, it
//! imports none of them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::{header, Request, Response, StatusCode};
use mft_metrics::{metrics, Direction};
use mft_storage::transfer_log::TransferLog;
use mft_storage::Store;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::body::ResponseBody;
use crate::error::HttpError;
use crate::token::SlotSigner;

/// Knobs of the HTTP side.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The path part of the public URL (`/` or e.g. `/upload`).
    pub base_path: String,
    /// How long a connection may make no progress in either direction
    /// (a client silent in the middle of a body, or not reading a download).
    pub body_idle_timeout: Duration,
    /// How long an admitted transfer may move no byte before its connection
    /// is closed and its permit given to others (whatever keeps the
    /// connection itself busy: pings, window updates, other streams).
    pub stall_timeout: Duration,
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
    /// Transfers one client (address, and uploader) may have in flight;
    /// 0 means a quarter of `max_transfers`.
    pub max_transfers_per_client: usize,
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
    /// The peers believed about their clients' addresses (PROXY protocol,
    /// `Forwarded`, `X-Forwarded-For`); empty trusts no one.
    pub trusted_proxies: crate::proxy::TrustedProxies,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            base_path: "/".into(),
            body_idle_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(15),
            header_timeout: Duration::from_secs(30),
            first_byte_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_connections: 10_000,
            max_transfers: 512,
            max_transfers_per_client: 0,
            min_rate: 1024,
            rate_grace: Duration::from_secs(20),
            quotas: mft_storage::quota::Quotas::default(),
            http2: false,
            trusted_proxies: crate::proxy::TrustedProxies::default(),
        }
    }
}

impl HttpSettings {
    /// The per-client share of `max_transfers` in force.
    pub fn per_client_transfers(&self) -> usize {
        match self.max_transfers_per_client {
            0 => (self.max_transfers / 4).max(1),
            n => n,
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
    /// The malware scanner every upload goes through (`[scan]`).
    pub scanner: Option<crate::scan::Scanner>,
    /// Media types that may be uploaded (`limits.allowed_types`, `refused_types`).
    pub types: crate::type_policy::TypePolicy,
    /// The quotas of each uploader when they differ by user (limits per
    /// group); `None`: `settings.quotas` for everyone.
    pub quota_policy: Option<Arc<dyn mft_storage::quota::QuotaPolicy>>,
    /// Transfers in flight per client key.
    per_client: Arc<Mutex<HashMap<String, usize>>>,
    /// The leases the stall watchdog looks at.
    leases: Mutex<Vec<Weak<Lease>>>,
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
            scanner: None,
            types: crate::type_policy::TypePolicy::default(),
            quota_policy: None,
            per_client: Arc::new(Mutex::new(HashMap::new())),
            leases: Mutex::new(Vec::new()),
        }
    }

    /// Attributes downloads to the recipients the router module names,
    /// optionally refusing downloads that name none.
    pub fn with_recipients(mut self, signer: crate::claim::RecipientSigner, require: bool) -> App {
        self.recipients = Some(signer);
        self.require_recipient = require;
        self
    }

    /// Scans uploads with `scanner` (when set) and admits only `types`.
    pub fn with_content_policy(
        mut self,
        scanner: Option<crate::scan::Scanner>,
        types: crate::type_policy::TypePolicy,
    ) -> App {
        self.scanner = scanner;
        self.types = types;
        self
    }

    /// Counts each uploader against the quotas `policy` gives them.
    pub fn with_quota_policy(mut self, policy: Arc<dyn mft_storage::quota::QuotaPolicy>) -> App {
        self.quota_policy = Some(policy);
        self
    }

    /// The quotas `uploader` (the JID the slot names) counts against.
    pub(crate) fn quotas_for(&self, uploader: &str) -> mft_storage::quota::Quotas {
        match &self.quota_policy {
            Some(policy) => policy.quotas_for(uploader),
            None => self.settings.quotas,
        }
    }

    /// This node and its file server, for log rows.
    pub(crate) fn place(&self) -> crate::audit::Place {
        crate::audit::Place {
            node: self.node.clone(),
            file_server: self.store.file_server(),
        }
    }

    /// A permit for one more transfer on `conn` counted against each of
    /// `clients`, or `503` when `max_transfers` are in flight or one of the
    /// clients already holds its share.
    pub(crate) fn admit(
        &self,
        direction: Direction,
        conn: &Conn,
        clients: &[String],
    ) -> Result<Admitted, HttpError> {
        let cap = self.settings.per_client_transfers();
        let mut counts = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(full) = clients
            .iter()
            .find(|c| counts.get(*c).is_some_and(|n| *n >= cap))
        {
            tracing::warn!(client = full.as_str(), cap, "transfer refused: this client holds its share of http.max_transfers (http.max_transfers_per_client)");
            return Err(HttpError::Busy);
        }
        let permit = self.transfers.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(
                max_transfers = self.settings.max_transfers,
                "transfer refused: http.max_transfers are in flight"
            );
            HttpError::Busy
        })?;
        for c in clients {
            *counts.entry(c.clone()).or_insert(0) += 1;
        }
        drop(counts);
        let lease = Arc::new(Lease {
            last_progress_ms: AtomicU64::new(0),
            born: Instant::now(),
            conn_closer: conn.closer.clone(),
        });
        {
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            leases.push(Arc::downgrade(&lease));
        }
        metrics().transfer_started(direction);
        Ok(Admitted {
            _permit: permit,
            direction,
            since: Instant::now(),
            clients: clients.to_vec(),
            per_client: self.per_client.clone(),
            lease,
        })
    }

    /// A download's permit: one share per client address.
    pub(crate) fn admit_download(&self, conn: &Conn) -> Result<Admitted, HttpError> {
        self.admit(Direction::Download, conn, &[client_key(conn.client)])
    }

    /// Closes the connections of transfers that moved no byte for
    /// `stall_timeout`; forgets leases that ended. Called every second.
    pub(crate) fn reap_stalled(&self) {
        let limit = self.settings.stall_timeout;
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases.retain(|weak| {
            let Some(lease) = weak.upgrade() else {
                return false;
            };
            if lease.idle_for() > limit {
                tracing::info!(
                    stall_secs = limit.as_secs(),
                    "transfer stalled past http.stall_timeout: closing its connection"
                );
                lease.conn_closer.notify_one();
                return false;
            }
            true
        });
    }
}

/// The key a client's address is counted under: the address itself for
/// IPv4, the /64 for IPv6 (one host usually has a whole /64).
pub(crate) fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// One connection (for a handler: one request on it) as the handlers see
/// it: who is at the other end, and how to close it when one of its
/// transfers stalls.
#[derive(Clone)]
pub(crate) struct Conn {
    /// The socket's peer: the client, or a proxy in front of it.
    pub peer: SocketAddr,
    /// The client, as far as trusted proxies say ([`crate::proxy`]): the
    /// address logged, and counted against `max_transfers_per_client`.
    pub client: IpAddr,
    /// Wakes the task serving the connection, which then drops it.
    pub closer: Arc<Notify>,
}

/// Progress of one admitted transfer.
pub(crate) struct Lease {
    /// Milliseconds after `born` of the last byte moved; `u64::MAX` once the
    /// transfer no longer depends on the client (an upload being published).
    last_progress_ms: AtomicU64,
    born: Instant,
    conn_closer: Arc<Notify>,
}

impl Lease {
    fn idle_for(&self) -> Duration {
        let last = self.last_progress_ms.load(Ordering::Relaxed);
        if last == u64::MAX {
            return Duration::ZERO;
        }
        self.born
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }
}

/// One admitted transfer: holds its `max_transfers` permit and its clients'
/// shares, and is counted in flight until dropped, when its duration is
/// recorded.
pub(crate) struct Admitted {
    _permit: OwnedSemaphorePermit,
    direction: Direction,
    since: Instant,
    clients: Vec<String>,
    per_client: Arc<Mutex<HashMap<String, usize>>>,
    lease: Arc<Lease>,
}

impl Admitted {
    /// Bytes moved: the stall clock starts again.
    pub(crate) fn progressed(&self) {
        let ms = u64::try_from(self.lease.born.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.lease
            .last_progress_ms
            .store(ms.min(u64::MAX - 1), Ordering::Relaxed);
    }

    /// The client's part is over (the body is in): no stall deadline while
    /// the upload is made durable and logged.
    pub(crate) fn client_done(&self) {
        self.lease
            .last_progress_ms
            .store(u64::MAX, Ordering::Relaxed);
    }
}

impl crate::body::Transfer for Admitted {
    fn progressed(&self) {
        Admitted::progressed(self);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        for c in &self.clients {
            if let Some(n) = counts.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(c);
                }
            }
        }
        metrics().transfer_ended(self.direction, self.since.elapsed());
    }
}

/// Every response.
pub(crate) type Resp = Response<ResponseBody>;

/// A response with `status` and `body`.
pub(crate) fn with_status(status: StatusCode, body: ResponseBody) -> Resp {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp
}

/// A header's value as text, if it is text.
pub(crate) fn header_str<B>(req: &Request<B>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_counted_by_address_and_ipv6_by_slash_64() {
        assert_eq!(client_key("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(
            client_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            client_key("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
        assert_ne!(
            client_key("2001:db8:1:2::1".parse().unwrap()),
            client_key("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(client_key("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1");
    }

    #[test]
    fn the_per_client_share_defaults_to_a_quarter() {
        let s = HttpSettings {
            max_transfers: 16,
            ..HttpSettings::default()
        };
        assert_eq!(s.per_client_transfers(), 4);
        let s = HttpSettings {
            max_transfers: 2,
            ..HttpSettings::default()
        };
        assert_eq!(s.per_client_transfers(), 1);
    }
}
