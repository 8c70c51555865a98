//! The SSH/SFTP file server backend (libssh2 through the `ssh2` crate).
//!
//! - Every connection checks the server's host key against the pinned one
//!   and refuses a mismatch (logging both fingerprints); there is no fallback.
//! - The node authenticates with its own key pair, public key only.
//! - Connections are pooled: one per concurrent transfer, idle ones probed
//!   before reuse. When the server cannot be reached, further attempts fail
//!   at once for a backoff period (1 s doubling to 30 s), so clients get a
//!   quick 503 / `wait` instead of hanging, and the first attempt after the
//!   period reconnects: no restart is needed when the server comes back.
//! - At most [`MAX_HANDSHAKES`] connections are being set up at once; the
//!   rest wait their turn. A burst of transfers (hundreds opened together)
//!   would otherwise trip sshd's `MaxStartups` (10 unauthenticated
//!   connections by default), whose dropped connections would put the whole
//!   node into backoff: one client's burst would refuse everyone.
//! - Files are published with SSH_FXP_RENAME, which OpenSSH implements as
//!   `link(2)` + `unlink(2)`: atomic, and it refuses to overwrite.

use std::io::{self, Read, Seek, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ssh2::{ErrorCode, MethodType, OpenFlags, OpenType, Sftp};

use crate::backend::{check_relative, Backend, FreeSpace, ReadFile, Session, WriteFile};
use crate::backoff::Backoff;
use crate::error::ConnectError;
use crate::hostkey::{fingerprint, PinnedHostKey};
use crate::StoreError;

/// SFTP status codes (draft-ietf-secsh-filexfer-02 and later).
const FX_NO_SUCH_FILE: i32 = 2;
const FX_FAILURE: i32 = 4;
const FX_NO_SUCH_PATH: i32 = 10;
const FX_FILE_ALREADY_EXISTS: i32 = 11;

/// An idle connection unused for longer than this is probed before reuse.
const PROBE_AFTER: Duration = Duration::from_secs(15);
/// An idle connection unused for longer than this is closed (when a
/// connection is given back): a burst's sessions do not stay open on the
/// file server for ever.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Connections set up at once by one node: below sshd's default
/// `MaxStartups` start (10), so one node never trips it.
pub const MAX_HANDSHAKES: usize = 8;

/// How to reach the file server.
#[derive(Debug, Clone)]
pub struct SftpSettings {
    /// Host name or address.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// The file server user.
    pub user: String,
    /// The node directory on the server, absolute.
    pub directory: String,
    /// The server's expected host key.
    pub host_key: PinnedHostKey,
    /// The node's private key file (OpenSSH format).
    pub private_key: PathBuf,
    /// Idle connections kept.
    pub pool_size: usize,
    /// TCP connect and SSH handshake limit.
    pub connect_timeout: Duration,
    /// Limit for any one SSH operation once connected.
    pub io_timeout: Duration,
    /// Cipher preference (libssh2 names), empty for libssh2's default.
    pub ciphers: String,
}

/// Files on an SFTP server.
#[derive(Clone)]
pub struct SftpBackend {
    pool: Arc<Pool>,
    /// The directory sessions work in: the node directory, or a sibling
    /// node's directory on the same server (reads of its files).
    directory: String,
}

struct Pool {
    settings: SftpSettings,
    idle: Mutex<Vec<Conn>>,
    health: Mutex<Health>,
    handshakes: HandshakeGate,
}

/// Counts connections being set up; [`HandshakeGate::enter`] waits while
/// [`MAX_HANDSHAKES`] are.
struct HandshakeGate {
    busy: Mutex<usize>,
    freed: Condvar,
}

/// A place in the gate, given back when dropped.
struct HandshakeTurn<'a>(&'a HandshakeGate);

impl HandshakeGate {
    fn new() -> HandshakeGate {
        HandshakeGate {
            busy: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    fn enter(&self) -> HandshakeTurn<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        while *busy >= MAX_HANDSHAKES {
            busy = self.freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        *busy += 1;
        HandshakeTurn(self)
    }
}

impl Drop for HandshakeTurn<'_> {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(|e| e.into_inner());
        *busy -= 1;
        self.0.freed.notify_one();
    }
}

struct Health {
    backoff: Backoff,
    last_error: String,
}

struct Conn {
    _session: ssh2::Session,
    sftp: Sftp,
    last_used: Instant,
}

