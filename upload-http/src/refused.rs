//! An upload the content policy refused after its body arrived (malware,
//! no scan verdict under `fail = "closed"`, too large to scan): the file is
//! set aside — never published — and the attempt gets its POST row with
//! the refusal's status, the scan verdict and its detail, and no `files`
//! row. Runs inside the task that owns the upload to its end, so a client
//! that hangs up does not skip the record.

use std::net::IpAddr;
use std::time::Instant;

use mft_storage::error::chain;
use mft_storage::{StoredFile, Upload};

use crate::app::App;
use crate::audit;
use crate::error::HttpError;
use crate::scan::{Decision, Quarantine, Refusal};
use crate::token::SlotClaims;

/// The error the client gets for `refusal`.
fn error_for(refusal: &Refusal) -> HttpError {
    match refusal {
        Refusal::Infected(signature) => HttpError::Infected(signature.clone()),
        Refusal::NoVerdict => HttpError::ScanUnavailable,
        Refusal::TooLarge(max) => HttpError::ScanTooLarge(*max),
    }
}

/// Sets the upload `decision` refused aside, records its POST row, and
/// returns the error to answer with.
pub(crate) async fn refuse(
    app: &App,
    upload: Upload,
    decision: &Decision,
    claims: &SlotClaims,
    client: IpAddr,
    user_agent: &str,
    started: Instant,
) -> HttpError {
    let Some(refusal) = &decision.refusal else {
        return HttpError::Internal; // Only refused decisions come here.
    };
    let error = error_for(refusal);
    // Only malware is kept for inspection; the rest was never judged bad.
    let keep = matches!(refusal, Refusal::Infected(_))
        && app
            .scanner
            .as_ref()
            .is_some_and(|s| s.settings().quarantine == Quarantine::Keep);
    let aside = match upload.set_aside(keep).await {
        Ok(aside) => aside,
        Err(e) => {
            // Nothing is published either way; the temporary file is
            // removed by the upload itself or start-up recovery.
            tracing::error!(error = %chain(&e), resource = claims.resource.as_str(), "a refused upload could not be set aside");
            return HttpError::Store(e);
        }
    };
    tracing::warn!(
        resource = claims.resource.as_str(),
        uploader = claims.uploader.as_str(),
        verdict = decision.verdict.as_str(),
        detail = decision.detail.as_str(),
        sha256 = aside.meta.sha256.as_str(),
        quarantine = aside.path.as_deref().unwrap_or(""),
        status = error.status().as_u16(),
        "upload refused by the content policy"
    );
    let Some(log) = &app.log else {
        return error;
    };
    let stored = StoredFile {
        path: aside.path.clone().unwrap_or_default(),
        meta: aside.meta,
    };
    let mut record =
        audit::upload_record(&app.place(), claims, &stored, client, user_agent, started);
    record.http_status = i32::from(error.status().as_u16());
    record.scan_verdict = decision.verdict.as_str().to_owned();
    record.scan_detail = decision.detail.clone();
    match log.record_refused_upload(record).await {
        Ok(_) => error,
        Err(e) => {
            tracing::error!(error = %chain(&e), resource = claims.resource.as_str(), "the POST row of a refused upload could not be committed");
            HttpError::Log(e)
        }
    }
}
