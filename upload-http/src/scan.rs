//! The malware scan of an upload (`[scan]`): the body is streamed to clamd
//! while it is received (beside the store, never instead of it), and the
//! verdict is awaited after the last byte, before anything is published or
//! answered. A task of its own writes to clamd, at most 1 MiB behind the
//! body, so a scanner briefly slow to take bytes costs the body nothing
//! until it falls that far behind. What the verdict means is decided here,
//! once:
//!
//! - clean → publish, recorded `clean`;
//! - infected → refused (422), the file set aside (quarantined or removed
//!   per `scan.quarantine`), recorded `infected` with the signature name;
//! - no verdict (scanner unreachable, timed out, answered an error) →
//!   refused (503) under `scan.fail = "closed"`, published under `"open"`;
//!   recorded `unscanned` with the reason either way;
//! - larger than `scan.max_size` → refused (413) or published unscanned
//!   per `scan.above_max_size`, recorded either way.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mft_common::error::Chain;
use mft_metrics::{metrics, ScanVerdict};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clamd::{Clamd, ClamdError, InStream, Reply};

/// Bytes gathered before one `INSTREAM` chunk is sent.
const CHUNK: usize = 256 * 1024;

/// Chunks queued for the writer task at most (1 MiB): the memory a scan
/// adds to an upload, with the chunk being gathered.
const QUEUE: usize = 4;

/// What happens when no verdict can be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Refuse the upload (the default).
    Closed,
    /// Publish it, recorded as not scanned.
    Open,
}

/// What happens to a file clamd found infected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quarantine {
    /// Kept under `quarantine/` in the node directory, never served.
    Keep,
    /// Removed.
    Remove,
}

/// What happens to a file above `scan.max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AboveMaxSize {
    /// Refused (413); slots are not granted for such sizes either.
    Refuse,
    /// Published, recorded as not scanned.
    Unscanned,
}

/// `[scan]`, validated.
#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// The scanner (address and timeout).
    pub clamd: Clamd,
    /// Without a verdict: refuse or publish.
    pub fail: FailMode,
    /// Infected files: keep aside or remove.
    pub quarantine: Quarantine,
    /// The largest file streamed to the scanner (at most clamd's `StreamMaxLength`).
    pub max_size: u64,
    /// Above `max_size`: refuse or publish unscanned.
    pub above_max_size: AboveMaxSize,
}

/// What the scan decided for one upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// For the log and metrics.
    pub verdict: ScanVerdict,
    /// The signature name, or why the file was not scanned.
    pub detail: String,
    /// Whether the file may be published.
    pub refusal: Option<Refusal>,
}

/// Why an upload is refused after its body arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Malware: 422, with the signature name.
    Infected(String),
    /// No verdict under `fail = "closed"`: 503.
    NoVerdict,
    /// Above `max_size` under `above_max_size = "refuse"`: 413.
    TooLarge(u64),
}

/// The scanner every upload goes through.
#[derive(Debug, Clone)]
pub struct Scanner {
    settings: ScanSettings,
}

impl Scanner {
    /// A scanner with these settings.
    pub fn new(settings: ScanSettings) -> Scanner {
        metrics().scan.configured.set(1);
        Scanner { settings }
    }

    /// The settings.
    pub fn settings(&self) -> &ScanSettings {
        &self.settings
    }

    /// Starts scanning an upload of `size` bytes. Never fails: a scanner
    /// that cannot be reached is remembered and decided on at the end.
    pub async fn begin(&self, size: u64) -> ScanSession {
        if size > self.settings.max_size {
            return ScanSession {
                settings: self.settings.clone(),
                state: State::TooLarge(size),
                buf: BytesMut::new(),
            };
        }
        let state = match self.settings.clamd.instream().await {
            Ok(stream) => {
                let (tx, rx) = mpsc::channel(QUEUE);
                State::Streaming {
                    tx,
                    writer: tokio::spawn(write_to_clamd(stream, rx)),
                }
            }
            Err(e) => State::Failed(e),
        };
        ScanSession {
            settings: self.settings.clone(),
            state,
            buf: BytesMut::with_capacity(CHUNK),
        }
    }

    /// Checks the scanner answers, and updates the health gauge.
    pub async fn health_check(&self) -> Result<String, ClamdError> {
        let result = match self.settings.clamd.ping().await {
            Ok(()) => self.settings.clamd.version().await,
            Err(e) => Err(e),
        };
        metrics().scan.up.set(i64::from(result.is_ok()));
        result
    }
}

