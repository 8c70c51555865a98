//! One object being written ([`ObjectWriter`]: a single `PUT` or a
//! multipart upload, part by part) or read ([`ObjectReader`]: ranged `GET`s
//! streamed piece by piece), behind the blocking `Write`/`Read + Seek` the
//! store drives.

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use base64::Engine;
use bytes::{Buf, Bytes};
use http::Method;

use super::client::{block_on, runtime_spawn, Chunks, Client, Reply};
use super::{xml, Shared, PARTS_IN_FLIGHT, PART_SIZE, PIECE_SIZE};
use crate::backend::WriteFile;
use crate::StoreError;

/// A multipart upload started for `key`, with the parts sent so far.
pub struct Multipart {
    key: String,
    upload_id: String,
    /// (part number, ETag) in order.
    parts: Vec<(u32, String)>,
}

/// An upload's bytes, complete, waiting for the store to publish them.
pub enum Pending {
    /// Small enough for one `PUT` at publication.
    Single {
        /// The whole body.
        body: Chunks,
        /// The file's description, sent as the object's metadata.
        description: Option<String>,
    },
    /// Every part sent; completion publishes it.
    Multipart(Multipart),
}

impl Pending {
    /// Makes the object visible under `key` (never replacing one).
    pub fn publish(&self, client: &Client, key: &str) -> Result<(), StoreError> {
        match self {
            Pending::Single { body, description } => {
                put_new(client, key, body.clone(), description.as_deref())
            }
            Pending::Multipart(mp) => {
                complete(client, mp)?;
                if mp.key == key {
                    return Ok(());
                }
                // Published elsewhere than planned (set aside): move it.
                let source = format!(
                    "/{}/{}",
                    client.settings().bucket,
                    super::sigv4::encode(&mp.key, false)
                );
                block_on(client.call(
                    Method::PUT,
                    key,
                    &[],
                    &[("x-amz-copy-source", source), ("if-none-match", "*".into())],
                    Bytes::new(),
                    &[200],
                ))?;
                block_on(client.call(
                    Method::DELETE,
                    &mp.key,
                    &[],
                    &[],
                    Bytes::new(),
                    &[204, 200],
                ))?;
                Ok(())
            }
        }
    }

    /// Gives the bytes up (aborting a multipart upload); best effort, since
    /// start-up recovery aborts what is left.
    pub fn abort(self, client: &Client) {
        if let Pending::Multipart(mp) = self {
            if let Err(e) = block_on(abort(client, &mp)) {
                tracing::warn!(key = mp.key, error = %crate::error::Chain(&e), "aborting a multipart upload failed; start-up recovery aborts it");
            }
        }
    }
}

/// `PUT` of a new object, refused if the key exists (where the server
/// honours `If-None-Match`), with the file's description as its metadata.
fn put_new(
    client: &Client,
    key: &str,
    body: Chunks,
    description: Option<&str>,
) -> Result<(), StoreError> {
    let mut headers = vec![("if-none-match", "*".to_owned())];
    if let Some(d) = description {
        headers.push((DESCRIPTION_HEADER, d.to_owned()));
    }
    block_on(client.call(Method::PUT, key, &[], &headers, body, &[200])).map(|_| ())
}

/// The metadata header holding an object's description (base64 of its JSON:
/// metadata values must be ASCII).
pub const DESCRIPTION_HEADER: &str = "x-amz-meta-mftd-description";

/// The largest description sent as metadata, encoded: S3 allows 2 KB of
/// user metadata per object; a larger one goes beside as `.meta`.
const MOST_METADATA: usize = 1536;

