//! The transfer log in PostgreSQL: every upload (`POST`) and download
//! (`GET`) as a row of `aft_log`, plus the `files` table that says what can
//! be served. Rows are written by one group-commit writer: concurrent
//! requests queue their rows, the writer commits whatever is waiting in one
//! transaction, and each request waits only for the batch holding its row.
//! A request that needs its row committed (an upload before `201`, a
//! download before its first byte) gets an error instead when the database
//! cannot take it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use crate::backoff::Backoff;
use crate::db::{self, DbConfig, DbError};
use crate::error::Chain;
use crate::log_chain::{
    to_micros, AmendRecord, ChainTable, CheckpointRecord, CheckpointSigner, Head, Heads, RowRecord,
};
use crate::log_schema::{self as w, fit};
use crate::prepared::{PreparedClient, StatementCache};
use crate::quota::{check_quota, QuotaAnswer, QuotaScope, QuotaVerdict, Quotas, QUOTA_WINDOW};

/// Rows committed together at most.
const MAX_BATCH: usize = 1000;
/// Jobs waiting for the writer at most (backpressure beyond).
const QUEUE_DEPTH: usize = 8192;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How much longer than the server's `statement_timeout` the writer waits
/// for a batch before it gives the connection up.
const CLIENT_GRACE: Duration = Duration::from_secs(5);
/// How often an idle writer checks its connection.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// One transfer, as the log records it.
#[derive(Debug, Clone, Default)]
pub struct TransferRecord {
    /// Uploader (POST) or downloader (GET, empty when anonymous); bare JID.
    pub jid: String,
    /// Intended recipient: user, group chat or room; empty when unknown.
    pub to_jid: String,
    /// The resource name (Cisco's FILENAME).
    pub resource: String,
    /// The name the user uploaded.
    pub real_filename: String,
    /// Extension, at most 10 characters.
    pub file_type: String,
    /// `im`, `groupchat` or `persistent`.
    pub chat_type: String,
    /// File server host.
    pub file_server: String,
    /// Path below the node directory.
    pub file_path: String,
    /// Size of the file in bytes.
    pub file_size: i64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Content-Type.
    pub content_type: String,
    /// Node name.
    pub node: String,
    /// Client IP address.
    pub client_address: String,
    /// Client User-Agent.
    pub user_agent: String,
    /// HTTP status answered.
    pub http_status: i32,
    /// Bytes of the body sent (downloads) or received (uploads).
    pub bytes_sent: i64,
    /// How long the transfer took.
    pub duration_ms: i64,
    /// What the upload is for (XEP-0363 1.2 purpose; `message` by default).
    pub purpose: String,
    /// When an ephemeral upload must be gone.
    pub expires: Option<SystemTime>,
    /// The malware scanner's verdict (`clean`, `infected`, `unscanned`);
    /// empty without `[scan]` and on GET rows.
    pub scan_verdict: String,
    /// The signature name (infected) or why the file was not scanned.
    pub scan_detail: String,
}

/// A row of `files`.
#[derive(Debug, Clone)]
pub struct FileRow {
    /// Resource name.
    pub resource: String,
    /// Path below the node directory.
    pub storage_path: String,
    /// Size in bytes.
    pub size: i64,
    /// Content-Type.
    pub content_type: String,
    /// SHA-256.
    pub sha256: String,
    /// Uploader's bare JID.
    pub uploader: String,
    /// Intended recipient.
    pub to_jid: String,
    /// Chat type.
    pub chat_type: String,
    /// Uploaded name.
    pub real_filename: String,
    /// When it was stored.
    pub created: SystemTime,
    /// When it was purged, if it was.
    pub deleted: Option<SystemTime>,
    /// The node whose directory holds it.
    pub node: String,
    /// The file server holding it.
    pub file_server: String,
    /// What it was uploaded for.
    pub purpose: String,
    /// When it must be gone (ephemeral uploads).
    pub expires: Option<SystemTime>,
    /// When a rescan found it infected (it is not served from then on).
    pub quarantined: Option<SystemTime>,
    /// The latest recorded verdict's detail (the signature name).
    pub scan_detail: String,
}

/// The columns [`file_row`] reads, in its order.
pub(crate) const FILE_ROW_COLUMNS: &str =
    "resource, storage_path, size, content_type, sha256, uploader, to_jid, chat_type, \
     real_filename, created, deleted, node, file_server, purpose, expires, quarantined, scan_detail";

enum Op {
    Upload(TransferRecord),
    /// The POST row of an upload that was refused after its body arrived
    /// (malware, scanner down): a row, but no `files` row.
    Refused(TransferRecord),
    Download(TransferRecord),
    Finish {
        id: i64,
        bytes_sent: i64,
        duration_ms: i64,
        status: i32,
    },
    /// A share report: its `shares` row and, for the uploader's first
    /// share, the recipient and chat type amended onto the file's rows.
    Share(Share),
    /// Today's checkpoint of a node's chain heads, unless it has one.
    Checkpoint {
        node: String,
        day: String,
        signer: Option<Arc<dyn CheckpointSigner>>,
    },
}

struct Job {
    op: Op,
    done: Option<oneshot::Sender<Result<i64, DbError>>>,
}

/// The handle the rest of mftd uses; cheap to clone.
#[derive(Clone)]
pub struct TransferLog {
    tx: mpsc::Sender<Job>,
    /// The node whose chains this process continues with amendments and
    /// checkpoints (see [`set_node`](Self::set_node)).
    chain_node: Arc<OnceLock<String>>,
    healthy: Arc<AtomicBool>,
    reader: Arc<Reader>,
}

struct Reader {
    db: DbConfig,
    client: Mutex<Option<Arc<PreparedClient>>>,
    /// A connection of its own for the bookkeeping of requests — slot
    /// claims and their release, the shared slot rate — committed without
    /// waiting for the write-ahead log to reach the disk
    /// (`synchronous_commit = off`; see [`Reader::bookkeeping`]).
    bookkeeping: Mutex<Option<Arc<PreparedClient>>>,
    /// A connection of its own for transactions (they need `&mut`), with
    /// the statements prepared on it.
    quota: Mutex<Option<(Client, StatementCache)>>,
    /// Until when reads fail at once: the database left one unanswered
    /// (a hung server) moments ago. Without it, the steps of one request
    /// (the shared slot rate, then the quota check) and the requests
    /// queued behind the quota connection would each wait out the whole
    /// limit in turn.
    unanswered_until: std::sync::Mutex<Option<Instant>>,
}

/// How long reads fail at once after one went unanswered.
const HOLD_OFF: Duration = Duration::from_secs(2);

impl Reader {
    /// Fails at once while the database is held off (see
    /// [`Reader::unanswered_until`]).
    fn held_off(&self) -> Result<(), DbError> {
        let until = *self
            .unanswered_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match until {
            Some(at) if Instant::now() < at => Err(DbError::unavailable(
                "the database left a query unanswered moments ago; not asking again yet",
            )),
            _ => Ok(()),
        }
    }