/// Why connecting failed; kept apart so the operator sees the real cause.
fn unavailable(host: &str, what: impl std::fmt::Display, source: ssh2::Error) -> StoreError {
    StoreError::unavailable_because(format!("file server {host}, while {what}"), source)
}

impl SftpBackend {
    /// A backend for `settings`; nothing is connected until first use.
    pub fn new(settings: SftpSettings) -> SftpBackend {
        SftpBackend {
            directory: settings.directory.clone(),
            pool: Arc::new(Pool {
                settings,
                idle: Mutex::new(Vec::new()),
                health: Mutex::new(Health {
                    backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
                    last_error: String::new(),
                }),
                handshakes: HandshakeGate::new(),
            }),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &SftpSettings {
        &self.pool.settings
    }

    /// Opens a fresh connection, bypassing the pool and the backoff (for
    /// status checks). Errors name the failing step.
    pub fn connect_now(&self) -> Result<(), StoreError> {
        let _turn = self.pool.handshakes.enter();
        connect(&self.pool.settings).map(|_| ())
    }
}

fn connect(s: &SftpSettings) -> Result<Conn, StoreError> {
    connect_steps(s).map_err(|source| StoreError::Connect {
        host: s.host.clone(),
        source,
    })
}

fn connect_steps(s: &SftpSettings) -> Result<Conn, ConnectError> {
    let addr = (s.host.as_str(), s.port)
        .to_socket_addrs()
        .map_err(ConnectError::Resolve)?
        .next()
        .ok_or_else(|| ConnectError::Resolve(std::io::Error::from(std::io::ErrorKind::NotFound)))?;
    let tcp = TcpStream::connect_timeout(&addr, s.connect_timeout).map_err(|source| {
        ConnectError::Tcp {
            addr: addr.to_string(),
            source,
        }
    })?;
    let _ = tcp.set_nodelay(true);
    let mut session = ssh2::Session::new().map_err(ConnectError::Handshake)?;
    session.set_tcp_stream(tcp);
    session.set_timeout(u32::try_from(s.connect_timeout.as_millis()).unwrap_or(u32::MAX));
    session
        .method_pref(MethodType::HostKey, s.host_key.method_pref())
        .map_err(ConnectError::Handshake)?;
    if !s.ciphers.is_empty() {
        for dir in [MethodType::CryptCs, MethodType::CryptSc] {
            session
                .method_pref(dir, &s.ciphers)
                .map_err(ConnectError::Ciphers)?;
        }
    }
    session.handshake().map_err(ConnectError::Handshake)?;
    let (presented, _) = session.host_key().ok_or(ConnectError::NoHostKey)?;
    if presented != s.host_key.blob.as_slice() {
        let (expected, got) = (fingerprint(&s.host_key.blob), fingerprint(presented));
        tracing::error!(
            host = %s.host,
            expected = %expected,
            presented = %got,
            "file server host key does not match the pinned key: refusing to connect (possible man-in-the-middle)"
        );
        return Err(ConnectError::HostKeyMismatch {
            expected,
            presented: got,
        });
    }
    let refused = |source| ConnectError::AuthRefused {
        user: s.user.clone(),
        key: s.private_key.display().to_string(),
        source,
    };
    session
        .userauth_pubkey_file(&s.user, None, &s.private_key, None)
        .map_err(|e| refused(Some(e)))?;
    if !session.authenticated() {
        return Err(refused(None));
    }
    session.set_timeout(u32::try_from(s.io_timeout.as_millis()).unwrap_or(u32::MAX));
    let sftp = session.sftp().map_err(ConnectError::Subsystem)?;
    Ok(Conn {
        _session: session,
        sftp,
        last_used: Instant::now(),
    })
}

/// How many of the idle connections, least recently used first (they are
/// taken from the back), have been unused for longer than [`IDLE_LIMIT`].
fn stale_prefix(last_used: impl Iterator<Item = Instant>, now: Instant) -> usize {
    last_used
        .take_while(|used| now.saturating_duration_since(*used) > IDLE_LIMIT)
        .count()
}

impl Pool {
    fn take_idle(&self) -> Option<Conn> {
        self.idle.lock().ok()?.pop()
    }

    fn give_back(&self, mut conn: Conn) {
        let now = Instant::now();
        conn.last_used = now;
        let expired: Vec<Conn> = match self.idle.lock() {
            Ok(mut idle) => {
                let stale = stale_prefix(idle.iter().map(|c| c.last_used), now);
                let expired = idle.drain(..stale).collect();
                if idle.len() < self.settings.pool_size {
                    idle.push(conn);
                }
                expired
            }
            Err(_) => Vec::new(),
        };
        // Closed outside the lock: a disconnect is network I/O.
        drop(expired);
    }

    fn connect_with_backoff(&self) -> Result<Conn, StoreError> {
        let host = &self.settings.host;
        // The backoff is checked after the wait for a turn, so those queued
        // behind a failure fail at once instead of trying again.
        let _turn = self.handshakes.enter();
        if let Ok(h) = self.health.lock() {
            if let Some(wait) = h.backoff.waiting() {
                // The last failure is remembered as text (the error itself
                // went to the caller that met it); it is this one's cause.
                return Err(StoreError::unavailable_because(
                    format!("{host} (next attempt in {}s)", wait.as_secs() + 1),
                    h.last_error.clone(),
                ));
            }
        }
        match connect(&self.settings) {
            Ok(conn) => {
                if let Ok(mut h) = self.health.lock() {
                    if !h.last_error.is_empty() {
                        tracing::info!(host = %host, "file server reachable again");
                        h.last_error.clear();
                    }
                    h.backoff.succeeded();
                }
                Ok(conn)
            }
            Err(e) => {
                if let Ok(mut h) = self.health.lock() {
                    let wait = h.backoff.failed();
                    h.last_error = crate::error::chain(&e);
                    tracing::warn!(host = %host, error = %h.last_error, retry_in_s = wait.as_secs(), "file server unavailable");
                }
                self.drop_idle();
                Err(e)
            }
        }
    }

    fn drop_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

impl Backend for SftpBackend {
    fn describe(&self) -> String {
        self.pool.settings.host.clone()
    }

    fn read_ahead(&self) -> usize {
        // Each read is a round of SSH_FXP_READ requests: keep the next ones
        // going while the client takes the last.
        3
    }

    fn connection_per_file(&self) -> bool {
        true
    }

    fn is_available(&self) -> bool {
        self.pool
            .health
            .lock()
            .map(|h| h.backoff.waiting().is_none())
            .unwrap_or(true)
    }

    fn session(&self) -> Result<Box<dyn Session>, StoreError> {
        let root = Path::new(&self.directory);
        while let Some(conn) = self.pool.take_idle() {
            if conn.last_used.elapsed() < PROBE_AFTER || conn.sftp.stat(root).is_ok() {
                return Ok(Box::new(SftpSession::new(self.pool.clone(), conn, root)));
            }
        }
        let conn = self.pool.connect_with_backoff()?;
        Ok(Box::new(SftpSession::new(self.pool.clone(), conn, root)))
    }

    fn sibling(&self, node: &str) -> Option<Arc<dyn Backend>> {
        let parent = Path::new(&self.pool.settings.directory).parent()?;
        Some(Arc::new(SftpBackend {
            pool: self.pool.clone(),
            directory: parent.join(node).to_string_lossy().into_owned(),
        }))
    }
}

struct SftpSession {
    pool: Arc<Pool>,
    conn: Option<Conn>,
    broken: Arc<AtomicBool>,
    root: PathBuf,
}

impl SftpSession {
    fn new(pool: Arc<Pool>, conn: Conn, root: &Path) -> SftpSession {
        let root = root.to_path_buf();
        SftpSession {
            pool,
            conn: Some(conn),
            broken: Arc::new(AtomicBool::new(false)),
            root,
        }
    }

    fn sftp(&self) -> Result<&Sftp, StoreError> {
        self.conn
            .as_ref()
            .map(|c| &c.sftp)
            .ok_or_else(|| StoreError::unavailable("SFTP session closed"))
    }

    fn full(&self, path: &str) -> Result<PathBuf, StoreError> {
        check_relative(path)?;
        Ok(self.root.join(path))
    }

    /// Classifies an ssh2 error; transport failures mark the connection broken.
    fn fail(&self, context: String, e: ssh2::Error) -> StoreError {
        match e.code() {
            ErrorCode::SFTP(FX_NO_SUCH_FILE | FX_NO_SUCH_PATH) => StoreError::NotFound(context),
            ErrorCode::SFTP(FX_FILE_ALREADY_EXISTS) => StoreError::AlreadyExists(context),
            ErrorCode::SFTP(_) => StoreError::Io {
                context,
                source: io::Error::other(e),
            },
            ErrorCode::Session(_) => {
                self.broken.store(true, Ordering::Relaxed);
                unavailable(&self.pool.settings.host, context, e)
            }
        }
    }

    fn exists(&self, path: &Path) -> bool {
        self.sftp().map(|s| s.stat(path).is_ok()).unwrap_or(false)
    }
}

impl Drop for SftpSession {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !self.broken.load(Ordering::Relaxed) {
                self.pool.give_back(conn);
            }
        }
    }
}

/// Bytes of an upload left in flight (sent, not yet acknowledged by the
/// server) when a write returns: OpenSSH's channel window, so the server
/// always has a full window to work on. Over a 20 ms round trip this doubled
/// the writer's throughput (docs/performance.md); on loopback it changes
/// nothing, where libssh2's ciphers are the limit.
const IN_FLIGHT: usize = 2 * 1024 * 1024;

/// What a write of `piece` bytes may leave in flight: [`IN_FLIGHT`], or two
/// pieces when the pieces are smaller (the store writes small pieces when
/// the memory budget is under pressure).
fn in_flight_after(piece: usize) -> usize {
    IN_FLIGHT.min(piece.saturating_mul(2))
}

/// Bytes in flight are held twice: in [`SftpFile`]'s queue and in libssh2's
/// requests, until a later write or the final sync collects their
/// acknowledgements.
const COPIES_IN_FLIGHT: usize = 2;

/// Reads of at most this many bytes are small (the memory budget under
/// pressure hands downloads pieces of 64 KiB).
const SMALL_READ: usize = 64 * 1024;
/// The least a small read asks libssh2 for at once.
const LEAST_ASK: usize = 16 * 1024;

/// A file being downloaded.
///
/// libssh2 requests four times what a read call asks for, ahead of it, and
/// the replies wait in its buffers — outside the memory budget — for as
/// long as the download's client is stalled. A small read therefore asks a
/// quarter of what is left at a time, so nothing is requested past the end
/// of the piece (512 stalled downloads held about 280 KiB each more than on
/// the local store). Larger reads keep libssh2's read-ahead, which carries
/// a file server far away.
struct SftpReader {
    file: ssh2::File,
}

impl Read for SftpReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let ask = if buf.len() <= SMALL_READ {
            (buf.len() / 4).max(LEAST_ASK).min(buf.len())
        } else {
            buf.len()
        };
        self.file.read(&mut buf[..ask])
    }
}

