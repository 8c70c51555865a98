//! The async face of a file server: streaming uploads and downloads through
//! a blocking [`Backend`].
//!
//! A transfer borrows a blocking thread only while a piece of it is being
//! written or read, never while it waits for the network: the bytes of an
//! upload gather in an async buffer and go to the backend one write at a
//! time (the next piece is received while the previous one is written), and
//! a download reads one piece ahead and then waits, holding no thread, for
//! the client to take it. A thousand slow clients therefore cost memory
//! (bounded per transfer) but never the blocking pool.
//!
//! An upload is written to a hidden temporary name in its target directory,
//! hashed (SHA-256) on the way, fsynced, then published under its final name
//! without ever overwriting one. Anything short of that (short or long body,
//! a dropped sender, a dead file server) removes the temporary file, so no
//! half-written file ever appears under a final name.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;

use crate::backend::{Backend, ReadFile, Session, WriteFile};
use crate::budget::{budgeted_bytes, Budget, Grant};
use crate::layout::{is_data_file, parse_hour_dir, ChatType, HourCounters, Location};
use crate::parking::Parking;
use crate::utc::{unix_now, UtcTime};
use crate::{FileMeta, StoreError};

/// How long telling a full disk apart may take after a failed write.
const SPACE_LOOK_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The largest description file we read back.
const MAX_META_BYTES: u64 = 64 * 1024;

/// A file store: a backend plus the layout's rollover counters.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    counters: Arc<Mutex<HourCounters>>,
    /// Signalled when an upload ran out of space.
    out_of_space: Arc<Notify>,
    /// Room for transfer buffers, shared by every transfer of the process.
    budget: Budget,
}

/// What [`Store::stat`] knows about a stored file.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// Size in bytes.
    pub size: u64,
    /// The stored description, if it could be read.
    pub meta: Option<FileMeta>,
    /// The whole file, when it fits one read piece: read with the same open
    /// as the size, so a small download costs one blocking call, not three.
    contents: Option<Bytes>,
}

/// The result of a completed upload.
#[derive(Debug, Clone)]
pub struct StoredFile {
    /// Where the file now lives, relative to the node directory.
    pub path: String,
    /// The description as stored (with SHA-256 and creation time).
    pub meta: FileMeta,
}

/// The open temporary file of an upload, with the session it is open on.
struct Writer {
    session: Box<dyn Session>,
    file: Box<dyn WriteFile>,
    /// Room for the writes the file keeps in flight between pieces.
    in_flight: Option<Grant>,
}

impl Writer {
    /// Writes one piece, letting the file keep writes in flight after it
    /// only as far as the memory budget grants (nothing under pressure, so
    /// a stalled upload then holds no unacknowledged bytes at all).
    fn write_piece(&mut self, piece: &[u8], budget: &Budget) -> std::io::Result<()> {
        let wanted = self.file.wants_in_flight(piece.len());
        let held = self.in_flight.as_ref().map_or(0, Grant::bytes);
        let mut released = None;
        if wanted == 0 || budget.under_pressure() || held < wanted {
            let fresh = (wanted > 0 && !budget.under_pressure())
                .then(|| budget.try_take(wanted))
                .flatten();
            released = std::mem::replace(&mut self.in_flight, fresh);
            let allowed = self.in_flight.as_ref().map_or(0, Grant::bytes);
            self.file.keep_in_flight(allowed.min(wanted));
        }
        let written = self.file.write_all(piece);
        // The write waited until no more than the new allowance was in
        // flight: what the old grant covered is no longer held.
        drop(released);
        written
    }
}

/// What a write hands back: the hash so far and the emptied buffer.
type WriteResult = (Sha256, Vec<u8>, Result<(), StoreError>);

/// Opens an upload's temporary file (creating its directory if needed).
fn open_writer(backend: &dyn Backend, loc: &Location, temp: &str) -> Result<Writer, StoreError> {
    let mut session = backend.session()?;
    session.create_dir_all(&loc.dir())?;
    let file = session.create_upload(temp, &loc.path())?;
    Ok(Writer {
        session,
        file,
        in_flight: None,
    })
}

/// Reopens an upload's temporary file that was put away while its client
/// was quiet, to write on from `offset`.
fn resume_writer(backend: &dyn Backend, temp: &str, offset: u64) -> Result<Writer, StoreError> {
    let mut session = backend.session()?;
    let file = session.resume_upload(temp, offset)?;
    Ok(Writer {
        session,
        file,
        in_flight: None,
    })
}

/// Puts an idle upload's file away: its writes in flight acknowledged
/// (else the upload fails), then the file closed and its session returned.
fn put_away_writer(mut writer: Writer) -> Result<(), StoreError> {
    writer
        .file
        .flush()
        .map_err(|e| StoreError::unavailable_because("writing to the file server", e))
}

/// Puts an idle download's file away.
fn put_away_reader(reader: Reader) -> Result<(), StoreError> {
    drop(reader);
    Ok(())
}

