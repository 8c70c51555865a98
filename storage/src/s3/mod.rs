//! The S3 backend: the node directory is a key prefix in a bucket
//! (`<prefix>/files/<chat type>/<YYYYMMDD>/<HH>/<resource>`), so operators'
//! tools see the same tree as on an SFTP file server.
//!
//! S3 has no rename, so an upload never exists under a temporary key: its
//! bytes go as one `PUT` when they fit in one part, else as a multipart
//! upload of the *final* key, which no reader sees until it is completed.
//! The store's "publish the temporary file" is that `PUT` or that
//! completion; its "remove the temporary file" aborts the multipart upload,
//! and start-up recovery aborts any left by a crash. No key is replaced:
//! each publish asks `If-None-Match: *` (honoured by AWS S3 and others) and
//! first looks whether the key exists (for servers that ignore the header;
//! the resource in a key is unique per slot, and a slot is used once).

mod client;
mod objects;
pub mod sigv4;
mod xml;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;

pub use crate::db_tls::client_config_trusting;
use client::{block_on, Client};
pub use client::{ClientSettings, Endpoint};
use objects::{ObjectReader, ObjectWriter, Pending};

use crate::backend::{check_relative, Backend, ReadFile, Session, WriteFile};
use crate::StoreError;

/// Bytes of one multipart part (S3's minimum, except for the last).
pub const PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts one upload keeps travelling while the next fills: one at a time
/// left a single upload at 0.6-0.7x rclone (which sends four); the memory
/// an upload holds is at most this many parts plus one.
const PARTS_IN_FLIGHT: usize = 2;

/// Bytes of one piece of a part: what is allocated at a time.
const PIECE_SIZE: usize = 1024 * 1024;

/// `[store.s3]` as the runtime uses it.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Endpoint, bucket, region, credentials, TLS and timeouts.
    pub client: ClientSettings,
    /// This node's directory in the bucket (no leading or trailing `/`),
    /// e.g. `mftFileStore/node_1`.
    pub prefix: String,
}

/// A bucket prefix reached over S3.
pub struct S3Backend {
    shared: Arc<Shared>,
    prefix: String,
}

/// What every session of one bucket shares: the client and the uploads
/// written but not yet published (by temporary name).
struct Shared {
    client: Client,
    pending: Mutex<HashMap<String, Pending>>,
}

