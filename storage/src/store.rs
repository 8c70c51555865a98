//! The async face of a file server: streaming uploads and downloads through
//! a blocking [`Backend`] on blocking threads, fed by bounded channels.
//!
//! An upload is written to a hidden temporary name in its target directory,
//! hashed (SHA-256) on the way, fsynced, then published under its final name
//! without ever overwriting one. Anything short of that (short or long body,
//! a dropped sender, a dead file server) removes the temporary file, so no
//! half-written file ever appears under a final name.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use crate::backend::{Backend, Session};
use crate::layout::{is_data_file, parse_hour_dir, ChatType, HourCounters, Location};
use crate::utc::{unix_now, UtcTime};
use crate::{FileMeta, StoreError};

/// Bytes read from the backend per piece of a download.
pub const READ_CHUNK: usize = 256 * 1024;
/// Pieces in flight between the network and a transfer thread; with the
/// backend's write buffer this bounds an upload's memory to a few MiB.
const CHANNEL_DEPTH: usize = 4;
/// The largest description file we read back.
const MAX_META_BYTES: u64 = 64 * 1024;

/// A file store: a backend plus the layout's rollover counters.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    counters: Arc<Mutex<HourCounters>>,
    send_timeout: Duration,
}

/// What [`Store::stat`] knows about a stored file.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// Size in bytes.
    pub size: u64,
    /// The stored description, if it could be read.
    pub meta: Option<FileMeta>,
}

/// The result of a completed upload.
#[derive(Debug, Clone)]
pub struct StoredFile {
    /// Where the file now lives, relative to the node directory.
    pub path: String,
    /// The description as stored (with SHA-256 and creation time).
    pub meta: FileMeta,
}

enum Piece {
    Data(Bytes),
    Finish,
}

/// An upload in progress; dropping it without [`finish`](Upload::finish)
/// abandons it and removes the partial file.
pub struct Upload {
    tx: mpsc::Sender<Piece>,
    worker: JoinHandle<Result<StoredFile, StoreError>>,
}

impl Upload {
    /// Hands the next piece of the body to the store; waits when the file
    /// server is slower than the client (backpressure).
    pub async fn write(&mut self, data: Bytes) -> Result<(), StoreError> {
        if self.tx.send(Piece::Data(data)).await.is_err() {
            // The worker stopped early; its result says why.
            return Err(self.worker_error().await);
        }
        Ok(())
    }

    async fn worker_error(&mut self) -> StoreError {
        match (&mut self.worker).await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => StoreError::Aborted,
            Err(join) => StoreError::io("upload worker", std::io::Error::other(join)),
        }
    }

    /// Declares the body complete: checks the length, makes the file durable
    /// and publishes it. Returns only once the file is under its final name.
    pub async fn finish(mut self) -> Result<StoredFile, StoreError> {
        if self.tx.send(Piece::Finish).await.is_err() {
            return Err(self.worker_error().await);
        }
        match self.worker.await {
            Ok(result) => result,
            Err(join) => Err(StoreError::io("upload worker", std::io::Error::other(join))),
        }
    }
}

impl Store {
    /// A store over `backend`.
    pub fn new(backend: impl Backend) -> Store {
        Store {
            backend: Arc::new(backend),
            counters: Arc::new(Mutex::new(HourCounters::default())),
            send_timeout: Duration::from_secs(60),
        }
    }

    /// How long a download may wait for a client that stopped reading.
    pub fn with_send_timeout(mut self, timeout: Duration) -> Store {
        self.send_timeout = timeout;
        self
    }

    /// False while the file server is known to be down: new slots should wait.
    pub fn is_available(&self) -> bool {
        self.backend.is_available()
    }

    /// The file server's name, for logs.
    pub fn file_server(&self) -> String {
        self.backend.describe()
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
            .ok_or_else(|| StoreError::Unavailable("hour counter did not open".into()))
    }

    /// Starts an upload of exactly `meta.size` bytes to `loc`.
    pub fn begin_upload(&self, loc: Location, meta: FileMeta) -> Upload {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let backend = self.backend.clone();
        let worker =
            tokio::task::spawn_blocking(move || upload_worker(backend.as_ref(), &loc, meta, rx));
        Upload { tx, worker }
    }

    /// Size and description of a stored file.
    pub async fn stat(&self, loc: &Location) -> Result<FileInfo, StoreError> {
        let backend = self.backend.clone();
        let loc = loc.clone();
        blocking(move || {
            let mut session = backend.session()?;
            let (_, size) = session.open(&loc.path())?;
            let meta = read_meta(session.as_mut(), &loc);
            Ok(FileInfo { size, meta })
        })
        .await
    }