/// Where a transfer's file waits between pieces on `backend`: put away
/// when idle where an open file holds a connection.
fn parking_for<T: Send + 'static>(
    backend: &dyn Backend,
    put_away: fn(T) -> Result<(), StoreError>,
    budget: &Budget,
) -> Parking<T> {
    Parking::new(backend.connection_per_file().then_some(put_away)).watching(budget)
}

/// An upload in progress; dropping it without [`finish`](Upload::finish)
/// abandons it and removes the partial file.
pub struct Upload {
    backend: Arc<dyn Backend>,
    out_of_space: Arc<Notify>,
    loc: Location,
    temp: String,
    meta: FileMeta,
    got: u64,
    /// Bytes handed to the file so far (where a reopened file goes on).
    written: u64,
    write_size: usize,
    /// Bytes gathered for the next write.
    buf: Vec<u8>,
    /// The buffer of the last finished write, reused for the next piece so
    /// an upload allocates two buffers in all (no page faults per piece).
    spare: Vec<u8>,
    /// The temporary file between writes (put away while the client is
    /// quiet where an open file holds a connection).
    writer: Parking<Writer>,
    /// The hash of the bytes written so far; away with the write in flight.
    hasher: Option<Sha256>,
    /// Whether the temporary file was opened (or its opening started). A
    /// body that fits one write opens nothing until it is complete: then
    /// create, write, fsync and publish are one blocking call.
    opened: bool,
    /// The write in flight, which hands the hash back.
    pending: Option<JoinHandle<WriteResult>>,
    done: bool,
    budget: Budget,
    /// Room for `buf`, held as long as the upload.
    _first: Grant,
    /// Room for a second buffer, gathered into while the first is written;
    /// without it (the budget under pressure) each write is waited for.
    second: Option<Grant>,
}

