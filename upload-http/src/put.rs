//! `PUT`: one upload into its slot. Everything about the request is checked
//! before a byte of the body is read (token, slot, length, type, log,
//! admission, quota); the body then streams into the store under the
//! connection's deadlines and the rate floor.
//!
//! Publishing and logging are one unit that a vanished client cannot split:
//! once the last byte is in, a task of its own makes the file durable,
//! publishes it, commits its rows, and removes the file again if the rows
//! cannot be committed. The request only waits for that task; dropping the
//! request (hyper does when the client closes) does not stop it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use mft_metrics::UploadStage;
use mft_storage::quota::{QuotaAnswer, QuotaScope, QuotaVerdict};
use mft_storage::{FileMeta, Location, Upload};

use mft_storage::error::chain;

use crate::app::{client_key, header_str, with_status, Admitted, App, Conn, Resp};
use crate::audit;
use crate::body::ResponseBody;
use crate::conn::RateFloor;
use crate::error::HttpError;
use crate::media_type;
use crate::refused;
use crate::scan::ScanSession;
use crate::slot_claim::SlotClaim;
use crate::token::SlotClaims;
use crate::urls::parse_path;

/// The token from `Authorization: Bearer …`, or from `?token=` for old
/// clients (XEP-0363 v0.2) that cannot send headers.
fn token_of<B>(req: &Request<B>) -> Option<String> {
    if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
        let auth = auth.to_str().ok()?;
        let (scheme, token) = auth.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(str::to_owned)
}

/// The one media type the file is stored and served with: the declared one
/// (from the slot) if any, else what the PUT says; a PUT that names another
/// type than the slot is refused. Anything unusable is stored as opaque bytes.
fn decide_content_type(
    declared: Option<&str>,
    sent: Option<&str>,
) -> Result<Option<String>, HttpError> {
    let declared = declared.and_then(media_type::canonical);
    let sent_canonical = sent.and_then(media_type::canonical);
    match (declared, sent_canonical) {
        (Some(d), Some(s)) if media_type::essence(&d) != media_type::essence(&s) => Err(
            HttpError::BadRequest(format!("Content-Type {s} differs from the declared {d}")),
        ),
        (Some(d), _) => Ok(Some(d)),
        (None, Some(s)) => Ok(Some(s)),
        (None, None) if sent.is_some() => Ok(Some("application/octet-stream".into())),
        (None, None) => Ok(None),
    }
}

/// Handles one PUT.
pub async fn put(app: &Arc<App>, conn: &Conn, req: Request<Incoming>) -> Result<Resp, HttpError> {
    let started = Instant::now();
    let client = conn.client;
    let (resource, filename) =
        parse_path(&app.settings.base_path, req.uri().path()).ok_or(HttpError::NotFound)?;
    let token = token_of(&req).ok_or(HttpError::MissingToken)?;
    let claims = app.signer.verify(&token, mft_common::utc::unix_now())?;
    if claims.resource != resource || claims.filename != filename {
        return Err(HttpError::WrongSlot);
    }
    let loc = Location::parse(resource).ok_or(HttpError::NotFound)?;
    let length: u64 = header_str(&req, header::CONTENT_LENGTH)
        .ok_or(HttpError::LengthRequired)?
        .trim()
        .parse()
        .map_err(|_| HttpError::BadRequest("Content-Length is not a number".into()))?;
    if length > claims.size {
        return Err(HttpError::TooLarge {
            got: length,
            slot: claims.size,
        });
    }
    if length < claims.size {
        return Err(HttpError::BadRequest(format!(
            "Content-Length {length} differs from the slot size {}",
            claims.size
        )));
    }
    let content_type = decide_content_type(
        claims.content_type.as_deref(),
        header_str(&req, header::CONTENT_TYPE),
    )?;
    app.types
        .check(content_type.as_deref())
        .map_err(HttpError::TypeRefused)?;
    if app.log.as_ref().is_some_and(|log| !log.is_available()) {
        // Refuse before the body arrives: it could not be logged.
        return Err(HttpError::Unavailable);
    }
    // One share of the permits per address and per uploader, so neither one
    // machine nor one account can take every permit with trickling bodies.
    let uploader = mft_common::jid::bare_or_raw(&claims.uploader);
    let permit = app.admit(
        mft_metrics::Direction::Upload,
        conn,
        &[client_key(client), uploader],
    )?;
    // Single use is decided in the database, before a byte is stored, so a
    // replayed token cannot store the file again (here, on another node, or
    // after retention retired it); without a log the store's "file exists"
    // check is the guard.
    let slot_claim = match &app.log {
        Some(log) => Some(SlotClaim::take(log, &claims.resource, &app.node).await?),
        None => None,
    };
    recheck_quota(app, &claims).await?;
    let claimed = Instant::now();
    let user_agent = header_str(&req, header::USER_AGENT)
        .unwrap_or("")
        .to_owned();
    let meta = FileMeta {
        real_name: claims.filename.clone(),
        content_type,
        size: claims.size,
        sha256: String::new(),
        uploader: claims.uploader.clone(),
        to: claims.to.clone(),
        created: 0,
    };
    let mut upload = app.store.begin_upload(loc.clone(), meta).await?;
    let mut scan = match &app.scanner {
        Some(scanner) => Some(scanner.begin(claims.size).await),
        None => None,
    };
    receive_body(
        app,
        req.into_body(),
        &mut upload,
        &mut scan,
        claims.size,
        &permit,
    )
    .await?;
    permit.client_done();
    let timeline = Timeline {
        started,
        claimed,
        received: Instant::now(),
    };

    // From here on the outcome no longer depends on the client being there.
    let app = app.clone();
    let publish = tokio::spawn(async move {
        let result = publish_and_log(
            &app,
            upload,
            scan,
            &claims,
            &loc,
            client,
            &user_agent,
            &timeline,
        )
        .await;
        let used = result
            .as_ref()
            .map_or_else(HttpError::consumes_slot, |()| true);
        if let (true, Some(claim)) = (used, slot_claim) {
            claim.keep();
        }
        drop(permit);
        result
    });
    publish.await.map_err(|_| HttpError::Internal)??;
    let mut resp = with_status(StatusCode::CREATED, ResponseBody::empty());
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(resp)
}