    /// A query went unanswered within the limit.
    fn unanswered(&self) {
        *self
            .unanswered_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + HOLD_OFF);
    }

    /// The connection for transactions (quotas, shares), connected.
    async fn own(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<(Client, StatementCache)>>, DbError> {
        let mut guard = self.quota.lock().await;
        self.held_off()?;
        if guard.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            let client = db::connect(&self.db, CONNECT_TIMEOUT).await?;
            *guard = Some((client, StatementCache::default()));
        }
        Ok(guard)
    }

    /// The shared connection for reads and durable single statements.
    async fn client(&self) -> Result<Arc<PreparedClient>, DbError> {
        self.shared(&self.client, None).await
    }

    /// The shared connection for bookkeeping that a crash may lose without
    /// harm, whose commits do not wait for the disk. A slot's claim is made
    /// durable by the upload's own log rows: their synchronous commit
    /// flushes the write-ahead log up to and past the claim, so a claim
    /// can be lost only with an upload that never got its `201` — and a
    /// lost claim is what a released one is, a slot usable again. A lost
    /// release leaves the slot used; a lost rate token gives a user one
    /// more request. Other sessions see each commit at once, as before, so
    /// two uploads into one slot are still refused. What it saves is a
    /// wait for the disk per upload on a connection every request shares.
    async fn bookkeeping(&self) -> Result<Arc<PreparedClient>, DbError> {
        self.shared(&self.bookkeeping, Some("SET synchronous_commit = off"))
            .await
    }

    /// The connection in `slot`, connected (and `setup` run) if needed.
    async fn shared(
        &self,
        slot: &Mutex<Option<Arc<PreparedClient>>>,
        setup: Option<&str>,
    ) -> Result<Arc<PreparedClient>, DbError> {
        self.held_off()?;
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = db::connect(&self.db, CONNECT_TIMEOUT).await?;
        if let Some(sql) = setup {
            client
                .batch_execute(sql)
                .await
                .map_err(|e| DbError::query("setting up a connection", e))?;
        }
        let c = Arc::new(PreparedClient::new(client));
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Runs a query on `used` within the service's limit (`statement_timeout`
    /// and a grace, as the writer does: a server that stopped answering at
    /// all, a hung primary, cannot cancel the statement itself). A failure
    /// that says the server cannot take the work — no answer in time, or a
    /// standby after a failover answering 25006 on an open connection —
    /// drops that connection, so the next query connects anew and finds the
    /// host that takes writes. Should the cache be busy the connection
    /// stays, to be dropped on its next failure.
    async fn check<T>(
        &self,
        used: &Arc<PreparedClient>,
        query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
        what: &str,
    ) -> Result<T, DbError> {
        let result = match self.db.statement_timeout.map(|t| t + CLIENT_GRACE) {
            Some(limit) => match tokio::time::timeout(limit, query).await {
                Ok(result) => result.map_err(|e| DbError::query(what, e)),
                Err(_) => {
                    self.unanswered();
                    Err(DbError::unavailable(format!(
                        "{what}: the database did not answer within {limit:?}"
                    )))
                }
            },
            None => query.await.map_err(|e| DbError::query(what, e)),
        };
        result.inspect_err(|e| {
            if e.is_unavailable() {
                for slot in [&self.client, &self.bookkeeping] {
                    if let Ok(mut guard) = slot.try_lock() {
                        if guard.as_ref().is_some_and(|c| Arc::ptr_eq(c, used)) {
                            *guard = None;
                        }
                    }
                }
            }
        })
    }
}

impl TransferLog {
    /// Connects (retrying with backoff until `give_up_after`), applies
    /// pending migrations when the role may (see
    /// [`db::migrate_if_permitted`]: a least-privilege role never attempts
    /// DDL and refuses an older schema), and starts the writer.
    pub async fn start(
        db: impl Into<DbConfig>,
        give_up_after: Duration,
    ) -> Result<TransferLog, DbError> {
        let db: DbConfig = db.into();
        let started = Instant::now();
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut client = loop {
            match db::connect(&db, CONNECT_TIMEOUT).await {
                Ok(c) => break c,
                Err(e) if started.elapsed() < give_up_after => {
                    let wait = backoff.failed();
                    tracing::warn!(error = %Chain(&e), retry_in_ms = wait.as_millis() as u64, "database not reachable yet");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        };
        let applied = db::migrate_if_permitted(&mut client).await?;
        if !applied.is_empty() {
            tracing::info!(versions = ?applied, "database migrations applied");
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let healthy = Arc::new(AtomicBool::new(true));
        let chain_node = Arc::new(OnceLock::new());
        tokio::spawn(writer(
            db.clone(),
            client,
            rx,
            healthy.clone(),
            chain_node.clone(),
        ));
        Ok(TransferLog {
            tx,
            chain_node,
            healthy,
            reader: Arc::new(Reader {
                db,
                client: Mutex::new(None),
                bookkeeping: Mutex::new(None),
                quota: Mutex::new(None),
                unanswered_until: std::sync::Mutex::new(None),
            }),
        })
    }

    /// Names the node this process runs as: amendments (a download's end, a
    /// share's recipient) and checkpoints are chained in its chains. Set
    /// once, before serving; until then an amendment goes into the chain of
    /// the node that wrote the amended row.
    pub fn set_node(&self, node: &str) {
        let _ = self.chain_node.set(fit(node, w::LABEL));
    }

    /// Writes today's (UTC) checkpoint of `node`'s chain heads, signed when
    /// a signer is given, unless the node has one for today. `true` when
    /// written.
    pub async fn checkpoint(
        &self,
        node: &str,
        signer: Option<Arc<dyn CheckpointSigner>>,
    ) -> Result<bool, DbError> {
        let day = crate::utc::UtcTime::now().xep0082()[..10].to_owned();
        let written = self
            .submit(Op::Checkpoint {
                node: fit(node, w::LABEL),
                day,
                signer,
            })
            .await?;
        Ok(written > 0)
    }

    /// False while the writer cannot reach the database: new transfers are
    /// refused up front instead of after their bytes arrived.
    pub fn is_available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Rows queued for the writer and not yet taken into a batch.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    async fn submit(&self, op: Op) -> Result<i64, DbError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job {
                op,
                done: Some(done),
            })
            .await
            .map_err(|_| DbError::unavailable("transfer log writer stopped"))?;
        wait.await
            .map_err(|_| DbError::unavailable("transfer log writer stopped"))?
    }

    /// Commits the POST row and the `files` row of a stored upload.
    pub async fn record_upload(&self, rec: TransferRecord) -> Result<i64, DbError> {
        self.submit(Op::Upload(rec)).await
    }

    /// Commits the POST row of an upload refused after its body arrived
    /// (no `files` row: nothing is served); its `http_status` says how.
    pub async fn record_refused_upload(&self, rec: TransferRecord) -> Result<i64, DbError> {
        self.submit(Op::Refused(rec)).await
    }

    /// Commits a GET row; returns its `aft_index` for [`finish_download`](Self::finish_download).
    pub async fn record_download(&self, rec: TransferRecord) -> Result<i64, DbError> {
        self.submit(Op::Download(rec)).await
    }

    /// Records how a download ended (bytes actually sent, duration, the
    /// status it really had). Queued without waiting; when the queue is full
    /// a task waits for room, so the end is not lost to a burst.
    pub fn finish_download(&self, id: i64, bytes_sent: i64, duration_ms: i64, status: i32) {
        let job = Job {
            op: Op::Finish {
                id,
                bytes_sent,
                duration_ms,
                status,
            },
            done: None,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                let tx = self.tx.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = tx.send(job).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::warn!(
                    aft_index = id,
                    bytes_sent,
                    "could not record the end of a download: the log writer stopped"
                );
            }
        }
    }

