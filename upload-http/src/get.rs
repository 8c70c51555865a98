//! `GET` and `HEAD`: serve a stored file (whole, one range, or `304` when
//! the client holds the same content), with the security headers and the
//! canonical media type. With a transfer log, only files that have a live
//! `files` row are served (`404` without one, `410` once purged, `403` once
//! a rescan quarantined it), and each GET is logged before its first byte.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use mft_common::error::Chain;
use mft_storage::Location;

use crate::app::{header_str, with_status, App, Conn, Resp};
use crate::audit;
use crate::body::ResponseBody;
use crate::claim::claim_in_query;
use crate::conn::RateFloor;
use crate::error::HttpError;
use crate::headers::add_download_security;
use crate::media_type;
use crate::range::{self, RangeAnswer};
use crate::urls::parse_path;

/// Whether an `If-None-Match` value names `etag` (or is `*`).
fn none_match(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

/// Who is downloading, when the URL carries a recipient claim from the
/// router module: a genuine claim names them, an altered one is refused,
/// and none is anonymous unless the service requires one.
fn downloader(app: &App, resource: &str, query: Option<&str>) -> Result<Option<String>, HttpError> {
    match (claim_in_query(query), &app.recipients) {
        (Some(claim), Some(signer)) => Ok(Some(signer.verify(resource, claim)?)),
        (None, Some(_)) if app.require_recipient => Err(HttpError::ClaimRequired),
        _ => Ok(None),
    }
}

/// Handles one GET or HEAD.
pub async fn get(app: &Arc<App>, conn: &Conn, req: Request<Incoming>) -> Result<Resp, HttpError> {
    let started = Instant::now();
    let client = conn.client;
    let (resource, _) =
        parse_path(&app.settings.base_path, req.uri().path()).ok_or(HttpError::NotFound)?;
    let loc = Location::parse(resource).ok_or(HttpError::NotFound)?;
    let row = match &app.log {
        // A file the log does not know was never logged as uploaded (a
        // crash between publishing and committing): not served, no row.
        Some(log) => Some(
            log.file(resource)
                .await
                .map_err(HttpError::Log)?
                .ok_or(HttpError::NotFound)?,
        ),
        None => None,
    };
    let claimed = downloader(app, resource, req.uri().query());
    // Retired, or an ephemeral upload past its time (the sweeper removes it
    // at its next round; it is not served meanwhile).
    let gone = row.as_ref().is_some_and(|r| {
        r.deleted.is_some()
            || r.expires
                .is_some_and(|at| at <= std::time::SystemTime::now())
    });
    // Found infected by a rescan: never served again (the signature says why).
    let quarantined = row
        .as_ref()
        .filter(|r| r.quarantined.is_some())
        .map(|r| r.scan_detail.clone());
    let refusal = match (&claimed, gone, &quarantined) {
        (Err(_), _, _) => claimed.as_ref().err().map(HttpError::status),
        (Ok(_), _, Some(_)) => Some(StatusCode::FORBIDDEN),
        (Ok(_), true, None) => Some(StatusCode::GONE),
        (Ok(_), false, None) => None,
    };
    let head = req.method() == Method::HEAD;
    if let (Some(status), Some(log), Some(row), false) = (refusal, &app.log, &row, head) {
        // An attempt on a logged file is a row too: the auditor sees
        // forged or missing claims and fetches of removed files.
        let user_agent = header_str(&req, header::USER_AGENT).unwrap_or("");
        let mut record = audit::refusal_record(&app.place(), &loc, row, client, user_agent, status);
        record.jid = claimed.as_ref().ok().cloned().flatten().unwrap_or_default();
        if let (Some(signature), Ok(_)) = (&quarantined, &claimed) {
            record.scan_verdict = "infected".to_owned();
            record.scan_detail = signature.clone();
        }
        if let Err(e) = log.record_download(record).await {
            tracing::warn!(error = %Chain(&e), status = status.as_u16(), "refused download not logged");
        }
    }
    let downloader = claimed?;
    if let Some(signature) = quarantined {
        tracing::warn!(
            resource,
            signature = signature.as_str(),
            "download refused: the file is quarantined"
        );
        return Err(HttpError::Quarantined(signature));
    }
    if gone {
        return Err(HttpError::Gone);
    }
    // Any node serves any file: one stored through another node is read
    // from that node's directory on the shared file server.
    let store = match &row {
        Some(r) if r.node != app.node => app.store.sibling(&r.node).ok_or(HttpError::NotFound)?,
        _ => app.store.clone(),
    };
    // With the file's row at hand the description file says nothing more:
    // only a file the log does not know is described by it.
    let info = match &row {
        Some(r) if !r.content_type.is_empty() && !r.sha256.is_empty() => {
            store.stat_data(&loc).await?
        }
        _ => store.stat(&loc).await?,
    };
    let described = Described::of(row.as_ref(), info.meta.as_ref(), resource);
    let content_type = described
        .content_type
        .and_then(media_type::canonical)
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let filename = described.name.to_owned();
    let etag = described
        .sha256
        .filter(|s| !s.is_empty())
        .map(|sha| format!("\"{sha}\""));
    let not_modified = etag.as_deref().is_some_and(|etag| {
        header_str(&req, header::IF_NONE_MATCH).is_some_and(|inm| none_match(inm, etag))
    });
    let (status, start, len) = if not_modified {
        (StatusCode::NOT_MODIFIED, 0, 0)
    } else {
        match range::answer(header_str(&req, header::RANGE), info.size) {
            RangeAnswer::Whole => (StatusCode::OK, 0, info.size),
            RangeAnswer::Partial { start, len } => (StatusCode::PARTIAL_CONTENT, start, len),
            RangeAnswer::Unsatisfiable => {
                return Err(HttpError::RangeNotSatisfiable { size: info.size })
            }
        }
    };
    let body = if req.method() == Method::HEAD {
        ResponseBody::empty()
    } else if status == StatusCode::NOT_MODIFIED {
        // Nothing to deliver: the row says 304 and no bytes.
        if let Some(log) = &app.log {
            let user_agent = header_str(&req, header::USER_AGENT).unwrap_or("");
            let mut record = audit::download_record(
                &app.place(),
                &loc,
                &info,
                row.as_ref(),
                client,
                user_agent,
                status,
            );
            record.jid = downloader.clone().unwrap_or_default();
            log.record_download(record).await.map_err(HttpError::Log)?;
        }
        ResponseBody::empty()
    } else {
        // Admitted and opened first: a download refused for capacity or a
        // store failure writes no row at all.
        let permit = app.admit_download(conn)?;
        let download = store.read_stated(&info, &loc, start, len).await?;
        // The row goes in before the first byte and says "not delivered"
        // (499, no bytes) until the body ends and records what it sent:
        // a client that vanishes, a reset stream, a request dropped while
        // the row was being written — none reads as a delivery.
        let report = match &app.log {
            Some(log) => {
                let user_agent = header_str(&req, header::USER_AGENT).unwrap_or("");
                let mut record = audit::download_record(
                    &app.place(),
                    &loc,
                    &info,
                    row.as_ref(),
                    client,
                    user_agent,
                    audit::NOT_DELIVERED,
                );
                record.jid = downloader.clone().unwrap_or_default();
                let id = log.record_download(record).await.map_err(HttpError::Log)?;
                Some(audit::DownloadReport::new(
                    log.clone(),
                    id,
                    started,
                    i32::from(status.as_u16()),
                    len,
                ))
            }
            None => None,
        };
        ResponseBody::Stream {
            download: Box::new(download),
            report,
            floor: RateFloor::new(app.settings.rate_grace, app.settings.min_rate),
            sent: 0,
            permit: Box::new(permit),
        }
    };
    let mut resp = with_status(status, body);
    let h = resp.headers_mut();
    if status != StatusCode::NOT_MODIFIED {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let range = format!("bytes {start}-{}/{}", start + len - 1, info.size);
        if let Ok(v) = HeaderValue::from_str(&range) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::ETAG, v);
    }
    // Content never changes under a URL; only removal does (410).
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    add_download_security(h, &content_type, &filename);
    Ok(resp)
}