impl Seek for SftpReader {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        self.file.seek(to)
    }
}

/// A file being uploaded, with its write pipeline kept full across calls.
///
/// libssh2 splits what it is given into 30 000-byte SSH_FXP_WRITE requests,
/// sends them all, and returns as soon as the first is acknowledged; the
/// caller must then pass the unacknowledged bytes again at the front of the
/// next call. Handing it one buffer at a time (`write_all`) therefore drains
/// the pipeline to nothing at the end of every buffer. This keeps the
/// unacknowledged bytes and appends new ones behind them, so requests stay
/// in flight while the next piece arrives; `flush`/`sync` wait for all of
/// them.
struct SftpFile {
    file: ssh2::File,
    broken: Arc<AtomicBool>,
    /// Bytes not yet acknowledged, from `acked` on.
    queue: Vec<u8>,
    acked: usize,
    /// Bytes a write may leave in flight when it returns; granted by the
    /// upload from the memory budget (none until it does, and none while
    /// the budget is under pressure: a stalled upload then holds nothing
    /// here or in libssh2 — 512 of them held 630 MiB when each kept 2 MiB,
    /// and still about 0.5 MiB each at two 64 KiB pieces).
    keep: usize,
}

impl SftpFile {
    fn new(file: ssh2::File, broken: Arc<AtomicBool>) -> SftpFile {
        SftpFile {
            file,
            broken,
            queue: Vec::new(),
            acked: 0,
            keep: 0,
        }
    }