impl Upload {
    /// Hands the next piece of the body to the store; waits while the file
    /// server is slower than the client (backpressure), never longer.
    pub async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        self.got += data.len() as u64;
        if self.got > self.meta.size {
            return Err(StoreError::LongBody {
                expected: self.meta.size,
            });
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            let take = rest.len().min(self.write_size - self.buf.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == self.write_size {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Waits for the write in flight and takes the writer back.
    async fn settle(&mut self) -> Result<(), StoreError> {
        if let Some(pending) = self.pending.take() {
            let (hasher, spare, result) = pending.await.map_err(join_error)?;
            self.hasher = Some(hasher);
            self.spare = spare;
            if let Err(e) = result {
                // The partial file still takes its room: the rest must fit.
                let still_needed = self.meta.size.saturating_sub(self.got) + self.write_size as u64;
                let backend = self.backend.clone();
                let e = told_apart(e, backend, &self.out_of_space, &self.temp, still_needed).await;
                self.discard().await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Removes the temporary file now: a write failed and the upload cannot
    /// go on. Whoever answers the client (`507`, `503`) then does so once
    /// the partial file is gone, rather than racing the removal that
    /// dropping the upload would start. When the upload's own session
    /// cannot (a broken link), [`remove_leftover`]'s retries on fresh
    /// sessions carry on in the background.
    async fn discard(&mut self) {
        let (backend, writer, temp) =
            (self.backend.clone(), self.writer.clone(), self.temp.clone());
        let removed = tokio::task::spawn_blocking(move || {
            let mut session = match writer.take_held() {
                Some(writer) => {
                    drop(writer.file);
                    writer.session
                }
                None => backend.session()?,
            };
            session.remove(&temp)
        })
        .await;
        self.done = true;
        if !matches!(removed, Ok(Ok(())) | Ok(Err(StoreError::NotFound(_)))) {
            let (backend, temp) = (self.backend.clone(), self.temp.clone());
            tokio::spawn(remove_leftover(backend, None, temp));
        }
    }

    /// Starts writing the gathered bytes on a blocking thread; the next piece
    /// is gathered while this one is written.
    async fn flush(&mut self) -> Result<(), StoreError> {
        self.settle().await?;
        let resume = self.opened_before();
        let mut hasher = self.hasher.take().ok_or(StoreError::Aborted)?;
        if self.second.is_none() && !self.budget.under_pressure() {
            self.second = self.budget.try_take(self.write_size);
        }
        let double = self.second.is_some();
        let next = match std::mem::take(&mut self.spare) {
            spare if spare.capacity() > 0 => spare,
            _ if double => Vec::with_capacity(self.write_size),
            _ => Vec::new(),
        };
        let mut chunk = std::mem::replace(&mut self.buf, next);
        let writer = self.writer_for(resume);
        self.written += chunk.len() as u64;
        let (temp, parking, budget) = (self.temp.clone(), self.writer.clone(), self.budget.clone());
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let mut writer = match writer() {
                Ok(w) => w,
                Err(e) => return (hasher, chunk, Err(e)),
            };
            hasher.update(&chunk);
            let result = writer
                .write_piece(&chunk, &budget)
                .map_err(|e| StoreError::io(format!("writing {temp}"), e));
            parking.leave(writer);
            chunk.clear();
            (hasher, chunk, result)
        }));
        if !double {
            // One buffer only: it comes back when its write is done.
            self.settle().await?;
            self.buf = std::mem::take(&mut self.spare);
        }
        Ok(())
    }

    /// Whether the temporary file was opened before; from now on it is (by
    /// the blocking call the caller is about to make, when it was not).
    fn opened_before(&mut self) -> bool {
        std::mem::replace(&mut self.opened, true)
    }

    /// For the blocking call about to write: the temporary file, opened now
    /// (`resume` false), left open, or reopened where it was put away.
    fn writer_for(
        &self,
        resume: bool,
    ) -> impl FnOnce() -> Result<Writer, StoreError> + Send + 'static {
        let (backend, loc, temp) = (self.backend.clone(), self.loc.clone(), self.temp.clone());
        let (parking, offset) = (self.writer.clone(), self.written);
        move || {
            if resume {
                parking.take_or_reopen(|| resume_writer(backend.as_ref(), &temp, offset))
            } else {
                open_writer(backend.as_ref(), &loc, &temp)
            }
        }
    }

    /// Declares the body complete: checks the length, makes the file durable
    /// and publishes it. Returns only once the file is under its final name.
    pub async fn finish(mut self) -> Result<StoredFile, StoreError> {
        self.settle().await?;
        if self.got < self.meta.size {
            return Err(StoreError::ShortBody {
                expected: self.meta.size,
                got: self.got,
            });
        }
        let resume = self.opened_before();
        let writer = self.writer_for(resume);
        let hasher = self.hasher.take().ok_or(StoreError::Aborted)?;
        let rest = std::mem::take(&mut self.buf);
        let (loc, temp, meta) = (self.loc.clone(), self.temp.clone(), self.meta.clone());
        let result = tokio::task::spawn_blocking(move || {
            finish_upload(writer()?, hasher, rest, &loc, &temp, meta)
        })
        .await
        .map_err(join_error)?;
        // Success or not, the temporary name is gone (published or removed).
        self.done = true;
        match result {
            Ok(stored) => Ok(stored),
            // The temporary file is gone: the whole file must fit.
            Err(e) => {
                let (backend, out_of_space) = (self.backend.clone(), self.out_of_space.clone());
                let (temp, size) = (self.temp.clone(), self.meta.size);
                drop(self);
                let e = told_apart(e, backend.clone(), &out_of_space, &temp, size).await;
                // finish_upload removed the temporary file on its own session,
                // which the failure may have broken: make sure, in the background.
                tokio::spawn(remove_leftover(backend, None, temp));
                Err(e)
            }
        }
    }
}

impl Upload {
    /// Declares the body complete but never publishes it: the file a
    /// content check refused. With `keep` it is made durable and moved to
    /// `quarantine/<resource>` below the node directory, its description
    /// beside it (`<resource>.meta`), out of every path that is served or
    /// swept; without, it is removed. Either way its SHA-256 is returned
    /// with the quarantine path, if kept.
    pub async fn set_aside(mut self, keep: bool) -> Result<SetAside, StoreError> {
        self.settle().await?;
        if self.got < self.meta.size {
            return Err(StoreError::ShortBody {
                expected: self.meta.size,
                got: self.got,
            });
        }
        // A small body may not have opened its temporary file yet.
        let resume = self.opened_before();
        let writer = self.writer_for(resume);
        let hasher = self.hasher.take().ok_or(StoreError::Aborted)?;
        let rest = std::mem::take(&mut self.buf);
        let (resource, temp, meta) = (
            self.loc.resource().to_owned(),
            self.temp.clone(),
            self.meta.clone(),
        );
        let result = tokio::task::spawn_blocking(move || {
            set_aside_upload(writer()?, hasher, rest, &resource, &temp, meta, keep)
        })
        .await
        .map_err(join_error)?;
        self.done = result.is_ok();
        result
    }
}

/// Where a refused upload went ([`Upload::set_aside`]).
#[derive(Debug, Clone)]
pub struct SetAside {
    /// `quarantine/<resource>` when kept, `None` when removed.
    pub path: Option<String>,
    /// The description, with the refused content's SHA-256.
    pub meta: FileMeta,
}

/// The directory below the node directory that holds refused uploads.
pub const QUARANTINE_DIR: &str = "quarantine";

fn set_aside_upload(
    writer: Writer,
    mut hasher: Sha256,
    rest: Vec<u8>,
    resource: &str,
    temp: &str,
    mut meta: FileMeta,
    keep: bool,
) -> Result<SetAside, StoreError> {
    // The room for writes in flight lasts until the sync collected them.
    let Writer {
        mut session,
        mut file,
        in_flight: _in_flight,
    } = writer;
    hasher.update(&rest);
    meta.sha256 = format!("{:x}", hasher.finalize());
    meta.created = unix_now();
    if !keep {
        drop(file);
        session.remove(temp)?;
        return Ok(SetAside { path: None, meta });
    }
    let path = format!("{QUARANTINE_DIR}/{resource}");
    let result = (|| {
        file.write_all(&rest)
            .map_err(|e| StoreError::io(format!("writing {temp}"), e))?;
        file.sync()?;
        drop(file);
        session.create_dir_all(QUARANTINE_DIR)?;
        let meta_temp = format!("{QUARANTINE_DIR}/.{resource}.meta.part");
        let mut m = session.create_new(&meta_temp)?;
        m.write_all(&meta.to_bytes())
            .map_err(|e| StoreError::io(format!("writing {meta_temp}"), e))?;
        m.sync()?;
        drop(m);
        session.publish(&meta_temp, &format!("{path}.meta"))?;
        session.publish(temp, &path)
    })();
    if result.is_err() {
        let _ = session.remove(temp);
    }
    result.map(|()| SetAside {
        path: Some(path),
        meta,
    })
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if !self.opened {
            // Nothing was created.
            return;
        }
        // Abandoned: remove the temporary file once any write in flight ends.
        let (backend, temp) = (self.backend.clone(), self.temp.clone());
        let writer = self.writer.clone();
        let pending = self.pending.take();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        handle.spawn(async move {
            if let Some(pending) = pending {
                let _ = pending.await;
            }
            let session = tokio::task::spawn_blocking(move || {
                writer.take_held().map(|w| {
                    drop(w.file);
                    w.session
                })
            })
            .await
            .ok()
            .flatten();
            remove_leftover(backend, session, temp).await;
        });
    }
}

/// Attempts to remove a temporary file after a failed upload, and how long
/// to wait before each further one: a link that stalled or reset usually
/// comes back within these.
const LEFTOVER_RETRIES: [std::time::Duration; 4] = [
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(3),
    std::time::Duration::from_secs(10),
    std::time::Duration::from_secs(30),
];

/// Removes the temporary file of an upload that failed or was abandoned:
/// first on the upload's own session, which a broken link may have left
/// unusable, then on fresh sessions with back-off. What still cannot be
/// removed is named in the log; start-up recovery and `mftd verify`
/// remove it later. Never publishes anything.
async fn remove_leftover(
    backend: Arc<dyn Backend>,
    session: Option<Box<dyn Session>>,
    temp: String,
) {
    let first = {
        let temp = temp.clone();
        tokio::task::spawn_blocking(move || match session {
            Some(mut s) => s.remove(&temp),
            None => Err(StoreError::unavailable("no session")),
        })
        .await
    };
    if matches!(first, Ok(Ok(())) | Ok(Err(StoreError::NotFound(_)))) {
        return;
    }
    let mut last = String::new();
    for wait in LEFTOVER_RETRIES {
        tokio::time::sleep(wait).await;
        let (backend, path) = (backend.clone(), temp.clone());
        match blocking(move || backend.session()?.remove(&path)).await {
            Ok(()) | Err(StoreError::NotFound(_)) => return,
            Err(e) => last = crate::error::chain(&e),
        }
    }
    tracing::warn!(
        path = temp.as_str(),
        error = last.as_str(),
        "temporary file of a failed upload could not be removed; start-up recovery or `mftd verify` removes it"
    );
}

/// A failed write, told apart: when the file system holding the node
/// directory has less room than the rest of the upload needs, the failure
/// is a full disk, whatever the error said (OpenSSH's sftp-server reports
/// `ENOSPC` as a generic failure); the free-space guard is told at once.
async fn told_apart(
    e: StoreError,
    backend: Arc<dyn Backend>,
    out_of_space: &Notify,
    temp: &str,
    still_needed: u64,
) -> StoreError {
    if !matches!(e, StoreError::Io { .. } | StoreError::Unavailable { .. }) {
        return e;
    }
    let free = tokio::time::timeout(
        SPACE_LOOK_LIMIT,
        blocking(move || backend.session()?.free_space()),
    )
    .await;
    match free {
        Ok(Ok(Some(space))) if space.available < still_needed => {
            out_of_space.notify_one();
            StoreError::NoSpace {
                context: temp.to_string(),
                available: space.available,
                source: Some(Box::new(e)),
            }
        }
        _ => e,
    }
}

fn join_error(join: tokio::task::JoinError) -> StoreError {
    StoreError::io("storage worker", std::io::Error::other(join))
}

/// A download in progress: a few pieces read ahead on blocking threads,
/// then nothing held but the open file until the client takes them.
pub struct Download {
    /// The open file between reads (put away while the client is quiet
    /// where an open file holds a connection); `None` for a file whose
    /// bytes came with its size.
    reader: Option<Parking<Reader>>,
    /// Reopens the file where it was put away.
    backend: Arc<dyn Backend>,
    /// Where in the file the next read starts.
    offset: u64,
    pending: Option<JoinHandle<Result<Bytes, StoreError>>>,
    ready: std::collections::VecDeque<Bytes>,
    failed: Option<StoreError>,
    path: String,
    /// Bytes not yet handed to the caller.
    left: u64,
    /// Bytes not yet asked of the backend.
    unread: u64,
    chunk: usize,
    /// Pieces read ahead of the client at most.
    depth: usize,
    budget: Budget,
    /// Waiting for room for the piece the client needs next.
    waiting: Option<std::pin::Pin<Box<dyn std::future::Future<Output = Grant> + Send>>>,
    /// Room that came after waiting, for the next read.
    granted: Option<Grant>,
}

/// A download's open file, with the session it is open on.
type Reader = (Box<dyn Session>, Box<dyn ReadFile>);

/// Opens `path` for reading from `start`.
fn open_reader(backend: &dyn Backend, path: &str, start: u64) -> Result<Reader, StoreError> {
    let mut session = backend.session()?;
    let (mut file, _) = session.open(path)?;
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .map_err(|e| StoreError::io(format!("seeking in {path}"), e))?;
    }
    Ok((session, file))
}

