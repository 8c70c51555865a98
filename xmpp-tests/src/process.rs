//! Process and port helpers: free loopback ports, waiting for a port, running
//! a child as an unprivileged system user when we are root, killing on drop.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A finished command's (success, stdout followed by stderr).
pub fn outcome(out: &std::process::Output) -> (bool, String) {
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The ports the harness hands out: below Linux's ephemeral range
/// (32768–60999), so no outgoing connection of any process on the machine
/// (a client's source port) can take one between our check and the server's
/// bind — asking the kernel for port 0 handed out exactly those ports, and a
/// test now and then found its server's port taken.
const HARNESS_PORTS: std::ops::Range<u16> = 20000..32000;

/// Where a port is claimed across processes: a lock file per port, locked
/// (flock) for as long as the claiming process lives.
const CLAIM_DIR: &str = "/tmp/mftd-test-ports";

/// A loopback port nobody listens on and no other harness process has
/// claimed; this process keeps it until it exits. Ports are taken in turn
/// from a start that differs per process, so two test binaries rarely even
/// try the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    static CLAIMS: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let span = u32::from(HARNESS_PORTS.end - HARNESS_PORTS.start);
    let seed = std::process::id().wrapping_mul(2654435761)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let _ = NEXT.compare_exchange(u32::MAX, seed % span, Ordering::SeqCst, Ordering::SeqCst);
    if std::fs::create_dir_all(CLAIM_DIR).is_ok() {
        // Shared by every user the tests run as; sticky like /tmp.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(CLAIM_DIR, std::fs::Permissions::from_mode(0o1777));
    }
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let port = HARNESS_PORTS.start + offset as u16;
        let Some(claim) = claim(port) else { continue };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            CLAIMS.lock().unwrap().push(claim);
            return port;
        }
    }
    panic!(
        "no free loopback port left in {}..{}",
        HARNESS_PORTS.start, HARNESS_PORTS.end
    );
}

/// Locks `port`'s claim file, or None when another process holds it.
fn claim(port: u16) -> Option<std::fs::File> {
    use rustix::fs::{flock, FlockOperation};
    let path = format!("{CLAIM_DIR}/{port}");
    // Another user's claim file can still be locked through a read-only open.
    let file = std::fs::File::open(&path)
        .or_else(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        })
        .ok()?;
    flock(&file, FlockOperation::NonBlockingLockExclusive).ok()?;
    Some(file)
}

/// Waits until something accepts on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// uid and gid of a system user from /etc/passwd.
pub fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// Makes `cmd` run as `user` when we are root (servers that refuse root).
pub fn as_user(cmd: &mut Command, user: &str) {
    if is_root() {
        let (uid, gid) = system_user(user)
            .unwrap_or_else(|| panic!("system user {user} missing: run scripts/install-deps.sh"));
        cmd.uid(uid).gid(gid).env("HOME", "/tmp");
    }
}

/// Gives `path` (recursively) to `user` when we are root.
pub fn chown_to(path: &Path, user: &str) {
    if !is_root() {
        return;
    }
    let (uid, gid) = system_user(user).unwrap();
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// SIGKILLs `pid` and all its descendants (found through /proc), so
/// session processes that left the process group die too.
pub fn kill_tree(pid: u32) {
    signal_tree(pid, "-9");
}

/// Sends `signal` (as `kill` takes it: `-9`, `-STOP`) to `pid` and all its
/// descendants.
pub fn signal_tree(pid: u32, signal: &str) {
    if pid == 0 {
        return;
    }
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Field 4, after the parenthesised command name.
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok());
        if let Some(ppid) = ppid {
            parents.push((child, ppid));
        }
    }
    let mut doomed = vec![pid];
    let mut i = 0;
    while i < doomed.len() {
        let p = doomed[i];
        doomed.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    for p in doomed {
        let _ = Command::new("kill")
            .arg(signal)
            .arg(p.to_string())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Guard(pub Option<Child>);

impl Guard {
    /// Sends a signal by number (e.g. 15 for SIGTERM).
    pub fn signal(&self, sig: i32) {
        if let Some(child) = &self.0 {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(child.id().to_string())
                .status();
        }
    }

    /// Waits up to `timeout` for exit; the exit code, if it exited.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.0.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.0 = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or(0)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A host-wide lock for tests that install the system's `mftd` package
/// (dpkg -i, then purge): two of them at once, from this suite or another
/// checkout's, would purge each other's install. The lock is a directory
/// holding the owner's pid; one whose owner is gone is taken over.
pub struct SystemPackageLock(std::path::PathBuf);

impl SystemPackageLock {
    /// Waits (up to 15 minutes) for the lock and takes it.
    pub fn acquire() -> SystemPackageLock {
        let dir = Path::new("/run/lock/mftd-system-package");
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            if std::fs::create_dir(dir).is_ok() {
                std::fs::write(dir.join("pid"), std::process::id().to_string()).unwrap();
                return SystemPackageLock(dir.to_owned());
            }
            let owner: Option<u32> = std::fs::read_to_string(dir.join("pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok());
            let alive = owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            let age = std::fs::metadata(dir)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            // No pid yet: its owner is between mkdir and write (give it 5 s).
            if (owner.is_some() && !alive) || (owner.is_none() && age > Duration::from_secs(5)) {
                let _ = std::fs::remove_dir_all(dir);
                continue;
            }
            assert!(
                Instant::now() < deadline,
                "{} is held by pid {owner:?}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for SystemPackageLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
