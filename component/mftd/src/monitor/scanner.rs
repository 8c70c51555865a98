//! The malware scanner's health (`[scan]`): a watcher asks clamd `PING` and
//! `VERSION` every `admin.check_interval` and keeps the answer here and in
//! the `mftd_scanner_up` gauge. `/readyz` and the status page read it back:
//! under `scan.fail = "closed"` a scanner that does not answer makes the
//! node unready (its uploads would be refused); under `"open"` it is only
//! reported.

use std::sync::Mutex;
use std::time::Duration;

use mft_upload_http::scan::{FailMode, Scanner};
use tokio::sync::watch;

/// What the last check found.
#[derive(Debug, Clone)]
pub struct ScannerState {
    /// `scan.clamd`.
    pub addr: String,
    /// clamd's version line, or why it did not answer.
    pub answer: Result<String, String>,
    /// Whether uploads are refused without a verdict.
    pub fail_closed: bool,
}

static STATE: Mutex<Option<ScannerState>> = Mutex::new(None);

fn set(state: ScannerState) {
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
}

/// The last check, when a scanner is configured.
pub fn state() -> Option<ScannerState> {
    STATE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether uploads are being refused because the scanner is down.
pub fn blocks_uploads() -> bool {
    state().is_some_and(|s| s.fail_closed && s.answer.is_err())
}

/// One line for `/readyz` and the status page.
pub fn describe(s: &ScannerState) -> String {
    match &s.answer {
        Ok(version) => format!("up ({version}) at {}", s.addr),
        Err(why) if s.fail_closed => {
            format!(
                "down at {}: {why} (scan.fail = closed: uploads are refused)",
                s.addr
            )
        }
        Err(why) => format!(
            "down at {}: {why} (scan.fail = open: uploads are published unscanned)",
            s.addr
        ),
    }
}

/// Checks the scanner until shutdown; the first check at once.
pub async fn watch(scanner: Scanner, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let settings = scanner.settings().clone();
    let addr = settings.clamd.addr().to_string();
    let fail_closed = settings.fail == FailMode::Closed;
    let mut was_up = None;
    loop {
        let answer = scanner
            .health_check()
            .await
            .map_err(|e| mft_common::error::chain(&e));
        let up = answer.is_ok();
        if was_up != Some(up) {
            match &answer {
                Ok(version) => {
                    tracing::info!(clamd = %addr, version = %version, "malware scanner answers")
                }
                Err(why) => {
                    tracing::warn!(clamd = %addr, error = %why, fail_closed, "malware scanner does not answer")
                }
            }
            was_up = Some(up);
        }
        set(ScannerState {
            addr: addr.clone(),
            answer,
            fail_closed,
        });
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