    /// Claims `resource`'s slot for one upload through `node`, before any
    /// byte is stored: `false` when it was used before (its claim or its
    /// `files` row exists, even if the file was retired since) or an upload
    /// into it is in progress on any node.
    pub async fn claim_slot(&self, resource: &str, node: &str) -> Result<bool, DbError> {
        let client = self.reader.bookkeeping().await?;
        let claimed = self
            .reader
            .check(
                &client,
                client.execute(
                    "INSERT INTO used_slots (resource, node) SELECT $1::varchar, $2::varchar \
                     WHERE NOT EXISTS (SELECT 1 FROM files WHERE resource = $1::varchar) \
                     ON CONFLICT (resource) DO NOTHING",
                    &[&fit(resource, w::NAME), &fit(node, w::LABEL)],
                ),
                "claiming a slot",
            )
            .await?;
        Ok(claimed == 1)
    }

    /// Forgets bookkeeping no request can need any more, so it does not
    /// grow with every user and every upload forever: a user's shared slot
    /// rate untouched for a day (the bucket has refilled: the same as no
    /// row, for any burst up to a day's worth of the rate), and a slot's
    /// claim older than a week (its token long expired, its upload long
    /// over). Returns (rates, claims) removed.
    pub async fn prune_bookkeeping(&self) -> Result<(u64, u64), DbError> {
        let client = self.reader.bookkeeping().await?;
        let rates = self
            .reader
            .check(
                &client,
                client.execute(
                    "DELETE FROM slot_rates WHERE updated < now() - interval '1 day'",
                    &[],
                ),
                "forgetting idle slot rates",
            )
            .await?;
        let claims = self
            .reader
            .check(
                &client,
                client.execute(
                    "DELETE FROM used_slots WHERE claimed_at < now() - interval '7 days'",
                    &[],
                ),
                "forgetting old slot claims",
            )
            .await?;
        Ok((rates, claims))
    }

    /// Gives back the claim of an upload that stored nothing, so the client
    /// may retry its slot. A claim whose file was logged stays.
    pub async fn release_slot(&self, resource: &str) -> Result<(), DbError> {
        let client = self.reader.bookkeeping().await?;
        self.reader
            .check(
                &client,
                client.execute(
                    "DELETE FROM used_slots WHERE resource = $1 \
                     AND NOT EXISTS (SELECT 1 FROM files WHERE resource = $1)",
                    &[&fit(resource, w::NAME)],
                ),
                "releasing a slot",
            )
            .await?;
        Ok(())
    }

    /// Takes one slot request from `who`'s bucket, shared by every node:
    /// `per_minute` on average, `burst` at once. `Ok(None)` when allowed,
    /// `Ok(Some(wait))` when `who` must wait first. Refill and take are one
    /// statement on the row (`ON CONFLICT` locks it), so concurrent requests
    /// on any node are each counted once.
    pub async fn take_slot_token(
        &self,
        who: &str,
        per_minute: u32,
        burst: u32,
    ) -> Result<Option<Duration>, DbError> {
        let rate = f64::from(per_minute) / 60.0;
        let burst = f64::from(burst.max(1));
        let client = self.reader.bookkeeping().await?;
        let row = self
            .reader
            .check(
                &client,
                client.query_one(
                    "INSERT INTO slot_rates AS r (jid, tokens, updated, taken) \
                     VALUES ($1::varchar, $3::float8 - 1, now(), true) \
                     ON CONFLICT (jid) DO UPDATE SET \
                       taken = LEAST($3::float8, r.tokens + $2::float8 * \
                               extract(epoch FROM now() - r.updated)::float8) >= 1, \
                       tokens = LEAST($3::float8, r.tokens + $2::float8 * \
                                extract(epoch FROM now() - r.updated)::float8) \
                                - CASE WHEN LEAST($3::float8, r.tokens + $2::float8 * \
                                       extract(epoch FROM now() - r.updated)::float8) >= 1 \
                                  THEN 1 ELSE 0 END, \
                       updated = now() \
                     RETURNING tokens, taken",
                    &[&fit(who, w::JID), &rate, &burst],
                ),
                "taking a slot request from the shared rate",
            )
            .await?;
        let (tokens, taken): (f64, bool) = (row.get(0), row.get(1));
        Ok((!taken).then(|| Duration::from_secs_f64(((1.0 - tokens) / rate).max(0.0))))
    }

    /// The `files` row of a resource.
    pub async fn file(&self, resource: &str) -> Result<Option<FileRow>, DbError> {
        let client = self.reader.client().await?;
        let row = self
            .reader
            .check(
                &client,
                client.query_opt(
                    &format!("SELECT {FILE_ROW_COLUMNS} FROM files WHERE resource = $1"),
                    &[&resource],
                ),
                "looking up a file",
            )
            .await?;
        Ok(row.map(|r| file_row(&r)))
    }

    /// Checks `size` more bytes from `uploader` against `quotas` and, when
    /// they fit, reserves them for `resource` until `expires` — all in one
    /// transaction under advisory locks (per uploader, and service-wide when a
    /// global quota is set), so concurrent requests on any node are counted
    /// one after the other. A resource that already holds a reservation fits.
    pub async fn reserve(
        &self,
        resource: &str,
        uploader: &str,
        size: u64,
        expires: SystemTime,
        quotas: Quotas,
    ) -> Result<QuotaVerdict, DbError> {
        let mut own = self.reader.own().await?;
        let Some((client, statements)) = own.as_mut() else {
            return Err(DbError::unavailable("no connection for quotas"));
        };
        let work = reserve_in(
            client, statements, resource, uploader, size, expires, quotas,
        );
        // Within the service's limit, like every other query: a server that
        // stopped answering (a hung primary) cannot cancel it itself.
        let result = match self.reader.db.statement_timeout.map(|t| t + CLIENT_GRACE) {
            Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                self.reader.unanswered();
                Err(DbError::unavailable(format!(
                    "checking quotas: the database did not answer within {limit:?}"
                )))
            }),
            None => work.await,
        };
        if result.is_err() {
            *own = None; // Reconnect next time.
        }
        result
    }

    /// Records that a message carrying `share.resource`'s URL went from
    /// `sender` to `recipient`: a `shares` row — and, when the sender is the
    /// uploader and the upload names no recipient yet, the `files` row's
    /// recipient and chat type (retention follows the chat type, so nobody
    /// else's forward may change it) and, as amendments in the log, its POST
    /// row's TO_JID and CHAT_TYPE and the CHAT_TYPE of GET rows written
    /// before it (recipients fetch while the report is on its way). Written
    /// by the log writer in one transaction; a share of a resource that has
    /// no `files` row writes nothing and returns `false`.
    pub async fn record_share(&self, share: &Share) -> Result<bool, DbError> {
        Ok(self.submit(Op::Share(share.clone())).await? > 0)
    }

    /// Which of `resources` have a `files` row (live or purged).
    pub async fn known_resources(
        &self,
        resources: &[String],
    ) -> Result<std::collections::HashSet<String>, DbError> {
        let client = self.reader.client().await?;
        let rows = self
            .reader
            .check(
                &client,
                client.query(
                    "SELECT resource FROM files WHERE resource = ANY($1)",
                    &[&resources],
                ),
                "looking up files",
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The live `files` rows of `node`, oldest first.
    pub async fn live_files(&self, node: &str) -> Result<Vec<FileRow>, DbError> {
        let client = self.reader.client().await?;
        let rows = self
            .reader
            .check(
                &client,
                client.query(
                    &format!(
                        "SELECT {FILE_ROW_COLUMNS} FROM files WHERE node = $1 AND deleted IS NULL \
                         AND quarantined IS NULL ORDER BY created"
                    ),
                    &[&node],
                ),
                "listing live files",
            )
            .await?;
        Ok(rows.iter().map(file_row).collect())
    }

    /// A new connection of the caller's own (advisory locks live as long as it).
    pub async fn dedicated_client(&self) -> Result<Client, DbError> {
        db::connect(&self.reader.db, CONNECT_TIMEOUT).await
    }

    /// Checks the database answers a query (health checks).
    pub async fn ping(&self) -> Result<(), DbError> {
        let client = self.reader.client().await?;
        self.reader
            .check(
                &client,
                client.simple_query("SELECT 1"),
                "checking the database answers",
            )
            .await
            .map(|_| ())
    }

    /// A client for ad-hoc read queries (the `mftd log` command).
    pub async fn read_client(&self) -> Result<Arc<PreparedClient>, DbError> {
        self.reader.client().await
    }
}

/// A file's URL seen in a message by the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The file's resource name.
    pub resource: String,
    /// Who sent the message (full or bare JID).
    pub sender: String,
    /// Who it went to: a user, or a room's bare JID.
    pub recipient: String,
    /// `im`, `groupchat` or `persistent`.
    pub chat_type: String,
    /// The router domain that reported it.
    pub reported_by: String,
    /// When the message was sent (Unix seconds), for a report the router
    /// queued while mftd was away; `None` means now.
    pub sent_at: Option<u64>,
}