impl Download {
    /// Bytes not yet handed out.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// Starts the next read when there is room ahead of the client and in
    /// the budget: a full piece ahead of the client only while the budget
    /// is not under pressure; the piece the client waits for as soon as
    /// any room is free (waiting for one unit when none is).
    fn read_ahead(&mut self) {
        if self.unread == 0
            || self.pending.is_some()
            || self.failed.is_some()
            || self.ready.len() >= self.depth
        {
            return;
        }
        let Some(parking) = self.reader.clone() else {
            return;
        };
        let want = usize::try_from(self.unread.min(self.chunk as u64)).unwrap_or(self.chunk);
        let needed_now = self.ready.is_empty();
        let grant = if needed_now {
            self.granted
                .take()
                .or_else(|| self.budget.try_take_up_to(want))
        } else if self.budget.under_pressure() {
            None
        } else {
            self.budget.try_take(want)
        };
        let Some(grant) = grant else {
            if needed_now && self.waiting.is_none() {
                let budget = self.budget.clone();
                self.waiting = Some(Box::pin(async move { budget.take_one().await }));
            }
            return;
        };
        let want = want.min(grant.bytes());
        self.unread -= want as u64;
        let offset = self.offset;
        self.offset += want as u64;
        let (backend, path) = (self.backend.clone(), self.path.clone());
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let (session, mut file) =
                parking.take_or_reopen(|| open_reader(backend.as_ref(), &path, offset))?;
            let bytes =
                read_exact(file.as_mut(), want, &path).map(|buf| budgeted_bytes(buf, grant))?;
            parking.leave((session, file));
            Ok(bytes)
        }));
    }

    fn absorb(&mut self, done: Result<Result<Bytes, StoreError>, tokio::task::JoinError>) {
        match done {
            Err(join) => self.failed = Some(join_error(join)),
            Ok(Ok(bytes)) => self.ready.push_back(bytes),
            Ok(Err(e)) => self.failed = Some(e),
        }
    }

    /// The next piece of the file; `None` after the last.
    pub fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, StoreError>>> {
        use std::future::Future;
        use std::task::Poll;
        loop {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let mut waiting = false;
            if let Some(pending) = self.pending.as_mut() {
                match std::pin::Pin::new(pending).poll(cx) {
                    Poll::Ready(done) => {
                        self.pending = None;
                        self.absorb(done);
                    }
                    Poll::Pending => waiting = true,
                }
            }
            if let Some(room) = self.waiting.as_mut() {
                match room.as_mut().poll(cx) {
                    Poll::Ready(grant) => {
                        self.waiting = None;
                        self.granted = Some(grant);
                    }
                    Poll::Pending => waiting = true,
                }
            }
            self.read_ahead();
            if let Some(bytes) = self.ready.pop_front() {
                self.left = self.left.saturating_sub(bytes.len() as u64);
                self.read_ahead();
                return Poll::Ready(Some(Ok(bytes)));
            }
            if let Some(e) = self.failed.take() {
                self.left = 0;
                return Poll::Ready(Some(Err(e)));
            }
            if self.pending.is_none() && self.waiting.is_none() && self.granted.is_none() {
                return Poll::Ready(Some(Err(StoreError::Aborted)));
            }
            if waiting {
                return Poll::Pending;
            }
            // A read was just started: poll it once so it can wake us.
        }
    }
}