/// Streams the body into the store, under the idle timeout and the rate floor.
async fn receive_body(
    app: &App,
    mut body: Incoming,
    upload: &mut Upload,
    scan: &mut Option<ScanSession>,
    size: u64,
    permit: &Admitted,
) -> Result<(), HttpError> {
    let floor = RateFloor::new(app.settings.rate_grace, app.settings.min_rate);
    let idle = app.settings.body_idle_timeout;
    let mut got: u64 = 0;
    loop {
        let idle_deadline = tokio::time::Instant::now() + idle;
        let deadline = match floor.deadline(got) {
            Some(at) => idle_deadline.min(tokio::time::Instant::from_std(at)),
            None => idle_deadline,
        };
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) if floor.is_below(got) => {
                tracing::info!(got, size, "upload refused: below http.min_rate");
                return Err(HttpError::TooSlow);
            }
            Err(_) => return Err(HttpError::Timeout),
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) if is_timeout(&e) => return Err(HttpError::Timeout),
            Ok(Some(Err(e))) => {
                return Err(HttpError::BadRequest(format!("request body broken: {e}")))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            got += data.len() as u64;
            permit.progressed();
            mft_metrics::metrics().add_received(data.len() as u64);
            match scan {
                // The scanner takes the same piece while the store writes it.
                Some(scan) => tokio::join!(upload.write(data.clone()), scan.feed(&data)).0?,
                None => upload.write(data).await?,
            }
        }
    }
}

/// Whether a body error is the connection's idle deadline running out.
fn is_timeout(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = err.source();
    }
    e.is_timeout()
}

/// When an upload passed each of its steps, for the "stored upload" line:
/// an operator asking why uploads are slow sees which step took the time.
struct Timeline {
    started: Instant,
    /// Token checked, slot claimed, quota rechecked (database round trips).
    claimed: Instant,
    /// The whole body received and handed to the store.
    received: Instant,
}

impl Timeline {
    /// How long each step took, given when the file was durable and when
    /// its rows were committed.
    fn stages(&self, durable: Instant, logged: Instant) -> [(UploadStage, Duration); 4] {
        let took = |from: Instant, to: Instant| to.saturating_duration_since(from);
        [
            (UploadStage::Claim, took(self.started, self.claimed)),
            (UploadStage::Body, took(self.claimed, self.received)),
            (UploadStage::Store, took(self.received, durable)),
            (UploadStage::Log, took(durable, logged)),
        ]
    }
}

/// Milliseconds, to a tenth.
fn tenth_ms(d: Duration) -> f64 {
    (d.as_micros() / 100) as f64 / 10.0
}