const QUOTA_LOCK_GLOBAL: i64 = 7_314_602;

async fn reserve_in(
    client: &mut Client,
    statements: &StatementCache,
    resource: &str,
    uploader: &str,
    size: u64,
    expires: SystemTime,
    quotas: Quotas,
) -> Result<QuotaVerdict, DbError> {
    let q = |what: &'static str| move |e| DbError::query(what, e);
    let tx = client
        .transaction()
        .await
        .map_err(q("starting a quota check"))?;
    if quotas.global > 0 {
        statements
            .execute(
                &tx,
                "SELECT pg_advisory_xact_lock($1)",
                &[&QUOTA_LOCK_GLOBAL],
            )
            .await
            .map_err(q("locking the global quota"))?;
    }
    statements
        .execute(
            &tx,
            "SELECT pg_advisory_xact_lock(7314603, hashtext($1))",
            &[&uploader],
        )
        .await
        .map_err(q("locking the user's quota"))?;
    let held = statements
        .query_opt(
            &tx,
            "SELECT 1 FROM slot_reservations WHERE resource = $1",
            &[&resource],
        )
        .await
        .map_err(q("reading a reservation"))?
        .is_some();
    if held {
        return Ok(QuotaVerdict::Fits);
    }
    let now = SystemTime::now();
    let since = now - QUOTA_WINDOW;
    // Logged uploads in the window, then live reservations as if used now.
    let usage_sql = "SELECT created, size FROM files WHERE ($1::text IS NULL OR uploader = $1) AND created > $2 \
         UNION ALL SELECT now(), size FROM slot_reservations \
         WHERE ($1::text IS NULL OR uploader = $1) AND expires > now() \
         AND resource NOT IN (SELECT resource FROM files) ORDER BY 1";
    for (quota, scope, who) in [
        (quotas.per_user, QuotaScope::User, Some(uploader)),
        (quotas.global, QuotaScope::Global, None),
    ] {
        if quota == 0 {
            continue;
        }
        let rows = statements
            .query(&tx, usage_sql, &[&who, &since])
            .await
            .map_err(q("summing uploads for the quota"))?;
        let usage: Vec<(SystemTime, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let answer = check_quota(quota, &usage, size, now);
        if answer != QuotaAnswer::Fits {
            return Ok(QuotaVerdict::Refused {
                scope,
                quota,
                answer,
            });
        }
    }
    let size = i64::try_from(size).unwrap_or(i64::MAX);
    statements
        .execute(
            &tx,
            "DELETE FROM slot_reservations WHERE expires < now() - interval '1 hour'",
            &[],
        )
        .await
        .map_err(q("sweeping expired reservations"))?;
    statements
        .execute(
            &tx,
            "INSERT INTO slot_reservations (resource, uploader, size, expires) VALUES ($1, $2, $3, $4)",
            &[
                &fit(resource, w::NAME),
                &fit(uploader, w::JID),
                &size,
                &expires,
            ],
        )
        .await
        .map_err(q("reserving quota for a slot"))?;
    tx.commit().await.map_err(q("committing a reservation"))?;
    Ok(QuotaVerdict::Fits)
}

/// How many columns [`FILE_ROW_COLUMNS`] names: a query that selects more
/// after them finds its own at this index.
pub(crate) const FILE_ROW_WIDTH: usize = 17;

pub(crate) fn file_row(r: &tokio_postgres::Row) -> FileRow {
    file_row_at(r, 0)
}

/// [`file_row`] of the columns starting at `first`.
pub(crate) fn file_row_at(r: &tokio_postgres::Row, first: usize) -> FileRow {
    let at = |i: usize| first + i;
    FileRow {
        resource: r.get(at(0)),
        storage_path: r.get(at(1)),
        size: r.get(at(2)),
        content_type: r.get(at(3)),
        sha256: r.get(at(4)),
        uploader: r.get(at(5)),
        to_jid: r.get(at(6)),
        chat_type: r.get(at(7)),
        real_filename: r.get(at(8)),
        created: r.get(at(9)),
        deleted: r.get(at(10)),
        node: r.get(at(11)),
        file_server: r.get(at(12)),
        purpose: r.get(at(13)),
        expires: r.get(at(14)),
        quarantined: r.get(at(15)),
        scan_detail: r.get(at(16)),
    }
}

/// Makes sure the writer has a live connection, reconnecting on the shared
/// schedule; `Err` says why there is none (while a retry is not yet due, or
/// when it failed).
///
/// A new connection may reach another server than the last one did (a
/// promoted standby that never received the last commits of an
/// asynchronously replicated primary), so the chain heads are forgotten
/// with the old connection and read again from the server now in use: a
/// chain continued from a head only the dead primary had would show as a
/// deleted record to `mftd verify --log`.
async fn ensure_connected(
    db: &DbConfig,
    client: &mut Option<Client>,
    heads: &mut Heads,
    statements: &StatementCache,
    backoff: &mut Backoff,
    healthy: &AtomicBool,
) -> Result<(), Arc<DbError>> {
    if client.as_ref().is_some_and(|c| !c.is_closed()) {
        return Ok(());
    }
    *client = None;
    heads.clear();
    statements.clear();
    healthy.store(false, Ordering::Relaxed);
    if backoff.waiting().is_some() {
        return Err(Arc::new(DbError::unavailable("reconnecting")));
    }
    match db::connect(db, CONNECT_TIMEOUT).await {
        Ok(c) => {
            tracing::info!("transfer log: database reachable again");
            *client = Some(c);
            backoff.succeeded();
            healthy.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            let wait = backoff.failed();
            tracing::warn!(error = %Chain(&e), retry_in_ms = wait.as_millis() as u64, "transfer log: database unavailable");
            Err(Arc::new(e))
        }
    }
}

async fn writer(
    db: DbConfig,
    client: Client,
    mut rx: mpsc::Receiver<Job>,
    healthy: Arc<AtomicBool>,
    chain_node: Arc<OnceLock<String>>,
) {
    let mut client = Some(client);
    // The chain heads this writer continues. One writer per process, and one
    // process per node (the node lock), so the heads need no lock; another
    // writer on the same chain (it should not exist) is caught by the
    // unique (node, chain_seq) index, and any failed batch drops the heads
    // so they are read again from the database.
    let mut heads = Heads::new();
    // The statements prepared on `client`; cleared with it.
    let statements = StatementCache::default();
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let deadline = db.statement_timeout.map(|t| t + CLIENT_GRACE);
    loop {
        // Idle ticks keep the health flag true to the database: a dead
        // connection is noticed, and a reachable database is reconnected
        // even while every request is being refused up front.
        let first = match tokio::time::timeout(PROBE_EVERY, rx.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(_) => {
                let _ = ensure_connected(
                    &db,
                    &mut client,
                    &mut heads,
                    &statements,
                    &mut backoff,
                    &healthy,
                )
                .await;
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if let Err(why) = ensure_connected(
            &db,
            &mut client,
            &mut heads,
            &statements,
            &mut backoff,
            &healthy,
        )
        .await
        {
            fail(batch, why);
            continue;
        }
        let Some(c) = client.as_mut() else { continue };
        let started = Instant::now();
        let node = chain_node.get().map(String::as_str);
        let write = write_batch(c, &statements, &batch, &mut heads, node);
        let outcome = match within(deadline, write).await {
            // A row the database refuses (a constraint, a value) must not
            // take its neighbours down: write each job on its own instead.
            Err(DbError::Query { .. }) => {
                let write = write_one_by_one(c, &statements, &batch, &mut heads, node);
                within(deadline, write).await
            }
            outcome => outcome,
        };
        match outcome {
            Ok(results) => {
                mft_metrics::metrics().log_committed(batch.len(), started.elapsed());
                for (job, result) in batch.into_iter().zip(results) {
                    if let Some(done) = job.done {
                        let _ = done.send(result);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %Chain(&e), rows = batch.len(), "transfer log: batch not committed");
                if e.is_unavailable() {
                    client = None;
                    healthy.store(false, Ordering::Relaxed);
                    backoff.failed();
                }
                // A batch given up mid-commit may have committed after all:
                // the heads are read again before the next one.
                heads.clear();
                fail(batch, Arc::new(e));
            }
        }
    }
}

/// The client's own limit on a batch: the server's `statement_timeout`
/// cancels a statement stuck on a lock or a full disk; this catches a
/// server that stopped answering at all (a network black hole), after
/// which the connection is dropped and rebuilt.
async fn within(
    deadline: Option<Duration>,
    work: impl std::future::Future<Output = BatchOutcome>,
) -> BatchOutcome {
    let Some(limit) = deadline else {
        return work.await;
    };
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(DbError::unavailable(format!(
            "the database did not answer within {limit:?}"
        )))
    })
}

/// Writes each job in a transaction of its own: one refused row fails only
/// its own request. Stops at a lost connection (every job then fails).
async fn write_one_by_one(
    client: &mut Client,
    statements: &StatementCache,
    batch: &[Job],
    heads: &mut Heads,
    node: Option<&str>,
) -> BatchOutcome {
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        match write_batch(client, statements, std::slice::from_ref(job), heads, node).await {
            Ok(mut one) => results.push(one.pop().unwrap_or(Ok(0))),
            Err(e @ DbError::Unavailable { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "transfer log: one row refused by the database");
                results.push(Err(e));
            }
        }
    }
    Ok(results)
}

fn fail(batch: Vec<Job>, why: Arc<DbError>) {
    mft_metrics::metrics()
        .log_failed_rows
        .inc_by(batch.len() as u64);
    for job in batch {
        if let Some(done) = job.done {
            let _ = done.send(Err(DbError::unavailable_because(
                "the row was not written",
                Arc::clone(&why),
            )));
        }
    }
}

type Param = Box<dyn ToSql + Sync + Send>;

/// The row `r` is written as (texts cut to their columns), before chaining.
fn row_record(id: i64, method: &str, r: &TransferRecord, now: SystemTime) -> RowRecord {
    RowRecord {
        node: fit(&r.node, w::LABEL),
        aft_index: id,
        jid: fit(&r.jid, w::JID),
        to_jid: fit(&r.to_jid, w::JID),
        method: method.to_owned(),
        filename: fit(&r.resource, w::NAME),
        real_filename: fit(&r.real_filename, w::NAME),
        file_type: fit(&r.file_type, w::SHORT),
        chat_type: fit(&r.chat_type, w::SHORT),
        file_server: fit(&r.file_server, w::FILE_SERVER),
        file_path: fit(&r.file_path, w::PATH),
        file_size: r.file_size,
        date_time: now,
        sha256: fit(&r.sha256, w::SHA256),
        content_type: fit(&r.content_type, w::LABEL),
        client_address: fit(&r.client_address, w::ADDRESS),
        user_agent: fit(&r.user_agent, w::USER_AGENT),
        http_status: r.http_status,
        bytes_sent: r.bytes_sent,
        duration_ms: r.duration_ms,
        scan_verdict: fit(&r.scan_verdict, w::SCAN_VERDICT),
        scan_detail: fit(&r.scan_detail, w::SCAN_DETAIL),
    }
}

fn log_params(r: RowRecord, (seq, prev, hash): (i64, String, String)) -> Vec<Param> {
    vec![
        Box::new(r.aft_index),
        Box::new(r.jid),
        Box::new(r.to_jid),
        Box::new(r.method),
        Box::new(r.filename),
        Box::new(r.real_filename),
        Box::new(r.file_type),
        Box::new(r.chat_type),
        Box::new(r.file_server),
        Box::new(r.file_path),
        Box::new(r.file_size),
        Box::new(r.date_time),
        Box::new(r.sha256),
        Box::new(r.content_type),
        Box::new(r.node),
        Box::new(r.client_address),
        Box::new(r.user_agent),
        Box::new(r.http_status),
        Box::new(r.bytes_sent),
        Box::new(r.duration_ms),
        Box::new(r.scan_verdict),
        Box::new(r.scan_detail),
        Box::new(seq),
        Box::new(prev),
        Box::new(hash),
    ]
}

const LOG_COLUMNS: &str =
    "aft_index, jid, to_jid, method, filename, real_filename, file_type, chat_type, \
     file_server, file_path, file_size, date_time, sha256, content_type, node, client_address, \
     user_agent, http_status, bytes_sent, duration_ms, scan_verdict, scan_detail, \
     chain_seq, chain_prev, chain_hash";

/// Parameters per `aft_log_rows` row ([`log_params`]).
const LOG_WIDTH: usize = 25;

const AMEND_COLUMNS: &str = "amend_id, aft_index, node, what, to_jid, chat_type, http_status, \
     bytes_sent, duration_ms, date_time, chain_seq, chain_prev, chain_hash";

/// Parameters per `aft_log_amends` row ([`amend_params`]).
const AMEND_WIDTH: usize = 13;

fn amend_params(a: AmendRecord, (seq, prev, hash): (i64, String, String)) -> Vec<Param> {
    vec![
        Box::new(a.amend_id),
        Box::new(a.aft_index),
        Box::new(a.node),
        Box::new(a.what),
        Box::new(a.to_jid),
        Box::new(a.chat_type),
        Box::new(a.http_status),
        Box::new(a.bytes_sent),
        Box::new(a.duration_ms),
        Box::new(a.date_time),
        Box::new(seq),
        Box::new(prev),
        Box::new(hash),
    ]
}

fn file_params(r: &TransferRecord, now: SystemTime) -> Vec<Param> {
    vec![
        Box::new(fit(&r.resource, w::NAME)),
        Box::new(fit(&r.file_path, w::PATH)),
        Box::new(fit(&r.file_server, w::FILE_SERVER)),
        Box::new(fit(&r.node, w::LABEL)),
        Box::new(r.file_size),
        Box::new(fit(&r.content_type, w::LABEL)),
        Box::new(fit(&r.sha256, w::SHA256)),
        Box::new(fit(&r.jid, w::JID)),
        Box::new(fit(&r.to_jid, w::JID)),
        Box::new(fit(&r.chat_type, w::SHORT)),
        Box::new(fit(&r.real_filename, w::NAME)),
        Box::new(now),
        Box::new(fit(&r.purpose, w::PURPOSE)),
        Box::new(r.expires),
    ]
}

const FILE_COLUMNS: &str =
    "resource, storage_path, file_server, node, size, content_type, sha256, uploader, \
     to_jid, chat_type, real_filename, created, purpose, expires";

/// `INSERT INTO table (columns) VALUES ($1,…),(…)` for `rows` rows of `width` parameters.
fn multi_insert(table: &str, columns: &str, width: usize, rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} ({columns}) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for col in 0..width {
            if col > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", row * width + col + 1));
        }
        sql.push(')');
    }
    sql
}