/// Reads exactly `want` bytes into a fresh buffer. `read_to_end` through
/// `take` fills the buffer's spare capacity without zeroing it first (for
/// local files std reads straight into it), which saved the memset that
/// took about 9 % of a download's CPU.
fn read_exact(file: &mut dyn ReadFile, want: usize, path: &str) -> Result<Vec<u8>, StoreError> {
    let mut buf = Vec::with_capacity(want);
    let got = std::io::Read::take(file, want as u64)
        .read_to_end(&mut buf)
        .map_err(|e| StoreError::io(format!("reading {path}"), e))?;
    if got < want {
        return Err(StoreError::io(
            format!("reading {path}"),
            std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        ));
    }
    Ok(buf)
}

impl Store {
    /// A store over `backend`.
    pub fn new(backend: impl Backend) -> Store {
        Store {
            backend: Arc::new(backend),
            counters: Arc::new(Mutex::new(HourCounters::default())),
            out_of_space: Arc::new(Notify::new()),
            budget: Budget::new(crate::budget::DEFAULT_BYTES),
        }
    }

    /// The same store with `budget` for its transfer buffers (shared with
    /// every other store made from it, and with whoever holds a clone).
    pub fn with_budget(mut self, budget: Budget) -> Store {
        self.budget = budget;
        self
    }