/// What a download says about its file: from the description stored beside
/// it when it was read, else from the file's `files` row (which says the
/// same: both are written from the slot and the stored upload).
struct Described<'a> {
    content_type: Option<&'a str>,
    name: &'a str,
    sha256: Option<&'a str>,
}

impl<'a> Described<'a> {
    fn of(
        row: Option<&'a mft_storage::transfer_log::FileRow>,
        meta: Option<&'a mft_storage::FileMeta>,
        resource: &'a str,
    ) -> Described<'a> {
        match (meta, row) {
            (Some(m), _) => Described {
                content_type: m
                    .content_type
                    .as_deref()
                    .or(row.map(|r| r.content_type.as_str())),
                name: m.real_name.as_str(),
                sha256: Some(m.sha256.as_str()),
            },
            (None, Some(r)) => Described {
                content_type: Some(r.content_type.as_str()).filter(|c| !c.is_empty()),
                name: if r.real_filename.is_empty() {
                    resource
                } else {
                    r.real_filename.as_str()
                },
                sha256: Some(r.sha256.as_str()),
            },
            (None, None) => Described {
                content_type: None,
                name: resource,
                sha256: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_names_the_etag() {
        assert!(none_match("\"abc\"", "\"abc\""));
        assert!(none_match("\"x\", W/\"abc\"", "\"abc\""));
        assert!(none_match("*", "\"abc\""));
        assert!(!none_match("\"abd\"", "\"abc\""));
    }
}