/// Multi-row inserts of at most this many parameters are kept prepared:
/// the batch sizes of a steady load recur; a backlog's large batches are
/// rare, and each prepared plan of thousands of parameters would stay in
/// the server's memory for the connection's life.
const CACHED_PARAMS: usize = 1024;

async fn query_params(
    tx: &Client,
    statements: &StatementCache,
    sql: &str,
    params: &[Param],
    what: &str,
) -> Result<Vec<tokio_postgres::Row>, DbError> {
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let result = if params.len() <= CACHED_PARAMS {
        statements.query(tx, sql, &refs).await
    } else {
        tx.query(sql, &refs).await
    };
    result.map_err(|e| DbError::query(what, e))
}

/// Per job: its row's `aft_index` (0 for updates), or why its row alone was
/// not written; `Err` when the batch as a whole was not committed.
type BatchOutcome = Result<Vec<Result<i64, DbError>>, DbError>;

/// Writes one batch in one transaction, chaining every record after
/// `heads`; the heads move on only when the batch commits (and are dropped
/// when it fails, to be read again). An upload whose resource already has
/// a `files` row (its slot was used before, here or on another node) is
/// refused on its own with [`DbError::SlotUsed`]; the rest commit.
async fn write_batch(
    client: &mut Client,
    statements: &StatementCache,
    batch: &[Job],
    heads: &mut Heads,
    node: Option<&str>,
) -> BatchOutcome {
    let mut tentative = heads.clone();
    match write_chained(client, statements, batch, &mut tentative, node).await {
        Ok(results) => {
            *heads = tentative;
            Ok(results)
        }
        Err(e) => {
            heads.clear();
            Err(e)
        }
    }
}