    /// The store of another node's directory on the same file server, to
    /// serve a file that node stored; `None` for a name that is not a plain
    /// directory name.
    pub fn sibling(&self, node: &str) -> Option<Store> {
        let plain = !node.is_empty()
            && node != "."
            && node != ".."
            && node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !plain {
            return None;
        }
        Some(Store {
            backend: self.backend.sibling(node)?,
            counters: Arc::new(Mutex::new(HourCounters::default())),
            out_of_space: self.out_of_space.clone(),
            budget: self.budget.clone(),
        })
    }

    /// The store holding a file recorded under `file_node` when this one is
    /// `this_node`'s: this store itself (also for rows without a node), or
    /// its sibling; `None` when `file_node` is not a plain directory name.
    pub fn of_node(&self, this_node: &str, file_node: &str) -> Option<Store> {
        if file_node == this_node || file_node.is_empty() {
            Some(self.clone())
        } else {
            self.sibling(file_node)
        }
    }

    /// False while the file server is known to be down: new slots should wait.
    pub fn is_available(&self) -> bool {
        self.backend.is_available()
    }

    /// Completes when an upload has run out of space (since the last call
    /// completed), so the free-space guard can measure at once.
    pub async fn ran_out_of_space(&self) {
        self.out_of_space.notified().await;
    }

    /// The file server's name, for logs.
    pub fn file_server(&self) -> String {
        self.backend.describe()
    }

    /// Bytes an upload gathers before each write to its temporary file: a
    /// live upload can leave that file unchanged while it fills this much.
    pub fn write_size(&self) -> usize {
        self.backend.write_size()
    }

    /// A new location for a file of `chat` type uploaded now.
    pub async fn allocate(&self, chat: ChatType) -> Result<Location, StoreError> {
        self.allocate_at(chat, UtcTime::now()).await
    }

    /// A new location for a file of `chat` type at time `now`. The first
    /// allocation of an hour recovers the rollover counter from the server.
    pub async fn allocate_at(&self, chat: ChatType, now: UtcTime) -> Result<Location, StoreError> {
        let mut counters = self.counters.lock().await;
        if let Some(loc) = counters.next(chat, &now) {
            return Ok(loc);
        }
        let backend = self.backend.clone();
        let (n, count) = blocking(move || recover_hour(backend.as_ref(), chat, &now)).await?;
        tracing::debug!(chat = %chat, n, count, "opened hour directory");
        counters.recover(chat, &now, n, count);
        counters
            .next(chat, &now)
            .ok_or_else(|| StoreError::unavailable("hour counter did not open"))
    }

    /// Starts an upload of exactly `meta.size` bytes to `loc`: opens a
    /// hidden temporary file in the target directory.
    /// A body that fits one write opens its file only once it is complete
    /// (one blocking call for the whole file); a larger one opens it now,
    /// so a failing file server is known before its body is read.
    pub async fn begin_upload(&self, loc: Location, meta: FileMeta) -> Result<Upload, StoreError> {
        let full = usize::try_from(meta.size)
            .unwrap_or(usize::MAX)
            .clamp(1, self.backend.write_size());
        let first = match self.budget.try_take_up_to(full) {
            Some(grant) => grant,
            None => self.budget.take_one().await,
        };
        let write_size = full.min(first.bytes());
        let temp = temp_name(&loc, "data");
        let parking = parking_for(self.backend.as_ref(), put_away_writer, &self.budget);
        let opened = meta.size > write_size as u64;
        if opened {
            let backend = self.backend.clone();
            let (at, path) = (loc.clone(), temp.clone());
            let writer = blocking(move || open_writer(backend.as_ref(), &at, &path)).await?;
            parking.leave(writer);
        }
        Ok(Upload {
            backend: self.backend.clone(),
            out_of_space: self.out_of_space.clone(),
            loc,
            temp,
            meta,
            got: 0,
            written: 0,
            write_size,
            buf: Vec::with_capacity(write_size),
            spare: Vec::new(),
            opened,
            writer: parking,
            hasher: Some(Sha256::new()),
            pending: None,
            done: false,
            budget: self.budget.clone(),
            _first: first,
            second: None,
        })
    }

