//! The malware scanner's metrics (`[scan]`, ClamAV's clamd): verdicts,
//! scanner failures, how long a verdict took after the last byte, and the
//! scanner's health as the sampler last saw it.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// What the scanner said about one upload (the `verdict` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScanVerdict {
    /// Scanned, nothing found.
    Clean,
    /// Scanned, a signature matched.
    Infected,
    /// Not scanned: the scanner failed or timed out, the file was above
    /// `scan.max_size`, or it is end-to-end encrypted.
    Unscanned,
}

impl ScanVerdict {
    /// The label value, also the `aft_log.scan_verdict` value.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanVerdict::Clean => "clean",
            ScanVerdict::Infected => "infected",
            ScanVerdict::Unscanned => "unscanned",
        }
    }
}

/// The scanner's metrics.
pub struct ScanMetrics {
    verdicts: Family<[(&'static str, &'static str); 1], Counter>,
    /// Scans that failed: scanner unreachable, timed out, or answered an error.
    pub errors: Counter,
    latency: Histogram,
    /// 1 when `[scan]` is configured.
    pub configured: Gauge,
    /// 1 while the scanner answered the last health check (`PING`).
    pub up: Gauge,
}

impl ScanMetrics {
    pub(crate) fn register(registry: &mut Registry) -> ScanMetrics {
        let verdicts = Family::default();
        registry.register(
            "scans",
            "Uploads by malware-scan verdict (clean, infected, unscanned)",
            verdicts.clone(),
        );
        let errors = Counter::default();
        registry.register(
            "scanner_errors",
            "Scans that failed: scanner unreachable, timed out or answering an error",
            errors.clone(),
        );
        // 1 ms … about 4 minutes.
        let latency = Histogram::new(exponential_buckets(0.001, 3.0, 12));
        registry.register_with_unit(
            "scan_latency",
            "Time from an upload's last byte to the scanner's verdict",
            Unit::Seconds,
            latency.clone(),
        );
        let configured = Gauge::default();
        registry.register(
            "scanner_configured",
            "1 when a malware scanner ([scan]) is configured",
            configured.clone(),
        );
        let up = Gauge::default();
        registry.register(
            "scanner_up",
            "1 while the malware scanner answered the last health check",
            up.clone(),
        );
        let metrics = ScanMetrics {
            verdicts,
            errors,
            latency,
            configured,
            up,
        };
        for v in [
            ScanVerdict::Clean,
            ScanVerdict::Infected,
            ScanVerdict::Unscanned,
        ] {
            let _ = metrics.verdicts.get_or_create(&[("verdict", v.as_str())]);
        }
        metrics
    }

    /// Counts one upload's verdict.
    pub fn verdict(&self, verdict: ScanVerdict) {
        self.verdicts
            .get_or_create(&[("verdict", verdict.as_str())])
            .inc();
    }

    /// A verdict arrived `took` after the last byte.
    pub fn latency(&self, took: std::time::Duration) {
        self.latency.observe(took.as_secs_f64());
    }
}