fn complete(client: &Client, mp: &Multipart) -> Result<(), StoreError> {
    let mut body = String::from("<CompleteMultipartUpload>");
    for (n, etag) in &mp.parts {
        body.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>",
            etag.replace('&', "&amp;").replace('<', "&lt;")
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    let (_, answer) = block_on(client.call(
        Method::POST,
        &mp.key,
        &[("uploadId", &mp.upload_id)],
        &[("if-none-match", "*".into())],
        Bytes::from(body),
        &[200],
    ))?;
    // A completion can fail after its 200 has started: the error is then
    // in the body.
    let text = String::from_utf8_lossy(&answer);
    if text.contains("<Error>") {
        return Err(super::client::refusal(
            "completing a multipart upload",
            &mp.key,
            http::StatusCode::INTERNAL_SERVER_ERROR,
            answer.as_ref(),
        ));
    }
    Ok(())
}

async fn abort(client: &Client, mp: &Multipart) -> Result<(), StoreError> {
    client
        .call(
            Method::DELETE,
            &mp.key,
            &[("uploadId", &mp.upload_id)],
            &[],
            Bytes::new(),
            &[204, 200, 404],
        )
        .await
        .map(|_| ())
}

/// Where a finished writer's bytes go.
enum Target {
    /// Written under its own name at `sync` (a description).
    Direct,
    /// Handed to the session under the temporary name, for `publish`.
    Pending { temp: String },
}

/// An object being written; nothing is visible until it is published.
pub struct ObjectWriter {
    shared: Arc<Shared>,
    key: String,
    target: Target,
    /// The part being gathered: full pieces, and the piece filling.
    part: Chunks,
    piece: Vec<u8>,
    multipart: Option<Multipart>,
    /// The parts being sent while the next one fills, oldest first (each
    /// gives its number and ETag).
    in_flight: VecDeque<tokio::task::JoinHandle<Result<(u32, String), StoreError>>>,
    finished: bool,
    /// The file's description, for the single `PUT` (base64).
    description: Option<String>,
}

impl ObjectWriter {
    /// A writer whose object appears under `key` when it is synced.
    pub fn direct(shared: Arc<Shared>, key: String) -> ObjectWriter {
        Self::new(shared, key, Target::Direct)
    }

    /// A writer for an upload of `key`, handed over at `sync` as `temp`.
    pub fn pending(shared: Arc<Shared>, key: String, temp: String) -> ObjectWriter {
        Self::new(shared, key, Target::Pending { temp })
    }

    fn new(shared: Arc<Shared>, key: String, target: Target) -> ObjectWriter {
        ObjectWriter {
            shared,
            key,
            target,
            part: Chunks::default(),
            piece: Vec::new(),
            multipart: None,
            in_flight: VecDeque::new(),
            finished: false,
            description: None,
        }
    }

    fn client(&self) -> &Client {
        &self.shared.client
    }

    /// Starts the multipart upload of the key.
    fn start_multipart(&mut self) -> Result<(), StoreError> {
        let (_, answer) = block_on(self.client().call(
            Method::POST,
            &self.key,
            &[("uploads", "")],
            &[],
            Bytes::new(),
            &[200],
        ))?;
        let upload_id =
            xml::first(&String::from_utf8_lossy(&answer), "UploadId").ok_or_else(|| {
                StoreError::io(
                    "starting a multipart upload",
                    io::Error::other("the S3 service gave no UploadId"),
                )
            })?;
        self.multipart = Some(Multipart {
            key: self.key.clone(),
            upload_id,
            parts: Vec::new(),
        });
        Ok(())
    }

    /// Starts sending `part` as the next part; with [`PARTS_IN_FLIGHT`]
    /// travelling, the oldest must be acknowledged first.
    fn send_part(&mut self, part: Chunks) -> Result<(), StoreError> {
        if self.multipart.is_none() {
            self.start_multipart()?;
        }
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.settle_oldest()?;
        }
        let mp = self.multipart.as_ref().expect("started above");
        let number = (mp.parts.len() + self.in_flight.len()) as u32 + 1;
        let (shared, key, upload_id) =
            (self.shared.clone(), self.key.clone(), mp.upload_id.clone());
        self.in_flight.push_back(runtime_spawn(async move {
            put_part(&shared.client, &key, &upload_id, number, part)
                .await
                .map(|etag| (number, etag))
        }));
        Ok(())
    }

    /// Waits for every part in flight.
    fn settle(&mut self) -> Result<(), StoreError> {
        while !self.in_flight.is_empty() {
            self.settle_oldest()?;
        }
        Ok(())
    }

    /// Waits for the oldest part in flight and records its ETag.
    fn settle_oldest(&mut self) -> Result<(), StoreError> {
        let Some(sending) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (number, etag) = block_on(sending)
            .map_err(|e| StoreError::io("sending a part", io::Error::other(e)))??;
        if let Some(mp) = self.multipart.as_mut() {
            mp.parts.push((number, etag));
        }
        Ok(())
    }
}