/// Makes the upload durable and visible, then commits its rows; if they
/// cannot be committed the file is removed again, so no file is ever served
/// without its log rows.
#[allow(clippy::too_many_arguments)]
async fn publish_and_log(
    app: &App,
    upload: Upload,
    scan: Option<ScanSession>,
    claims: &SlotClaims,
    loc: &Location,
    client: IpAddr,
    user_agent: &str,
    timeline: &Timeline,
) -> Result<(), HttpError> {
    let started = timeline.started;
    // Nothing is published before the scanner's verdict.
    let decision = match scan {
        Some(scan) => Some(scan.decide().await),
        None => None,
    };
    if let Some(d) = decision.as_ref().filter(|d| d.refusal.is_some()) {
        let e = refused::refuse(app, upload, d, claims, client, user_agent, started);
        return Err(e.await);
    }
    let stored = upload.finish().await?;
    let durable = Instant::now();
    if let Some(log) = &app.log {
        let mut record =
            audit::upload_record(&app.place(), claims, &stored, client, user_agent, started);
        if let Some(d) = decision {
            (record.scan_verdict, record.scan_detail) = (d.verdict.as_str().to_owned(), d.detail);
        }
        if let Err(e) = log.record_upload(record).await {
            tracing::error!(path = %stored.path, "upload stored but its log rows could not be committed: removing the file");
            if let Err(e) = app.store.remove(loc).await {
                tracing::error!(error = %chain(&e), path = %stored.path, "could not remove the unlogged file; `mftd verify` will report it");
            }
            return Err(if e.is_slot_used() {
                HttpError::Conflict
            } else {
                HttpError::Log(e)
            });
        }
    }
    let stages = timeline.stages(durable, Instant::now());
    for (stage, took) in stages {
        mft_metrics::metrics().upload_stage(stage, took);
    }
    let ms = |i: usize| tenth_ms(stages[i].1);
    tracing::info!(
        path = %stored.path,
        size = stored.meta.size,
        sha256 = %stored.meta.sha256,
        uploader = stored.meta.uploader.as_str(),
        claim_ms = ms(0),
        body_ms = ms(1),
        store_ms = ms(2),
        log_ms = ms(3),
        "stored upload"
    );
    Ok(())
}

/// A PUT counts against the quota even if its slot was granted without a
/// reservation (another node, quotas changed since): the slot's reservation
/// is found, or the upload must fit now.
async fn recheck_quota(app: &App, claims: &SlotClaims) -> Result<(), HttpError> {
    let uploader = mft_common::jid::bare_or_raw(&claims.uploader);
    let quotas = app.quotas_for(&claims.uploader);
    let Some(log) = app.log.as_ref().filter(|_| !quotas.is_unlimited()) else {
        return Ok(());
    };
    let expires = UNIX_EPOCH + Duration::from_secs(claims.expires);
    let verdict = log
        .reserve(
            &claims.resource,
            &uploader,
            claims.size,
            expires.max(SystemTime::now()),
            quotas,
        )
        .await
        .map_err(HttpError::Log)?;
    match verdict {
        QuotaVerdict::Fits => Ok(()),
        QuotaVerdict::Refused {
            scope,
            quota,
            answer,
        } => {
            let whose = match scope {
                QuotaScope::User => "your",
                QuotaScope::Global => "the server's",
            };
            let when = match answer {
                QuotaAnswer::RetryAt(at) => {
                    format!("; it fits again at {}", mft_common::utc::stamp(at))
                }
                _ => String::new(),
            };
            tracing::info!(
                uploader = uploader.as_str(),
                size = claims.size,
                quota,
                "upload refused: quota"
            );
            Err(HttpError::Quota(format!(
                "this upload would exceed {whose} daily quota of {quota} bytes{when}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_media_type_is_decided_once() {
        assert_eq!(
            decide_content_type(Some("text/plain;,text/html"), None).expect("ok"),
            None
        );
        assert_eq!(
            decide_content_type(None, Some("text/plain;,text/html"))
                .expect("ok")
                .as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(
            decide_content_type(Some("Image/PNG"), Some("image/png"))
                .expect("ok")
                .as_deref(),
            Some("image/png")
        );
        assert_eq!(
            decide_content_type(Some("text/plain; charset=utf-8"), Some("text/plain"))
                .expect("ok")
                .as_deref(),
            Some("text/plain; charset=utf-8")
        );
        assert!(decide_content_type(Some("image/png"), Some("text/html")).is_err());
        assert_eq!(decide_content_type(None, None).expect("ok"), None);
    }
}