/// The head of `table`'s chain of `node`: from `heads`, else the database.
async fn head<'h>(
    tx: &Client,
    heads: &'h mut Heads,
    table: ChainTable,
    node: &str,
) -> Result<&'h mut Head, DbError> {
    let key = (table, node.to_owned());
    if !heads.contains_key(&key) {
        let row = tx
            .query_opt(
                &format!(
                    "SELECT chain_seq, chain_hash::text FROM {} WHERE node = $1 \
                     ORDER BY chain_seq DESC LIMIT 1",
                    table.table()
                ),
                &[&node],
            )
            .await
            .map_err(|e| DbError::query("reading the head of the log chain", e))?;
        let found = row.map_or_else(Head::empty, |r| Head {
            seq: r.get(0),
            hash: r.get(1),
        });
        heads.insert(key.clone(), found);
    }
    heads
        .get_mut(&key)
        .ok_or_else(|| DbError::Schema("log chain head vanished".into()))
}

async fn write_chained(
    client: &mut Client,
    statements: &StatementCache,
    batch: &[Job],
    heads: &mut Heads,
    chain_node: Option<&str>,
) -> BatchOutcome {
    let outcome = write_in_transaction(client, statements, batch, heads, chain_node).await;
    if outcome.is_err() {
        // Whatever was sent of the batch is undone before the connection is
        // used again (a failed statement has aborted the transaction; a
        // rollback with none open only earns a warning).
        let _ = client.batch_execute("ROLLBACK").await;
    }
    outcome
}