    fn pending(&self) -> usize {
        self.queue.len() - self.acked
    }

    /// Lets libssh2 send what is queued and collects acknowledgements until
    /// at most `keep` bytes are outstanding.
    fn pump(&mut self, keep: usize) -> io::Result<()> {
        while self.pending() > keep {
            match self.file.write(&self.queue[self.acked..]) {
                Ok(0) => return Err(self.io_fail(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.acked += n,
                Err(e) => return Err(self.io_fail(e)),
            }
        }
        if self.acked == self.queue.len() {
            if keep == 0 {
                // Nothing in flight: give the queue's memory back too.
                self.queue = Vec::new();
            } else {
                self.queue.clear();
            }
            self.acked = 0;
        }
        Ok(())
    }

    fn io_fail(&self, e: io::Error) -> io::Error {
        // Any write failure leaves the connection in an unknown state.
        self.broken.store(true, Ordering::Relaxed);
        io::Error::new(io::ErrorKind::ConnectionAborted, e)
    }
}

impl Write for SftpFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.acked > 0 && self.acked >= self.pending() {
            // Moves at most as many bytes as were acknowledged since the
            // last move: one copy per byte at most.
            self.queue.drain(..self.acked);
            self.acked = 0;
        }
        self.queue.extend_from_slice(buf);
        self.pump(self.keep)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.pump(0)?;
        self.file.flush().map_err(|e| self.io_fail(e))
    }
}