    /// Size and description of a stored file.
    pub async fn stat(&self, loc: &Location) -> Result<FileInfo, StoreError> {
        self.stat_inner(loc, true).await
    }

    /// [`Store::stat`] without reading the description (`meta` is `None`):
    /// for a caller that has the file's `files` row, which says the same,
    /// so a download opens one file instead of two.
    pub async fn stat_data(&self, loc: &Location) -> Result<FileInfo, StoreError> {
        self.stat_inner(loc, false).await
    }

    async fn stat_inner(&self, loc: &Location, describe: bool) -> Result<FileInfo, StoreError> {
        let backend = self.backend.clone();
        let loc = loc.clone();
        let piece = self.backend.read_size() as u64;
        let budget = self.budget.clone();
        blocking(move || {
            let mut session = backend.session()?;
            let path = loc.path();
            let (mut file, size) = session.open(&path)?;
            // Read with the size only when the budget has room to spare;
            // otherwise the download streams it under the budget's rules.
            let room = (size <= piece && !budget.under_pressure())
                .then(|| budget.try_take(size as usize))
                .flatten();
            let contents = match room {
                Some(grant) => Some(budgeted_bytes(
                    read_exact(file.as_mut(), size as usize, &path)?,
                    grant,
                )),
                None => None,
            };
            drop(file);
            let meta = if describe {
                read_meta(session.as_mut(), &loc)
            } else {
                None
            };
            Ok(FileInfo {
                size,
                meta,
                contents,
            })
        })
        .await
    }

    /// [`Store::read`] of a file just [`stat`](Store::stat)ed: a small
    /// file's bytes were read with its size and are handed out as they are.
    pub async fn read_stated(
        &self,
        info: &FileInfo,
        loc: &Location,
        start: u64,
        len: u64,
    ) -> Result<Download, StoreError> {
        let Some(contents) = &info.contents else {
            return self.read(loc, start, len).await;
        };
        let (from, to) = (start as usize, (start + len) as usize);
        if to > contents.len() {
            return Err(StoreError::io(
                format!("reading {}", loc.path()),
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            ));
        }
        let mut ready = std::collections::VecDeque::new();
        if len > 0 {
            ready.push_back(contents.slice(from..to));
        }
        Ok(Download {
            reader: None,
            backend: self.backend.clone(),
            offset: start + len,
            pending: None,
            ready,
            failed: None,
            path: loc.path(),
            left: len,
            unread: 0,
            chunk: self.backend.read_size(),
            depth: self.backend.read_ahead(),
            budget: self.budget.clone(),
            waiting: None,
            granted: None,
        })
    }

    /// Opens `len` bytes of the file from offset `start` for streaming in
    /// pieces of the backend's read size.
    pub async fn read(&self, loc: &Location, start: u64, len: u64) -> Result<Download, StoreError> {
        let backend = self.backend.clone();
        let path = loc.path();
        let opened = path.clone();
        let reader = blocking(move || open_reader(backend.as_ref(), &opened, start)).await?;
        let parking = parking_for(self.backend.as_ref(), put_away_reader, &self.budget);
        parking.leave(reader);
        Ok(Download {
            reader: Some(parking),
            backend: self.backend.clone(),
            offset: start,
            pending: None,
            ready: std::collections::VecDeque::new(),
            failed: None,
            path,
            left: len,
            unread: len,
            chunk: self.backend.read_size(),
            depth: self.backend.read_ahead(),
            budget: self.budget.clone(),
            waiting: None,
            granted: None,
        })
    }

    /// Removes a stored file and its description.
    pub async fn remove(&self, loc: &Location) -> Result<(), StoreError> {
        let backend = self.backend.clone();
        let loc = loc.clone();
        blocking(move || {
            // The reverse of publishing: data first, then its description
            // (an orphan description is what start-up recovery cleans).
            // `Err(not found)` tells the caller the data was already gone.
            let mut session = backend.session()?;
            let data = session.remove(&loc.path());
            if data.as_ref().is_err_and(|e| !e.is_not_found()) {
                return data;
            }
            match session.remove(&loc.meta_path()) {
                Err(e) if !e.is_not_found() => Err(e),
                _ => data,
            }
        })
        .await
    }

    /// Aborts the uploads a crash left unfinished on the server where it
    /// keeps them apart from files (S3 multipart uploads); for start-up
    /// recovery, before uploads are accepted.
    pub async fn abort_unfinished_uploads(&self) -> Result<usize, StoreError> {
        let backend = self.backend.clone();
        blocking(move || backend.abort_unfinished_uploads()).await
    }

    /// Removes one path below the node directory (a leftover temporary file).
    pub async fn remove_path(&self, path: &str) -> Result<(), StoreError> {
        let path = path.to_owned();
        self.with_session(move |session| session.remove(&path))
            .await
    }