/// The batch's statements between `BEGIN` and `COMMIT`, sent in as few
/// round trips as their dependencies allow: `BEGIN` goes with the first
/// statements and `COMMIT` with the last (the connection runs them in the
/// order sent; a statement that fails aborts the transaction, so the
/// `COMMIT` after it only rolls back, and its error is returned).
async fn write_in_transaction(
    tx: &Client,
    statements: &StatementCache,
    batch: &[Job],
    heads: &mut Heads,
    chain_node: Option<&str>,
) -> BatchOutcome {
    let begin = async {
        tx.batch_execute("BEGIN")
            .await
            .map_err(|e| DbError::query("starting a log batch", e))
    };
    let inserts = batch
        .iter()
        .filter(|j| matches!(j.op, Op::Upload(_) | Op::Refused(_) | Op::Download(_)))
        .count();
    // The time hashed must be the time stored: whole microseconds.
    let now = to_micros(SystemTime::now());
    let uploads: Vec<&TransferRecord> = batch
        .iter()
        .filter_map(|j| match &j.op {
            Op::Upload(r) => Some(r),
            _ => None,
        })
        .collect();
    let finishes: Vec<Finish> = batch
        .iter()
        .filter_map(|j| match j.op {
            Op::Finish {
                id,
                bytes_sent,
                duration_ms,
                status,
            } => Some(Finish {
                id,
                bytes_sent,
                duration_ms,
                status,
            }),
            _ => None,
        })
        .collect();
    // A batch is a chain of round trips to the server; statements that do
    // not depend on each other are sent together (the connection pipelines
    // them), so the batch — which every request in it waits for — costs
    // fewer of them. A share changes a file's chat type, which the ends of
    // downloads read, and can amend a row of this batch: with shares in the
    // batch the steps run one after the other.
    let has_shares = batch.iter().any(|j| matches!(j.op, Op::Share(_)));
    let ((), ids, mut fresh, mut ended) = tokio::try_join!(
        begin,
        number_rows(tx, statements, inserts),
        insert_files(tx, statements, &uploads, now),
        async {
            if has_shares {
                Ok(Vec::new())
            } else {
                read_finished(tx, statements, &finishes).await
            }
        },
    )?;
    let mut log_rows: Vec<Param> = Vec::new();
    let mut results = Vec::with_capacity(batch.len());
    let mut next_id = ids.into_iter();
    let mut n_log = 0;
    for job in batch {
        let (method, r) = match &job.op {
            Op::Upload(r) | Op::Refused(r) => ("POST", r),
            Op::Download(r) => ("GET", r),
            _ => {
                results.push(Ok(0));
                continue;
            }
        };
        let id = next_id.next().unwrap_or_default();
        // The first upload of a resource in the batch took the row; a later
        // one (or one of a resource logged before) did not.
        if matches!(job.op, Op::Upload(_)) && !fresh.remove(&fit(&r.resource, w::NAME)) {
            results.push(Err(DbError::SlotUsed {
                resource: r.resource.clone(),
            }));
            continue;
        }
        let row = row_record(id, method, r, now);
        let chained = head(tx, heads, ChainTable::Rows, &row.node)
            .await?
            .append(|seq| row.canon(seq));
        log_rows.extend(log_params(row, chained));
        n_log += 1;
        results.push(Ok(id));
    }
    // What is learnt later is a new row of its own: shares (after the rows
    // above, so a download logged in this batch is amended too), then the
    // ends of downloads.
    let mut amends: Vec<AmendRecord> = Vec::new();
    if has_shares {
        let rows = prepare_insert(
            tx,
            statements,
            ("aft_log_rows", LOG_COLUMNS, LOG_WIDTH),
            &log_rows,
            n_log,
            "writing log rows",
        )
        .await?;
        run_insert(tx, rows).await?;
        for (i, job) in batch.iter().enumerate() {
            if let Op::Share(share) = &job.op {
                let recorded =
                    write_share(tx, statements, share, now, chain_node, &mut amends).await?;
                results[i] = Ok(i64::from(recorded));
            }
        }
        ended = read_finished(tx, statements, &finishes).await?;
    }
    amends.extend(end_amendments(&finishes, &ended, chain_node, now));
    let mut amend_values: Vec<Param> = Vec::with_capacity(amends.len() * AMEND_WIDTH);
    let n_amends = amends.len();
    for a in amends {
        let chained = head(tx, heads, ChainTable::Amends, &a.node)
            .await?
            .append(|seq| a.canon(seq));
        amend_values.extend(amend_params(a, chained));
    }
    // Without shares the rows of this batch are still to be written; the
    // amendments here only concern rows of earlier batches.
    let has_checkpoints = batch.iter().any(|j| matches!(j.op, Op::Checkpoint { .. }));
    let commit_now = async {
        if has_checkpoints {
            Ok(())
        } else {
            commit(tx).await
        }
    };
    let log_rows_left = if has_shares { 0 } else { n_log };
    // Both statements prepared first (from the cache, in the steady state:
    // no round trip), so that each is sent on its first poll, in this order,
    // and the `COMMIT` after them.
    let (rows, amendments) = tokio::try_join!(
        prepare_insert(
            tx,
            statements,
            ("aft_log_rows", LOG_COLUMNS, LOG_WIDTH),
            &log_rows,
            log_rows_left,
            "writing log rows",
        ),
        prepare_insert(
            tx,
            statements,
            ("aft_log_amends", AMEND_COLUMNS, AMEND_WIDTH),
            &amend_values,
            n_amends,
            "writing log amendments",
        ),
    )?;
    tokio::try_join!(run_insert(tx, rows), run_insert(tx, amendments), commit_now,)?;
    if has_checkpoints {
        for (i, job) in batch.iter().enumerate() {
            if let Op::Checkpoint { node, day, signer } = &job.op {
                let written =
                    write_checkpoint(tx, heads, node, day, signer.as_deref(), now).await?;
                results[i] = Ok(i64::from(written));
            }
        }
        commit(tx).await?;
    }
    Ok(results)
}

async fn commit(tx: &Client) -> Result<(), DbError> {
    tx.batch_execute("COMMIT")
        .await
        .map_err(|e| DbError::query("committing a log batch", e))
}

/// A download's end, to be written as an amendment of its row.
struct Finish {
    id: i64,
    bytes_sent: i64,
    duration_ms: i64,
    status: i32,
}

/// `n` new `aft_index` values for the batch's rows.
async fn number_rows(
    tx: &Client,
    statements: &StatementCache,
    n: usize,
) -> Result<Vec<i64>, DbError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let rows = statements
        .query(
            tx,
            "SELECT nextval('aft_log_seq') FROM generate_series(1, $1::bigint)",
            &[&(n as i64)],
        )
        .await
        .map_err(|e| DbError::query("numbering log rows", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The `files` rows of the batch's uploads; returns the resources whose
/// row this batch inserted (a resource that had one already is not among
/// them: its slot was used before).
async fn insert_files(
    tx: &Client,
    statements: &StatementCache,
    uploads: &[&TransferRecord],
    now: SystemTime,
) -> Result<std::collections::HashSet<String>, DbError> {
    if uploads.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let mut file_rows: Vec<Param> = Vec::new();
    for r in uploads {
        file_rows.extend(file_params(r, now));
    }
    // A used slot's reservation needs no delete here (it would cost every
    // batch a statement): the quota query skips reservations whose file
    // is logged, and expired ones are swept when reservations are made.
    let sql = format!(
        "{} ON CONFLICT (resource) DO NOTHING RETURNING resource",
        multi_insert("files", FILE_COLUMNS, 14, uploads.len())
    );
    let inserted = query_params(tx, statements, &sql, &file_rows, "recording files").await?;
    Ok(inserted.iter().map(|row| row.get::<_, String>(0)).collect())
}

/// The rows of finished downloads, each with the file's chat type as known
/// now (the uploader's share may have named a room while the download ran)
/// and a fresh amendment id.
async fn read_finished(
    tx: &Client,
    statements: &StatementCache,
    finishes: &[Finish],
) -> Result<Vec<tokio_postgres::Row>, DbError> {
    if finishes.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = finishes.iter().map(|f| f.id).collect();
    statements
        .query(
            tx,
            "SELECT r.aft_index, r.node::text, r.chat_type::text, f.chat_type::text, \
                nextval('aft_log_amends_amend_id_seq') \
             FROM aft_log_rows r LEFT JOIN files f ON f.resource = r.filename \
             WHERE r.aft_index = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(|e| DbError::query("reading the rows of finished downloads", e))
}

/// The amendments that record the ends of `finishes`, from their rows
/// (`ended`, as [`read_finished`] returns them).
fn end_amendments(
    finishes: &[Finish],
    ended: &[tokio_postgres::Row],
    chain_node: Option<&str>,
    now: SystemTime,
) -> Vec<AmendRecord> {
    let known: std::collections::HashMap<i64, &tokio_postgres::Row> =
        ended.iter().map(|r| (r.get::<_, i64>(0), r)).collect();
    let mut out = Vec::with_capacity(finishes.len());
    for f in finishes {
        let Some(row) = known.get(&f.id) else {
            continue;
        };
        let row_node: String = row.get(1);
        let row_chat: String = row.get(2);
        let file_chat: Option<String> = row.get(3);
        out.push(AmendRecord {
            node: chain_node.map_or(row_node, str::to_owned),
            amend_id: row.get(4),
            aft_index: f.id,
            what: "end".into(),
            to_jid: None,
            chat_type: file_chat.filter(|c| !c.is_empty() && *c != row_chat),
            http_status: Some(f.status),
            bytes_sent: Some(f.bytes_sent),
            duration_ms: Some(f.duration_ms),
            date_time: now,
        });
    }
    out
}

/// An insert of prepared rows, ready to send: its statement is prepared
/// already, so running it is one message sent on its first poll — which
/// keeps it ahead of the `COMMIT` sent after it.
struct PreparedInsert<'p> {
    statement: tokio_postgres::Statement,
    params: &'p [Param],
    what: &'static str,
}

impl PreparedInsert<'_> {
    async fn run(self, tx: &Client) -> Result<(), DbError> {
        let refs: Vec<&(dyn ToSql + Sync)> = self
            .params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        tx.execute(&self.statement, &refs)
            .await
            .map_err(|e| DbError::query(self.what, e))?;
        Ok(())
    }
}

/// Prepares the insert of `n` rows of `width` columns into `table`
/// (`params` holds them all); `None` when there are none.
async fn prepare_insert<'p>(
    tx: &Client,
    statements: &StatementCache,
    (table, columns, width): (&str, &str, usize),
    params: &'p [Param],
    n: usize,
    what: &'static str,
) -> Result<Option<PreparedInsert<'p>>, DbError> {
    if n == 0 {
        return Ok(None);
    }
    let sql = multi_insert(table, columns, width, n);
    let statement = if params.len() <= CACHED_PARAMS {
        statements.prepare(tx, &sql).await
    } else {
        tx.prepare(&sql).await
    }
    .map_err(|e| DbError::query(what, e))?;
    Ok(Some(PreparedInsert {
        statement,
        params,
        what,
    }))
}