    /// Streams `len` bytes of the file from offset `start`, read ahead in
    /// [`READ_CHUNK`] pieces on a blocking thread.
    pub fn read(
        &self,
        loc: &Location,
        start: u64,
        len: u64,
    ) -> mpsc::Receiver<Result<Bytes, StoreError>> {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let backend = self.backend.clone();
        let path = loc.path();
        let handle = tokio::runtime::Handle::current();
        let send_timeout = self.send_timeout;
        tokio::task::spawn_blocking(move || {
            let send = |item| {
                handle
                    .block_on(tokio::time::timeout(send_timeout, tx.send(item)))
                    .map(|sent| sent.is_ok())
                    .unwrap_or(false)
            };
            if let Err(e) = read_worker(backend.as_ref(), &path, start, len, &send) {
                send(Err(e));
            }
        });
        rx
    }

    /// Removes a stored file and its description.
    pub async fn remove(&self, loc: &Location) -> Result<(), StoreError> {
        let backend = self.backend.clone();
        let loc = loc.clone();
        blocking(move || {
            let mut session = backend.session()?;
            let _ = session.remove(&loc.meta_path());
            session.remove(&loc.path())
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
    let mut salt = [0u8; 6];
    let _ = getrandom::getrandom(&mut salt);
    let salt: String = salt.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}/.{}.{what}.{salt}.part", loc.dir(), loc.resource())
}

fn upload_worker(
    backend: &dyn Backend,
    loc: &Location,
    meta: FileMeta,
    rx: mpsc::Receiver<Piece>,
) -> Result<StoredFile, StoreError> {
    let mut session = backend.session()?;
    session.create_dir_all(&loc.dir())?;
    let temp = temp_name(loc, "data");
    let result = write_and_publish(session.as_mut(), loc, &temp, meta, rx, backend.write_size());
    if result.is_err() {
        // Best effort: the file server may be the thing that failed.
        let _ = session.remove(&temp);
    }
    result
}

fn write_and_publish(
    session: &mut dyn Session,
    loc: &Location,
    temp: &str,
    mut meta: FileMeta,
    mut rx: mpsc::Receiver<Piece>,
    write_size: usize,
) -> Result<StoredFile, StoreError> {
    let expected = meta.size;
    let mut file = session.create_new(temp)?;
    let mut buf = Vec::with_capacity(write_size);
    let mut hasher = Sha256::new();
    let mut got: u64 = 0;
    let write_err = |e| StoreError::io(format!("writing {temp}"), e);
    loop {
        match rx.blocking_recv() {
            Some(Piece::Data(data)) => {
                got += data.len() as u64;
                if got > expected {
                    return Err(StoreError::LongBody { expected });
                }
                hasher.update(&data);
                // Fill the buffer to exactly write_size and flush, so it never grows.
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let take = rest.len().min(write_size - buf.len());
                    buf.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if buf.len() == write_size {
                        file.write_all(&buf).map_err(write_err)?;
                        buf.clear();
                    }
                }
            }
            Some(Piece::Finish) => break,
            None => return Err(StoreError::Aborted),
        }
    }
    if got < expected {
        return Err(StoreError::ShortBody { expected, got });
    }
    file.write_all(&buf).map_err(write_err)?;
    file.sync()?;
    drop(file);

    meta.sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    meta.created = unix_now();
    session.publish(temp, &loc.path())?;
    if let Err(e) = write_meta(session, loc, &meta) {
        // A file without its description would be served wrongly; undo.
        let _ = session.remove(&loc.path());
        return Err(e);
    }
    Ok(StoredFile {
        path: loc.path(),
        meta,
    })
}

fn write_meta(
    session: &mut dyn Session,
    loc: &Location,
    meta: &FileMeta,
) -> Result<(), StoreError> {
    let temp = temp_name(loc, "meta");
    let result = (|| {
        let mut file = session.create_new(&temp)?;
        file.write_all(&meta.to_bytes())
            .map_err(|e| StoreError::io(format!("writing {temp}"), e))?;
        file.sync()?;
        drop(file);
        session.publish(&temp, &loc.meta_path())
    })();
    if result.is_err() {
        let _ = session.remove(&temp);
    }
    result
}

fn read_meta(session: &mut dyn Session, loc: &Location) -> Option<FileMeta> {
    let (file, _) = session.open(&loc.meta_path()).ok()?;
    let mut bytes = Vec::new();
    file.take(MAX_META_BYTES).read_to_end(&mut bytes).ok()?;
    FileMeta::from_bytes(&bytes)
}

fn read_worker(
    backend: &dyn Backend,
    path: &str,
    start: u64,
    len: u64,
    send: &dyn Fn(Result<Bytes, StoreError>) -> bool,
) -> Result<(), StoreError> {
    let mut session = backend.session()?;
    let (mut file, _) = session.open(path)?;
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .map_err(|e| StoreError::io(format!("seeking in {path}"), e))?;
    }
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(READ_CHUNK as u64)).unwrap_or(READ_CHUNK);
        let mut buf = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            let n = file
                .read(&mut buf[filled..])
                .map_err(|e| StoreError::io(format!("reading {path}"), e))?;
            if n == 0 {
                return Err(StoreError::io(
                    format!("reading {path}"),
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                ));
            }
            filled += n;
        }
        left -= want as u64;
        if !send(Ok(Bytes::from(buf))) {
            return Ok(()); // The client went away.
        }
    }
    Ok(())
}