impl S3Backend {
    /// A backend for `settings`; nothing is connected until first use.
    pub fn new(settings: S3Settings) -> S3Backend {
        S3Backend {
            prefix: settings.prefix.trim_matches('/').to_owned(),
            shared: Arc::new(Shared {
                client: Client::new(settings.client),
                pending: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Checks that the bucket answers to the credentials (a listing of one
    /// key under the prefix).
    pub fn check(&self) -> Result<(), StoreError> {
        let prefix = format!("{}/", self.prefix);
        block_on(self.shared.client.call(
            Method::GET,
            "",
            &[("list-type", "2"), ("max-keys", "1"), ("prefix", &prefix)],
            &[],
            Bytes::new(),
            &[200],
        ))
        .map(|_| ())
    }

    /// The unfinished multipart uploads under this node's prefix, as (key,
    /// upload id): at most one listing page (1000).
    async fn list_unfinished_uploads(&self) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = format!("{}/", self.prefix);
        let (_, body) = self
            .shared
            .client
            .call(
                Method::GET,
                "",
                &[("uploads", ""), ("prefix", &prefix)],
                &[],
                Bytes::new(),
                &[200],
            )
            .await?;
        let text = String::from_utf8_lossy(&body);
        Ok(xml::blocks(&text, "Upload")
            .iter()
            .filter_map(|b| Some((xml::first(b, "Key")?, xml::first(b, "UploadId")?)))
            .collect())
    }

    /// Aborts every unfinished multipart upload under this node's prefix
    /// (left by a crash); only for start-up, before uploads are accepted.
    pub fn abort_unfinished_uploads(&self) -> Result<usize, StoreError> {
        let client = &self.shared.client;
        block_on(async {
            let mut aborted = 0;
            loop {
                let uploads = self.list_unfinished_uploads().await?;
                if uploads.is_empty() {
                    return Ok(aborted);
                }
                for (key, id) in uploads {
                    tracing::warn!(
                        key,
                        "aborting a multipart upload left by an interrupted upload"
                    );
                    client
                        .call(
                            Method::DELETE,
                            &key,
                            &[("uploadId", &id)],
                            &[],
                            Bytes::new(),
                            &[204, 200, 404],
                        )
                        .await?;
                    aborted += 1;
                }
            }
        })
    }
}

impl Backend for S3Backend {
    fn describe(&self) -> String {
        let s = self.shared.client.settings();
        format!("s3://{}/{} at {}", s.bucket, self.prefix, s.endpoint)
    }

    fn session(&self) -> Result<Box<dyn Session>, StoreError> {
        Ok(Box::new(S3Session {
            shared: self.shared.clone(),
            prefix: self.prefix.clone(),
        }))
    }

    fn write_size(&self) -> usize {
        1024 * 1024
    }

    fn read_ahead(&self) -> usize {
        2
    }

    fn sibling(&self, node: &str) -> Option<Arc<dyn Backend>> {
        let parent = self.prefix.rsplit_once('/').map(|(p, _)| p);
        Some(Arc::new(S3Backend {
            shared: self.shared.clone(),
            prefix: match parent {
                Some(p) => format!("{p}/{node}"),
                None => node.to_owned(),
            },
        }))
    }

    fn abort_unfinished_uploads(&self) -> Result<usize, StoreError> {
        S3Backend::abort_unfinished_uploads(self)
    }

    fn unfinished_uploads(&self) -> Result<usize, StoreError> {
        block_on(self.list_unfinished_uploads()).map(|u| u.len())
    }
}

struct S3Session {
    shared: Arc<Shared>,
    prefix: String,
}

impl S3Session {
    fn key(&self, path: &str) -> Result<String, StoreError> {
        check_relative(path)?;
        Ok(format!("{}/{path}", self.prefix))
    }

    fn client(&self) -> &Client {
        &self.shared.client
    }

    fn take_pending(&self, temp: &str) -> Option<Pending> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(temp)
    }

    /// The headers of `key` (a `HEAD`).
    fn head(&self, key: &str) -> Result<http::HeaderMap, StoreError> {
        block_on(
            self.client()
                .call(Method::HEAD, key, &[], &[], Bytes::new(), &[200]),
        )
        .map(|(headers, _)| headers)
    }

    /// Whether `key` exists.
    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.head(key) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn refuse_existing(&self, key: &str, path: &str) -> Result<(), StoreError> {
        if self.exists(key)? {
            return Err(StoreError::AlreadyExists(path.to_owned()));
        }
        Ok(())
    }

    /// Copies `from` to `to` (server side) and deletes `from`.
    fn move_object(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let source = format!(
            "/{}/{}",
            self.client().settings().bucket,
            sigv4::encode(from, false)
        );
        block_on(self.client().call(
            Method::PUT,
            to,
            &[],
            &[("x-amz-copy-source", source), ("if-none-match", "*".into())],
            Bytes::new(),
            &[200],
        ))?;
        block_on(
            self.client()
                .call(Method::DELETE, from, &[], &[], Bytes::new(), &[204, 200]),
        )?;
        Ok(())
    }
}

impl Session for S3Session {
    fn create_dir_all(&mut self, _dir: &str) -> Result<(), StoreError> {
        // Keys need no directories.
        Ok(())
    }

    fn create_new(&mut self, path: &str) -> Result<Box<dyn WriteFile>, StoreError> {
        let key = self.key(path)?;
        self.refuse_existing(&key, path)?;
        Ok(Box::new(ObjectWriter::direct(self.shared.clone(), key)))
    }

    fn create_upload(
        &mut self,
        temp: &str,
        final_path: &str,
    ) -> Result<Box<dyn WriteFile>, StoreError> {
        check_relative(temp)?;
        let key = self.key(final_path)?;
        Ok(Box::new(ObjectWriter::pending(
            self.shared.clone(),
            key,
            temp.to_owned(),
        )))
    }

    fn publish(&mut self, temp: &str, final_path: &str) -> Result<(), StoreError> {
        let key = self.key(final_path)?;
        let Some(pending) = self.take_pending(temp) else {
            // An object written under its own name (a description set
            // aside, a quarantined file): a server-side move.
            let from = self.key(temp)?;
            self.refuse_existing(&key, final_path)?;
            return self.move_object(&from, &key);
        };
        let result = self
            .refuse_existing(&key, final_path)
            .and_then(|()| pending.publish(self.client(), &key));
        if result.is_err() {
            pending.abort(self.client());
        }
        result
    }

    fn remove(&mut self, path: &str) -> Result<(), StoreError> {
        if let Some(pending) = self.take_pending(path) {
            pending.abort(self.client());
            return Ok(());
        }
        let key = self.key(path)?;
        block_on(
            self.client()
                .call(Method::DELETE, &key, &[], &[], Bytes::new(), &[204, 200]),
        )?;
        Ok(())
    }

    fn open(&mut self, path: &str) -> Result<(Box<dyn ReadFile>, u64), StoreError> {
        let key = self.key(path)?;
        let headers = self.head(&key)?;
        let size = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                StoreError::io(
                    format!("the S3 service gave no size for {path}"),
                    std::io::Error::other("no Content-Length"),
                )
            })?;
        Ok((
            Box::new(ObjectReader::new(self.shared.clone(), key, size)),
            size,
        ))
    }

    /// The description sent as the object's metadata, if it was.
    fn description(&mut self, path: &str) -> Option<Vec<u8>> {
        use base64::Engine;
        let key = self.key(path).ok()?;
        let headers = self.head(&key).ok()?;
        let encoded = headers.get(objects::DESCRIPTION_HEADER)?.to_str().ok()?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
    }

    fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{}/", self.key(dir)?);
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type", "2"),
                ("delimiter", "/"),
                ("prefix", prefix.as_str()),
            ];
            if let Some(t) = &token {
                query.push(("continuation-token", t.as_str()));
            }
            let (_, body) =
                block_on(
                    self.client()
                        .call(Method::GET, "", &query, &[], Bytes::new(), &[200]),
                )?;
            let text = String::from_utf8_lossy(&body);
            for key in xml::all(&text, "Key") {
                if let Some(name) = key.strip_prefix(&prefix) {
                    names.push(name.to_owned());
                }
            }
            for sub in xml::all(&text, "Prefix").into_iter().skip(1) {
                // The first <Prefix> is the one asked for.
                if let Some(name) = sub.strip_prefix(&prefix) {
                    names.push(name.trim_end_matches('/').to_owned());
                }
            }
            token = xml::first(&text, "NextContinuationToken");
            if xml::first(&text, "IsTruncated").as_deref() != Some("true") || token.is_none() {
                break;
            }
        }
        if names.is_empty() {
            // S3 has no empty directories: nothing under a prefix is a
            // directory that does not exist.
            return Err(StoreError::NotFound(dir.to_owned()));
        }
        Ok(names)
    }

    fn modified(&mut self, path: &str) -> Result<Option<std::time::SystemTime>, StoreError> {
        let key = self.key(path)?;
        let headers = self.head(&key)?;
        Ok(headers
            .get(http::header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date))
    }
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(s: &str) -> Option<std::time::SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, clock, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = MONTHS.iter().position(|m| m == month)? as u8 + 1;
    let date = time::Date::from_calendar_date(
        year.parse().ok()?,
        time::Month::try_from(month).ok()?,
        day.parse().ok()?,
    )
    .ok()?;
    let mut hms = clock.split(':').map(|n| n.parse::<u8>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    let t = date.with_hms(h, m, sec).ok()?.assume_utc();
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            784_111_777
        );
        assert!(parse_http_date("yesterday").is_none());
    }
}