/// Runs `insert` when there is one.
async fn run_insert(tx: &Client, insert: Option<PreparedInsert<'_>>) -> Result<(), DbError> {
    match insert {
        Some(insert) => insert.run(tx).await,
        None => Ok(()),
    }
}

/// A share's `shares` row and `files` update, and (for the uploader's first
/// share) its amendments of the file's rows; `false` when the resource has
/// no `files` row.
async fn write_share(
    tx: &Client,
    statements: &StatementCache,
    share: &Share,
    now: SystemTime,
    chain_node: Option<&str>,
    amends: &mut Vec<AmendRecord>,
) -> Result<bool, DbError> {
    let resource = fit(&share.resource, w::NAME);
    let sender = fit(&share.sender, w::JID);
    let uploader = fit(&crate::jid::bare_or_raw(&share.sender), w::JID);
    let recipient = fit(&share.recipient, w::JID);
    let chat_type = fit(&share.chat_type, w::SHORT);
    let reported_by = fit(&share.reported_by, w::JID);
    let what = "recording a share";
    let row = statements
        .query_one(
            tx,
"WITH f AS (SELECT uploader, to_jid FROM files WHERE resource = $1), \
             s AS (INSERT INTO shares (resource, sender, recipient, chat_type, reported_by, date_time) \
                   SELECT $1::varchar, $2::varchar, $3::varchar, $4::varchar, $5::varchar, \
                          COALESCE(to_timestamp($7::float8), now()) FROM f RETURNING 1), \
             uf AS (UPDATE files SET to_jid = $3, chat_type = $4 \
                    WHERE resource = $1 AND to_jid = '' AND uploader = $6 RETURNING 1) \
         SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM uf)",
            &[
                &resource,
                &sender,
                &recipient,
                &chat_type,
                &reported_by,
                &uploader,
                &share.sent_at.map(|s| s as f64),
            ],
        )
        .await
        .map_err(|e| DbError::query(what, e))?;
    let (recorded, first): (i64, i64) = (row.get(0), row.get(1));
    if first > 0 {
        // The uploader's POST row learns its recipient; its downloads so
        // far, the chat type.
        let what = "reading the rows a share amends";
        let rows = statements
            .query(
                tx,
"SELECT aft_index, node::text, method::text, nextval('aft_log_amends_amend_id_seq') \
             FROM aft_log WHERE filename = $1 \
             AND ((method = 'POST' AND to_jid = '' AND jid = $2) \
                  OR (method = 'GET' AND chat_type <> $3)) \
             ORDER BY aft_index",
                &[&resource, &uploader, &chat_type],
            )
            .await
            .map_err(|e| DbError::query(what, e))?;
        for r in rows {
            let row_node: String = r.get(1);
            let post = r.get::<_, String>(2) == "POST";
            amends.push(AmendRecord {
                node: chain_node.map_or(row_node, str::to_owned),
                amend_id: r.get(3),
                aft_index: r.get(0),
                what: "share".into(),
                to_jid: post.then(|| recipient.clone()),
                chat_type: Some(chat_type.clone()),
                http_status: None,
                bytes_sent: None,
                duration_ms: None,
                date_time: now,
            });
        }
    }
    Ok(recorded > 0)
}

/// `node`'s checkpoint for `day` (the heads of its row and amendment
/// chains, after this batch), unless it has one; `true` when written.
async fn write_checkpoint(
    tx: &Client,
    heads: &mut Heads,
    node: &str,
    day: &str,
    signer: Option<&dyn CheckpointSigner>,
    now: SystemTime,
) -> Result<bool, DbError> {
    let exists = tx
        .query_opt(
            "SELECT 1 FROM log_checkpoints WHERE node = $1 AND day = CAST($2::text AS date)",
            &[&node, &day],
        )
        .await
        .map_err(|e| DbError::query("looking for today's checkpoint", e))?
        .is_some();
    if exists {
        return Ok(false);
    }
    let rows = head(tx, heads, ChainTable::Rows, node).await?.clone();
    let amends = head(tx, heads, ChainTable::Amends, node).await?.clone();
    let record = CheckpointRecord {
        node: node.to_owned(),
        day: day.to_owned(),
        rows,
        amends,
        created: now,
        public_key: signer.map(|s| s.public_key()).unwrap_or_default(),
    };
    let cp_head = head(tx, heads, ChainTable::Checkpoints, node).await?;
    let (seq, prev, hash) = cp_head.append(|seq| record.canon(seq));
    let signature = match signer {
        Some(s) => s.sign(record.canon(seq).as_bytes()).map_err(|e| {
            DbError::config_because(
                "cannot sign the log checkpoint with [log] checkpoint_key_file",
                e,
            )
        })?,
        None => String::new(),
    };
    tx.execute(
        "INSERT INTO log_checkpoints (node, chain_seq, day, rows_seq, rows_hash, amends_seq, \
         amends_hash, created, public_key, signature, chain_prev, chain_hash) \
         VALUES ($1, $2, CAST($3::text AS date), $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &record.node,
            &seq,
            &record.day,
            &record.rows.seq,
            &record.rows.hash,
            &record.amends.seq,
            &record.amends.hash,
            &record.created,
            &record.public_key,
            &signature,
            &prev,
            &hash,
        ],
    )
    .await
    .map_err(|e| DbError::query("writing the log checkpoint", e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_file_row_width_counts_its_columns() {
        assert_eq!(
            super::FILE_ROW_COLUMNS.split(", ").count(),
            super::FILE_ROW_WIDTH
        );
    }

    use super::*;

    #[test]
    fn multi_row_insert_numbers_parameters_row_by_row() {
        assert_eq!(
            multi_insert("t", "a, b", 2, 2),
            "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4)"
        );
    }
}
