//! mftd's Prometheus metrics: the one registry of the process and typed
//! handles for every part that counts something (the component, the HTTP
//! endpoint, the transfer log, the health sampler). Like the default
//! registry of other Prometheus client libraries it is process-wide: an
//! mftd process is one node, and every part reaches [`metrics()`] without
//! threading a handle through each constructor. Updating a metric is an
//! atomic add (a short lock for histograms and labelled families), done
//! per request or per piece of a body, never per byte.
//!
//! Names follow Prometheus conventions: `mftd_` prefix, base units
//! (`_seconds`, `_bytes`, ratios 0–1), `_total` on counters.

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod textfile;

use prometheus_client::encoding::{prometheus_text, text as openmetrics_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE;

mod scan;
pub use scan::{ScanMetrics, ScanVerdict};

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why a slot request ended as it did (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotOutcome {
    /// A slot was handed out.
    Granted,
    /// Larger than the service's maximum file size.
    TooLarge,
    /// The requester's server is not one we serve.
    Forbidden,
    /// Over the per-user or global daily quota.
    Quota,
    /// The requester asked for slots too fast.
    RateLimited,
    /// The file server is unreachable.
    StoreDown,
    /// The file server is nearly full.
    StoreFull,
    /// The transfer log could not be read (quotas need it).
    LogDown,
    /// The request itself is malformed.
    BadRequest,
    /// The content type is refused (`limits.allowed_types`, `refused_types`).
    TypeRefused,
}

impl SlotOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotOutcome::Granted => "granted",
            SlotOutcome::TooLarge => "too_large",
            SlotOutcome::Forbidden => "forbidden",
            SlotOutcome::Quota => "quota",
            SlotOutcome::RateLimited => "rate_limited",
            SlotOutcome::StoreDown => "store_down",
            SlotOutcome::StoreFull => "store_full",
            SlotOutcome::LogDown => "log_down",
            SlotOutcome::BadRequest => "bad_request",
            SlotOutcome::TypeRefused => "type_refused",
        }
    }

    /// Every outcome, so each is exported (as 0) before it first happens.
    pub const ALL: [SlotOutcome; 10] = [
        SlotOutcome::Granted,
        SlotOutcome::TooLarge,
        SlotOutcome::Forbidden,
        SlotOutcome::Quota,
        SlotOutcome::RateLimited,
        SlotOutcome::StoreDown,
        SlotOutcome::StoreFull,
        SlotOutcome::LogDown,
        SlotOutcome::BadRequest,
        SlotOutcome::TypeRefused,
    ];
}

/// Which way a transfer goes (the `direction` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A PUT: bytes into the store.
    Upload,
    /// A GET: bytes out of the store.
    Download,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