impl Drop for SftpFile {
    fn drop(&mut self) {
        // An abandoned upload may leave a request half sent, which would
        // corrupt the connection for the next transfer: finish what is in
        // flight (at most IN_FLIGHT, bounded by the I/O timeout) so the
        // connection can be reused; a failure marks it broken. A connection
        // already broken is not waited on again.
        if !self.broken.load(Ordering::Relaxed) {
            let _ = self.pump(0);
        }
    }
}

impl WriteFile for SftpFile {
    fn wants_in_flight(&self, piece: usize) -> usize {
        in_flight_after(piece) * COPIES_IN_FLIGHT
    }

    fn keep_in_flight(&mut self, memory: usize) {
        self.keep = memory / COPIES_IN_FLIGHT;
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.pump(0)
            .map_err(|e| StoreError::unavailable_because("writing to the file server", e))?;
        self.file.fsync().map_err(|e| {
            self.broken.store(true, Ordering::Relaxed);
            StoreError::unavailable_because("fsync@openssh.com failed", e)
        })
    }
}

impl Session for SftpSession {
    fn create_dir_all(&mut self, dir: &str) -> Result<(), StoreError> {
        let full = self.full(dir)?;
        let sftp = self.sftp()?;
        if sftp.stat(&full).map(|s| s.is_dir()).unwrap_or(false) {
            return Ok(());
        }
        let mut path = self.root.clone();
        let mut steps = vec![path.clone()];
        for part in dir.split('/') {
            path.push(part);
            steps.push(path.clone());
        }
        for step in steps {
            if let Err(e) = sftp.mkdir(&step, 0o750) {
                // Existing directories, including ones a concurrent upload just made, are fine.
                if !sftp.stat(&step).map(|s| s.is_dir()).unwrap_or(false) {
                    return Err(self.fail(format!("creating {}", step.display()), e));
                }
            }
        }
        Ok(())
    }

    fn create_new(&mut self, path: &str) -> Result<Box<dyn WriteFile>, StoreError> {
        let full = self.full(path)?;
        let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUSIVE;
        // OpenSSH answers an exclusive create of an existing name with a
        // generic failure (protocol 3 has no "already exists"): told apart
        // by looking, as for a refused rename.
        let file = match self.sftp()?.open_mode(&full, flags, 0o640, OpenType::File) {
            Ok(file) => file,
            Err(e) if matches!(e.code(), ErrorCode::SFTP(FX_FAILURE)) && self.exists(&full) => {
                return Err(StoreError::AlreadyExists(path.to_owned()))
            }
            Err(e) => return Err(self.fail(format!("creating {}", full.display()), e)),
        };
        Ok(Box::new(SftpFile::new(file, self.broken.clone())))
    }

    fn resume_upload(&mut self, temp: &str, offset: u64) -> Result<Box<dyn WriteFile>, StoreError> {
        let full = self.full(temp)?;
        // Neither CREATE nor TRUNCATE: the file must be the one begun.
        let mut file = self
            .sftp()?
            .open_mode(&full, OpenFlags::WRITE, 0o640, OpenType::File)
            .map_err(|e| self.fail(format!("reopening {}", full.display()), e))?;
        file.seek(io::SeekFrom::Start(offset))
            .map_err(|e| StoreError::io(format!("seeking in {}", full.display()), e))?;
        Ok(Box::new(SftpFile::new(file, self.broken.clone())))
    }