/// Sends one part; its ETag.
async fn put_part(
    client: &Client,
    key: &str,
    upload_id: &str,
    number: u32,
    part: Chunks,
) -> Result<String, StoreError> {
    let number_text = number.to_string();
    let (headers, _) = client
        .call(
            Method::PUT,
            key,
            &[("partNumber", &number_text), ("uploadId", upload_id)],
            &[],
            part,
            &[200],
        )
        .await?;
    headers
        .get(http::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| {
            StoreError::io(
                "sending a part",
                io::Error::other("the S3 service gave no ETag"),
            )
        })
}

impl Write for ObjectWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.finished {
            return Err(io::Error::other("writing after sync"));
        }
        let mut rest = data;
        while !rest.is_empty() {
            if self.piece.capacity() == 0 {
                self.piece.reserve_exact(PIECE_SIZE);
            }
            let n = (PIECE_SIZE - self.piece.len()).min(rest.len());
            self.piece.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.piece.len() == PIECE_SIZE {
                self.part.push(Bytes::from(std::mem::take(&mut self.piece)));
            }
            if self.part.len() == PART_SIZE as u64 {
                let part = std::mem::take(&mut self.part);
                self.send_part(part).map_err(io::Error::other)?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WriteFile for ObjectWriter {
    /// An upload sent as one `PUT` carries its description as the object's
    /// metadata (one request and one object fewer per upload); a multipart
    /// upload's metadata is fixed when it starts, before the SHA-256 is
    /// known, so its description goes beside, as does one too large.
    fn describe(&mut self, description: &[u8]) -> bool {
        if self.multipart.is_some() || self.finished {
            return false;
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(description);
        if encoded.len() > MOST_METADATA {
            return false;
        }
        self.description = Some(encoded);
        true
    }

    /// The whole body is here: sends the last part (or keeps a small body
    /// for one `PUT`) and publishes or hands it over.
    fn sync(&mut self) -> Result<(), StoreError> {
        if self.finished {
            return Ok(());
        }
        let mut rest = std::mem::take(&mut self.part);
        rest.push(Bytes::from(std::mem::take(&mut self.piece)));
        if self.multipart.is_some() && !rest.is_empty() {
            self.send_part(rest.clone())?;
        }
        self.settle()?;
        let pending = match self.multipart.take() {
            Some(mp) => Pending::Multipart(mp),
            None => Pending::Single {
                body: rest,
                description: self.description.take(),
            },
        };
        self.finished = true;
        match &self.target {
            Target::Direct => {
                let key = self.key.clone();
                let result = match pending {
                    Pending::Single { body, description } => {
                        put_new(self.client(), &key, body, description.as_deref())
                    }
                    multipart => multipart.publish(self.client(), &key),
                };
                result
            }
            Target::Pending { temp } => {
                self.shared
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(temp.clone(), pending);
                Ok(())
            }
        }
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // Given up before its end: abort the multipart upload, on the S3
        // runtime (this may run on an async thread, which must not block).
        if let Some(mp) = self.multipart.take() {
            let shared = self.shared.clone();
            let sending = std::mem::take(&mut self.in_flight);
            runtime_spawn(async move {
                // A part still travelling would otherwise land after the
                // abort and be kept.
                for part in sending {
                    let _ = part.await;
                }
                if let Err(e) = abort(&shared.client, &mp).await {
                    tracing::warn!(key = mp.key, error = %crate::error::Chain(&e), "aborting a multipart upload failed; start-up recovery aborts it");
                }
            });
        }
    }
}

/// An object read from `pos` on: one ranged `GET` streamed until a seek
/// elsewhere starts another.
pub struct ObjectReader {
    shared: Arc<Shared>,
    key: String,
    size: u64,
    pos: u64,
    reply: Option<Reply>,
    piece: Bytes,
}

impl ObjectReader {
    /// A reader of `key`, `size` bytes long; nothing is requested until the
    /// first read.
    pub fn new(shared: Arc<Shared>, key: String, size: u64) -> ObjectReader {
        ObjectReader {
            shared,
            key,
            size,
            pos: 0,
            reply: None,
            piece: Bytes::new(),
        }
    }

    /// Starts the ranged `GET` from the current position, unless one is
    /// open.
    fn ensure_reply(&mut self) -> Result<(), StoreError> {
        if self.reply.is_some() {
            return Ok(());
        }
        let client = &self.shared.client;
        let range = format!("bytes={}-", self.pos);
        let reply = block_on(client.send(
            Method::GET,
            &self.key,
            &[],
            &[("range", range)],
            Bytes::new(),
        ))?;
        if !matches!(reply.status.as_u16(), 200 | 206) {
            let status = reply.status;
            let body = block_on(client.read_all(reply)).unwrap_or_default();
            return Err(super::client::refusal(
                "reading an object",
                &self.key,
                status,
                &body,
            ));
        }
        if reply.status.as_u16() == 200 && self.pos > 0 {
            return Err(StoreError::io(
                format!("reading {} from byte {}", self.key, self.pos),
                io::Error::other("the S3 service ignored the Range header"),
            ));
        }
        self.reply = Some(reply);
        Ok(())
    }

    /// Fills `out` from the open body, in one wait on the S3 runtime for
    /// however many pieces that takes (a piece is often 16 KiB: waiting once
    /// per piece cost a thread hand-over each). Keeps what does not fit.
    fn fill(&mut self, out: &mut [u8]) -> Result<usize, StoreError> {
        self.ensure_reply()?;
        let ObjectReader {
            shared,
            reply,
            piece,
            ..
        } = self;
        let client = &shared.client;
        block_on(async {
            let mut filled = 0;
            while filled < out.len() {
                let Some(open) = reply.as_mut() else { break };
                match client.next_piece(open).await? {
                    Some(mut data) => {
                        let n = (out.len() - filled).min(data.len());
                        out[filled..filled + n].copy_from_slice(&data[..n]);
                        data.advance(n);
                        filled += n;
                        if !data.is_empty() {
                            *piece = data;
                        }
                    }
                    None => *reply = None,
                }
            }
            Ok(filled)
        })
    }
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        let want = out
            .len()
            .min(usize::try_from(self.size - self.pos).unwrap_or(usize::MAX));
        let out = &mut out[..want];
        let mut filled = out.len().min(self.piece.len());
        out[..filled].copy_from_slice(&self.piece[..filled]);
        self.piece.advance(filled);
        if filled < out.len() {
            filled += self.fill(&mut out[filled..]).map_err(io::Error::other)?;
        }
        if filled == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} ended at byte {} of {}", self.key, self.pos, self.size),
            ));
        }
        self.pos += filled as u64;
        Ok(filled)
    }
}

impl Seek for ObjectReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        if target != self.pos {
            self.reply = None;
            self.piece = Bytes::new();
            self.pos = target;
        }
        Ok(self.pos)
    }
}