type Labels = [(&'static str, &'static str); 1];
type StatusLabels = [(&'static str, u16); 1];
type RatioGauge = Gauge<f64, AtomicU64>;

/// Every metric mftd exports.
pub struct Metrics {
    registry: Registry,
    slot_requests: Family<Labels, Counter>,
    slot_duration: Histogram,
    uploads: Family<StatusLabels, Counter>,
    downloads: Family<StatusLabels, Counter>,
    received: Counter,
    sent: Counter,
    transfer_duration: Family<Labels, Histogram, fn() -> Histogram>,
    upload_stage_duration: Family<Labels, Histogram, fn() -> Histogram>,
    in_flight: Family<Labels, Gauge>,
    /// 1 while the XMPP component stream is authenticated.
    pub link_up: Gauge,
    /// Times the component reconnected to the router.
    pub link_reconnects: Counter,
    /// Component stream attempts that failed or ended in an error.
    pub link_failures: Counter,
    /// 1 while the file server answered the last health check.
    pub file_server_up: Gauge,
    /// Free bytes on the file server (last sample).
    pub file_server_free_bytes: Gauge,
    /// Free share of the file server (0–1, last sample).
    pub file_server_free_ratio: RatioGauge,
    /// The configured alarm threshold as a ratio (0–1), for alert rules.
    pub file_server_alarm_ratio: RatioGauge,
    /// 1 while the transfer log can commit (0 also when none is configured).
    pub log_up: Gauge,
    /// 1 when a transfer log is configured.
    pub log_configured: Gauge,
    /// Rows waiting for the transfer log writer.
    pub log_queue_depth: Gauge,
    log_batch_rows: Histogram,
    log_commit_duration: Histogram,
    /// Rows the writer could not commit (each failed its request).
    pub log_failed_rows: Counter,
    /// HTTP connections open now.
    pub http_connections: Gauge,
    /// Bytes transfer buffers hold now (see `[http] memory_budget`).
    pub buffer_bytes: Gauge,
    /// Times a transfer waited for buffer room (the budget was spent).
    pub buffer_waits: Counter,
    removed_files: Family<Labels, Counter>,
    kept_files: Family<Labels, Gauge>,
    /// The malware scanner's verdicts, errors, latency and health.
    pub scan: ScanMetrics,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("mftd");
        let slot_requests = Family::<Labels, Counter>::default();
        registry.register(
            "slot_requests",
            "Slot requests answered, by outcome",
            slot_requests.clone(),
        );
        let slot_duration = Histogram::new(exponential_buckets(0.000_1, 2.5, 12));
        registry.register_with_unit(
            "slot_duration",
            "Time to answer a slot request",
            Unit::Seconds,
            slot_duration.clone(),
        );
        let uploads = Family::<StatusLabels, Counter>::default();
        registry.register("uploads", "PUT requests by HTTP status", uploads.clone());
        let downloads = Family::<StatusLabels, Counter>::default();
        registry.register(
            "downloads",
            "GET requests by HTTP status",
            downloads.clone(),
        );
        let received = Counter::default();
        registry.register_with_unit(
            "received",
            "File bytes received in upload bodies",
            Unit::Bytes,
            received.clone(),
        );
        let sent = Counter::default();
        registry.register_with_unit(
            "sent",
            "File bytes sent in download bodies",
            Unit::Bytes,
            sent.clone(),
        );
        let transfer_duration = Family::<Labels, Histogram>::new_with_constructor(
            transfer_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "transfer_duration",
            "Time a transfer held its admission: an upload until its 201 or error, a download until its body ended",
            Unit::Seconds,
            transfer_duration.clone(),
        );
        let upload_stage_duration =
            Family::<Labels, Histogram>::new_with_constructor(stage_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "upload_stage_duration",
            "Time a stored upload spent in each step: claim (token, slot claim, quota), body, store (written, fsync'd, published), log (waiting for its rows' commit)",
            Unit::Seconds,
            upload_stage_duration.clone(),
        );
        let in_flight = Family::<Labels, Gauge>::default();
        registry.register(
            "transfers_in_flight",
            "Uploads and downloads admitted and not yet finished",
            in_flight.clone(),
        );
        let link_up = Gauge::default();
        registry.register(
            "xmpp_link_up",
            "1 while the component stream to the router is up",
            link_up.clone(),
        );
        let link_reconnects = Counter::default();
        registry.register(
            "xmpp_reconnects",
            "Component stream connections made after the first",
            link_reconnects.clone(),
        );
        let link_failures = Counter::default();
        registry.register(
            "xmpp_link_failures",
            "Component stream attempts refused or lost (a standby counts one per retry)",
            link_failures.clone(),
        );
        let file_server_up = Gauge::default();
        registry.register(
            "file_server_up",
            "1 while the file server passed the last health check",
            file_server_up.clone(),
        );
        let file_server_free_bytes = Gauge::default();
        registry.register_with_unit(
            "file_server_free",
            "Bytes available on the file server (sampled)",
            Unit::Bytes,
            file_server_free_bytes.clone(),
        );
        let file_server_free_ratio = RatioGauge::default();
        registry.register(
            "file_server_free_ratio",
            "Share of the file server's space available, 0 to 1 (sampled)",
            file_server_free_ratio.clone(),
        );
        let file_server_alarm_ratio = RatioGauge::default();
        registry.register(
            "file_server_alarm_free_ratio",
            "The configured free-space alarm threshold (store.alarm_free_percent) as a ratio",
            file_server_alarm_ratio.clone(),
        );
        let log_configured = Gauge::default();
        registry.register(
            "transfer_log_configured",
            "1 when a transfer log database is configured",
            log_configured.clone(),
        );
        let log_up = Gauge::default();
        registry.register(
            "transfer_log_up",
            "1 while the transfer log writer is connected and committing",
            log_up.clone(),
        );
        let log_queue_depth = Gauge::default();
        registry.register(
            "transfer_log_queue_depth",
            "Rows waiting for the transfer log writer",
            log_queue_depth.clone(),
        );
        let log_batch_rows = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "transfer_log_batch_rows",
            "Rows committed per transaction by the transfer log writer",
            log_batch_rows.clone(),
        );
        let log_commit_duration = Histogram::new(exponential_buckets(0.000_25, 2.5, 12));
        registry.register_with_unit(
            "transfer_log_commit_duration",
            "Time to write and commit one batch of log rows",
            Unit::Seconds,
            log_commit_duration.clone(),
        );
        let log_failed_rows = Counter::default();
        registry.register(
            "transfer_log_failed_rows",
            "Log rows that could not be committed (their requests failed)",
            log_failed_rows.clone(),
        );
        let http_connections = Gauge::default();
        registry.register(
            "http_connections",
            "HTTP connections open on the upload endpoint",
            http_connections.clone(),
        );
        let buffer_bytes = Gauge::default();
        registry.register(
            "transfer_buffer_bytes",
            "Bytes held in transfer buffers (upload gather buffers, download pieces), at most [http] memory_budget",
            buffer_bytes.clone(),
        );
        let buffer_waits = Counter::default();
        registry.register(
            "transfer_buffer_waits",
            "Times a transfer waited for buffer room because the memory budget was spent",
            buffer_waits.clone(),
        );
        let removed_files = Family::<Labels, Counter>::default();
        registry.register(
            "removed_files",
            "Files retired from the store, by reason (retention, expired, purge)",
            removed_files.clone(),
        );
        let kept_files = Family::<Labels, Gauge>::default();
        registry.register(
            "retention_kept_files",
            "Files due for removal that this node's last sweep kept, by why (hold: under a legal hold; floor: younger than [retention] minimum)",
            kept_files.clone(),
        );
        let scan = ScanMetrics::register(&mut registry);
        let build_info = Family::<[(&'static str, &'static str); 2], Gauge>::default();
        registry.register("build_info", "mftd's version", build_info.clone());
        build_info
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION")), ("package", "mftd")])
            .set(1);
        let start_time: Gauge = Gauge::default();
        registry.register_with_unit(
            "start_time",
            "When this process started, in seconds since the Unix epoch",
            Unit::Seconds,
            start_time.clone(),
        );
        start_time.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
        let metrics = Metrics {
            registry,
            slot_requests,
            slot_duration,
            uploads,
            downloads,
            received,
            sent,
            transfer_duration,
            upload_stage_duration,
            in_flight,
            link_up,
            link_reconnects,
            link_failures,
            file_server_up,
            file_server_free_bytes,
            file_server_free_ratio,
            file_server_alarm_ratio,
            log_up,
            log_configured,
            log_queue_depth,
            log_batch_rows,
            log_commit_duration,
            log_failed_rows,
            http_connections,
            buffer_bytes,
            buffer_waits,
            removed_files,
            kept_files,
            scan,
        };
        // Export every label value from the start, so rates and alerts see
        // a 0 rather than no series.
        for outcome in SlotOutcome::ALL {
            let _ = metrics
                .slot_requests
                .get_or_create(&[("outcome", outcome.as_str())]);
        }
        for stage in UploadStage::ALL {
            let _ = metrics
                .upload_stage_duration
                .get_or_create(&[("stage", stage.as_str())]);
        }
        for direction in [Direction::Upload, Direction::Download] {
            let labels = [("direction", direction.as_str())];
            let _ = metrics.in_flight.get_or_create(&labels);
            let _ = metrics.transfer_duration.get_or_create(&labels);
        }
        for reason in ["retention", "expired", "purge"] {
            let _ = metrics.removed_files.get_or_create(&[("reason", reason)]);
        }
        for why in ["hold", "floor"] {
            let _ = metrics.kept_files.get_or_create(&[("why", why)]);
        }
        metrics
    }

    /// Counts one answered slot request and how long it took.
    pub fn slot_answered(&self, outcome: SlotOutcome, took: Duration) {
        self.slot_requests
            .get_or_create(&[("outcome", outcome.as_str())])
            .inc();
        self.slot_duration.observe(took.as_secs_f64());
    }

    /// Counts one PUT response.
    pub fn upload_answered(&self, status: u16) {
        self.uploads.get_or_create(&[("status", status)]).inc();
    }

    /// Counts one GET response.
    pub fn download_answered(&self, status: u16) {
        self.downloads.get_or_create(&[("status", status)]).inc();
    }

    /// Adds body bytes received from an uploader.
    pub fn add_received(&self, bytes: u64) {
        self.received.inc_by(bytes);
    }

    /// Adds body bytes handed to a downloader's connection.
    pub fn add_sent(&self, bytes: u64) {
        self.sent.inc_by(bytes);
    }

    /// A transfer was admitted.
    pub fn transfer_started(&self, direction: Direction) {
        self.in_flight
            .get_or_create(&[("direction", direction.as_str())])
            .inc();
    }

    /// A transfer ended after `took`.
    pub fn transfer_ended(&self, direction: Direction, took: Duration) {
        let labels = [("direction", direction.as_str())];
        self.in_flight.get_or_create(&labels).dec();
        self.transfer_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// A stored upload spent `took` in `stage`.
    pub fn upload_stage(&self, stage: UploadStage, took: Duration) {
        self.upload_stage_duration
            .get_or_create(&[("stage", stage.as_str())])
            .observe(took.as_secs_f64());
    }

    /// The writer committed a batch of `rows` in `took`.
    pub fn log_committed(&self, rows: usize, took: Duration) {
        self.log_batch_rows.observe(rows as f64);
        self.log_commit_duration.observe(took.as_secs_f64());
    }

    /// Counts one retired file.
    pub fn file_removed(&self, reason: &'static str) {
        self.removed_files
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// What the last sweep kept although due: `held` files under a legal
    /// hold, `under_floor` files younger than the retention floor.
    pub fn files_kept(&self, held: u64, under_floor: u64) {
        let set = |why: &'static str, n: u64| {
            self.kept_files
                .get_or_create(&[("why", why)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        };
        set("hold", held);
        set("floor", under_floor);
    }

    /// Everything in the Prometheus text format (0.0.4), which every
    /// scraper and `promtool check metrics` read.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// Everything in the OpenMetrics text format (1.0).
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let _ = openmetrics_text::encode(&mut out, &self.registry);
        out
    }

    /// Transfers in flight now, by direction.
    pub fn in_flight(&self, direction: Direction) -> i64 {
        self.in_flight
            .get_or_create(&[("direction", direction.as_str())])
            .get()
    }
}

fn stage_histogram() -> Histogram {
    // 100 µs … about 26 s.
    Histogram::new(exponential_buckets(0.000_1, 2.5, 14))
}

/// The steps of a stored upload, for `mftd_upload_stage_duration_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadStage {
    /// Token checked, slot claimed, quota rechecked.
    Claim,
    /// The body received and handed to the store.
    Body,
    /// Written out, made durable and published on the file server.
    Store,
    /// Waiting for the upload's log rows to commit.
    Log,
}

impl UploadStage {
    /// Every stage, in order.
    pub const ALL: [UploadStage; 4] = [
        UploadStage::Claim,
        UploadStage::Body,
        UploadStage::Store,
        UploadStage::Log,
    ];

    /// The `stage` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadStage::Claim => "claim",
            UploadStage::Body => "body",
            UploadStage::Store => "store",
            UploadStage::Log => "log",
        }
    }
}

fn transfer_histogram() -> Histogram {
    // 5 ms … about 22 minutes.
    Histogram::new(exponential_buckets(0.005, 4.0, 10))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_the_prefix_and_counters_end_in_total() {
        let text = metrics().render_prometheus();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(name.starts_with("mftd_"), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{line}");
            }
        }
        assert!(text.contains("mftd_slot_requests_total{outcome=\"quota\"} 0"));
        assert!(text.contains("mftd_upload_stage_duration_seconds_count{stage=\"log\"}"));
        assert!(text.contains("mftd_build_info{version=\""));
    }

    #[test]
    fn a_transfer_moves_in_flight_up_and_back_and_lands_in_the_histogram() {
        let m = Metrics::new();
        m.transfer_started(Direction::Upload);
        assert_eq!(m.in_flight(Direction::Upload), 1);
        m.transfer_ended(Direction::Upload, Duration::from_millis(20));
        assert_eq!(m.in_flight(Direction::Upload), 0);
        let text = m.render_prometheus();
        assert!(
            text.contains("mftd_transfer_duration_seconds_count{direction=\"upload\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        assert!(metrics().render_openmetrics().ends_with("# EOF\n"));
    }
}