    fn publish(&mut self, temp: &str, final_path: &str) -> Result<(), StoreError> {
        let (from, to) = (self.full(temp)?, self.full(final_path)?);
        // No flags: a plain SSH_FXP_RENAME, which never overwrites on OpenSSH.
        match self
            .sftp()?
            .rename(&from, &to, Some(ssh2::RenameFlags::empty()))
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.code(), ErrorCode::SFTP(FX_FAILURE)) && self.exists(&to) => {
                Err(StoreError::AlreadyExists(final_path.to_owned()))
            }
            Err(e) => Err(self.fail(format!("publishing {}", to.display()), e)),
        }
    }

    fn remove(&mut self, path: &str) -> Result<(), StoreError> {
        let full = self.full(path)?;
        self.sftp()?
            .unlink(&full)
            .map_err(|e| self.fail(format!("removing {}", full.display()), e))
    }

    fn open(&mut self, path: &str) -> Result<(Box<dyn ReadFile>, u64), StoreError> {
        let full = self.full(path)?;
        let mut file = self
            .sftp()?
            .open(&full)
            .map_err(|e| self.fail(format!("opening {}", full.display()), e))?;
        let size = file
            .stat()
            .map_err(|e| self.fail(format!("stat of {}", full.display()), e))?
            .size
            .unwrap_or(0);
        Ok((Box::new(SftpReader { file }), size))
    }

    fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, StoreError> {
        let full = self.full(dir)?;
        let entries = self
            .sftp()?
            .readdir(&full)
            .map_err(|e| self.fail(format!("listing {}", full.display()), e))?;
        Ok(entries
            .into_iter()
            .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn modified(&mut self, path: &str) -> Result<Option<std::time::SystemTime>, StoreError> {
        let full = self.full(path)?;
        let stat = self
            .sftp()?
            .stat(&full)
            .map_err(|e| self.fail(format!("stat of {}", full.display()), e))?;
        Ok(stat
            .mtime
            .map(|t| std::time::UNIX_EPOCH + Duration::from_secs(t)))
    }

    fn free_space(&mut self) -> Result<Option<FreeSpace>, StoreError> {
        // fstatvfs@openssh.com needs a file handle; OpenSSH opens a
        // directory read-only as a file just fine. Before the first upload
        // the node directory may not exist yet: measure its parent then.
        let root = self.root.clone();
        let parent = root
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.clone());
        let sftp = self.sftp()?;
        let mut dir = match sftp.open(&root) {
            Ok(f) => f,
            Err(_) => sftp
                .open(&parent)
                .map_err(|e| self.fail(format!("opening {}", parent.display()), e))?,
        };
        match dir.statvfs() {
            Ok(v) => Ok(Some(FreeSpace {
                available: v.f_bavail.saturating_mul(v.f_frsize),
                total: v.f_blocks.saturating_mul(v.f_frsize),
            })),
            // Servers without statvfs@openssh.com.
            Err(e) if matches!(e.code(), ErrorCode::SFTP(_)) => Ok(None),
            Err(e) => Err(self.fail("statvfs".into(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn only_connections_idle_past_the_limit_are_closed_oldest_first() {
        let now = Instant::now() + IDLE_LIMIT * 3;
        let ago = |secs: u64| now - Duration::from_secs(secs);
        let limit = IDLE_LIMIT.as_secs();
        // Least recently used first, as the pool keeps them.
        let idle = [ago(limit * 2), ago(limit + 1), ago(limit - 1), ago(1)];
        assert_eq!(stale_prefix(idle.into_iter(), now), 2);
        assert_eq!(stale_prefix([ago(1), ago(0)].into_iter(), now), 0);
        assert_eq!(stale_prefix(std::iter::empty(), now), 0);
        assert_eq!(stale_prefix([ago(limit + 5)].into_iter(), now), 1);
    }

    #[test]
    fn no_more_than_max_handshakes_are_set_up_at_once() {
        let gate = Arc::new(HandshakeGate::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4 * MAX_HANDSHAKES)
            .map(|_| {
                let (gate, inside, most) = (gate.clone(), inside.clone(), most.clone());
                std::thread::spawn(move || {
                    let _turn = gate.enter();
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= MAX_HANDSHAKES, "{most} set up at once");
        assert_eq!(
            most, MAX_HANDSHAKES,
            "the gate let fewer through than it may"
        );
        assert_eq!(*gate.busy.lock().unwrap(), 0, "every turn was given back");
    }
}