/// Sends the queued chunks to clamd, then ends the stream and reads the
/// verdict; stops at the first failure (the session sees the queue close).
async fn write_to_clamd(
    mut stream: InStream,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<Reply, ClamdError> {
    while let Some(chunk) = rx.recv().await {
        stream.send(&chunk).await?;
    }
    stream.finish().await
}

enum State {
    /// Chunks go to the writer task through `tx`; it answers the verdict.
    Streaming {
        tx: mpsc::Sender<Bytes>,
        writer: JoinHandle<Result<Reply, ClamdError>>,
    },
    /// The writer stopped early; its result says why.
    Stopped(JoinHandle<Result<Reply, ClamdError>>),
    Failed(ClamdError),
    TooLarge(u64),
}

/// One upload's scan in progress.
pub struct ScanSession {
    settings: ScanSettings,
    state: State,
    buf: BytesMut,
}

impl ScanSession {
    /// Hands the next piece of the body to the scanner. A scanner that
    /// fails or stalls (beyond `scan.timeout`) is not fed again; the
    /// upload goes on and the failure is decided on at the end.
    pub async fn feed(&mut self, data: &Bytes) {
        if !matches!(self.state, State::Streaming { .. }) {
            return;
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send().await;
        }
    }

    async fn send(&mut self) {
        let State::Streaming { tx, .. } = &mut self.state else {
            return;
        };
        let chunk = self.buf.split().freeze();
        let timeout = self.settings.clamd.timeout();
        let sent = tokio::time::timeout(timeout, tx.send(chunk)).await;
        let state = std::mem::replace(&mut self.state, State::TooLarge(0));
        self.state = match (sent, state) {
            (Ok(Ok(())), state) => state,
            // The writer ended early: its result says why.
            (Ok(Err(_)), State::Streaming { writer, .. }) => State::Stopped(writer),
            // clamd fell a whole queue behind and took nothing for `timeout`.
            (Err(_), State::Streaming { writer, .. }) => {
                writer.abort();
                State::Failed(ClamdError::TimedOut(timeout))
            }
            (_, state) => state,
        };
    }

    /// The decision, once the whole body was fed (waits at most
    /// `scan.timeout` for the verdict).
    pub async fn decide(mut self) -> Decision {
        let started = Instant::now();
        if !self.buf.is_empty() {
            self.send().await;
        }
        let reply = match self.state {
            State::TooLarge(size) => {
                let refusal = (self.settings.above_max_size == AboveMaxSize::Refuse)
                    .then_some(Refusal::TooLarge(self.settings.max_size));
                return unscanned(
                    format!(
                        "larger than scan.max_size ({size} > {} bytes)",
                        self.settings.max_size
                    ),
                    refusal,
                );
            }
            State::Failed(e) => Err(e),
            State::Stopped(writer) => writer.await.unwrap_or_else(|e| Err(joined(e))),
            State::Streaming { tx, writer } => {
                drop(tx); // The end of the stream.
                let timeout = self.settings.clamd.timeout();
                match tokio::time::timeout(timeout, writer).await {
                    Ok(done) => done.unwrap_or_else(|e| Err(joined(e))),
                    Err(_) => Err(ClamdError::TimedOut(timeout)),
                }
            }
        };
        let m = &metrics().scan;
        match reply {
            Ok(reply) => {
                m.latency(started.elapsed());
                decision_for(reply)
            }
            Err(e) => {
                m.errors.inc();
                tracing::warn!(error = %Chain(&e), fail = ?self.settings.fail, "malware scan failed");
                let refusal =
                    (self.settings.fail == FailMode::Closed).then_some(Refusal::NoVerdict);
                unscanned(no_verdict_reason(&e), refusal)
            }
        }
    }
}

fn joined(e: tokio::task::JoinError) -> ClamdError {
    ClamdError::Io {
        what: "waiting for the scan",
        source: std::io::Error::other(e),
    }
}

fn decision_for(reply: Reply) -> Decision {
    let m = &metrics().scan;
    match reply {
        Reply::Clean => {
            m.verdict(ScanVerdict::Clean);
            Decision {
                verdict: ScanVerdict::Clean,
                detail: String::new(),
                refusal: None,
            }
        }
        Reply::Found(signature) => {
            m.verdict(ScanVerdict::Infected);
            Decision {
                verdict: ScanVerdict::Infected,
                refusal: Some(Refusal::Infected(signature.clone())),
                detail: signature,
            }
        }
    }
}

fn unscanned(detail: String, refusal: Option<Refusal>) -> Decision {
    metrics().scan.verdict(ScanVerdict::Unscanned);
    Decision {
        verdict: ScanVerdict::Unscanned,
        detail,
        refusal,
    }
}

/// The reason recorded for a scan without a verdict.
fn no_verdict_reason(e: &ClamdError) -> String {
    match e {
        ClamdError::Connect { .. } => format!("scanner unreachable: {}", Chain(e)),
        ClamdError::TimedOut(after) => format!("scanner timed out after {after:?}"),
        ClamdError::Io { .. } => format!("scanner connection failed: {}", Chain(e)),
        ClamdError::Answer(a) => format!("scanner error: {a}"),
    }
}

/// The default `scan.timeout`: below `http.stall_timeout`'s default (15 s),
/// which it must stay under.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_decide_once() {
        let d = decision_for(Reply::Found("Eicar-Signature".into()));
        assert_eq!(d.verdict, ScanVerdict::Infected);
        assert_eq!(d.detail, "Eicar-Signature");
        assert_eq!(d.refusal, Some(Refusal::Infected("Eicar-Signature".into())));
        let d = decision_for(Reply::Clean);
        assert_eq!(d.refusal, None);
        assert_eq!(
            no_verdict_reason(&ClamdError::TimedOut(Duration::from_secs(2))),
            "scanner timed out after 2s"
        );
    }
}