    /// Runs `f` with one session on a blocking thread.
    pub async fn with_session<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Session) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let backend = self.backend.clone();
        blocking(move || {
            let mut session = backend.session()?;
            f(session.as_mut())
        })
        .await
    }

    /// Free space where the node directory lives, if the server can tell.
    pub async fn free_space(&self) -> Result<Option<crate::backend::FreeSpace>, StoreError> {
        let backend = self.backend.clone();
        blocking(move || backend.session()?.free_space()).await
    }

    /// Checks the file server answers and the node directory is listable.
    pub async fn health_check(&self) -> Result<(), StoreError> {
        let backend = self.backend.clone();
        blocking(move || {
            let mut session = backend.session()?;
            session.list_dir("files").map(|_| ()).or_else(|e| {
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|join| StoreError::io("storage worker", std::io::Error::other(join)))?
}

/// Finds the highest `HH.n` of this hour and how many files it holds.
fn recover_hour(
    backend: &dyn Backend,
    chat: ChatType,
    now: &UtcTime,
) -> Result<(u32, u32), StoreError> {
    let mut session = backend.session()?;
    let date_dir = format!("files/{}/{}", chat, now.compact_date());
    let names = match session.list_dir(&date_dir) {
        Ok(names) => names,
        Err(e) if e.is_not_found() => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    let Some(n) = names
        .iter()
        .filter_map(|name| parse_hour_dir(name))
        .filter(|(hour, _)| *hour == now.hour)
        .map(|(_, n)| n)
        .max()
    else {
        return Ok((0, 0));
    };
    let dir = format!("{date_dir}/{}", crate::layout::hour_dir_name(now.hour, n));
    let count = session
        .list_dir(&dir)?
        .iter()
        .filter(|n| is_data_file(n))
        .count();
    Ok((n, u32::try_from(count).unwrap_or(u32::MAX)))
}

fn temp_name(loc: &Location, what: &str) -> String {
    let mut salt = [0u8; 8];
    let _ = getrandom::getrandom(&mut salt);
    let salt = u64::from_le_bytes(salt) >> 16;
    format!("{}/.{}.{what}.{salt:012x}.part", loc.dir(), loc.resource())
}

/// Writes what is left, makes the file durable, and publishes it. The
/// description is attached to the file itself where the file server can
/// (an extended attribute, durable with the file's fsync: one inode and
/// one fsync per upload); elsewhere it is written first, fsynced under its
/// final name, beside the file. Then the data under its final name, whose
/// directory fsync makes the names durable before the caller answers. Any
/// failure removes what was made. A crash in between leaves a description
/// without its file, which start-up recovery removes, or (where the file
/// system kept only the later name) a published file without a row, which
/// it quarantines.
fn finish_upload(
    writer: Writer,
    mut hasher: Sha256,
    rest: Vec<u8>,
    loc: &Location,
    temp: &str,
    mut meta: FileMeta,
) -> Result<StoredFile, StoreError> {
    // The room for writes in flight lasts until the sync collected them.
    let Writer {
        mut session,
        mut file,
        in_flight: _in_flight,
    } = writer;
    let result = (|| {
        hasher.update(&rest);
        file.write_all(&rest)
            .map_err(|e| StoreError::io(format!("writing {temp}"), e))?;
        meta.sha256 = format!("{:x}", hasher.finalize());
        meta.created = unix_now();
        let attached = file.describe(&meta.to_bytes());
        file.sync()?;
        drop(file);
        if !attached {
            write_meta(session.as_mut(), loc, &meta)?;
        }
        if let Err(e) = session.publish(temp, &loc.path()) {
            if !attached {
                let _ = session.remove(&loc.meta_path());
            }
            return Err(e);
        }
        Ok(StoredFile {
            path: loc.path(),
            meta,
        })
    })();
    if result.is_err() {
        // Best effort: the file server may be the thing that failed.
        let _ = session.remove(temp);
    }
    result
}

/// Writes the description under its final name (never served, so no
/// temporary name is needed: a reader of a description only follows a
/// published file, which comes after this is fsynced). Nothing is replaced:
/// a description already there is an error, and is left alone.
fn write_meta(
    session: &mut dyn Session,
    loc: &Location,
    meta: &FileMeta,
) -> Result<(), StoreError> {
    let path = loc.meta_path();
    let mut file = session.create_new(&path)?;
    let written = file
        .write_all(&meta.to_bytes())
        .map_err(|e| StoreError::io(format!("writing {path}"), e))
        .and_then(|()| file.sync());
    drop(file);
    if written.is_err() {
        let _ = session.remove(&path);
    }
    written
}

/// The description attached to the file, else the one beside it.
fn read_meta(session: &mut dyn Session, loc: &Location) -> Option<FileMeta> {
    if let Some(attached) = session.description(&loc.path()) {
        return FileMeta::from_bytes(&attached);
    }
    let (file, _) = session.open(&loc.meta_path()).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_META_BYTES).read_to_end(&mut bytes).ok()?;
    FileMeta::from_bytes(&bytes)
}
