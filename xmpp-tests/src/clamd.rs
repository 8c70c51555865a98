//! A real ClamAV `clamd` for the content-policy tests: started in the
//! foreground with a configuration of its own (a Unix socket in a temporary
//! directory, or TCP on 127.0.0.1) and a signature database this harness
//! writes — one SHA-256 hash signature of the EICAR test file, nothing
//! downloaded. Start-up checks clamd loaded exactly that one signature.
//! Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::process::{free_port, wait_for_port, Guard};

/// The EICAR anti-virus test file (68 bytes): harmless, and what every
/// scanner is expected to flag.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// The name our test database gives it; clamd appends `.UNOFFICIAL` to
/// signatures that are not from ClamAV's signed databases.
pub const EICAR_SIGNATURE: &str = "Mftd-Test-Eicar.UNOFFICIAL";

/// Where the test clamd listens.
enum Listen {
    Unix(PathBuf),
    Tcp(u16),
}

/// A running clamd.
pub struct Clamd {
    guard: Guard,
    dir: tempfile::TempDir,
    listen: Listen,
}

fn clamd_binary() -> PathBuf {
    for p in ["/usr/sbin/clamd", "/usr/bin/clamd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("clamd missing: run scripts/install-deps.sh (Debian package clamav-daemon)")
}

impl Clamd {
    /// clamd on a Unix socket in its own directory.
    pub fn start() -> Clamd {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("clamd.sock");
        Clamd::launch(dir, Listen::Unix(socket))
    }

    /// clamd on TCP, 127.0.0.1 only (to put a forwarder in front of it).
    pub fn start_tcp() -> Clamd {
        let dir = tempfile::tempdir().unwrap();
        Clamd::launch(dir, Listen::Tcp(free_port()))
    }

    fn launch(dir: tempfile::TempDir, listen: Listen) -> Clamd {
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        // A .hsb line: SHA-256 hash, size, name.
        let hash = format!("{:x}", Sha256::digest(EICAR));
        let name = EICAR_SIGNATURE.trim_end_matches(".UNOFFICIAL");
        std::fs::write(
            db.join("mftd-test.hsb"),
            format!("{hash}:{}:{name}\n", EICAR.len()),
        )
        .unwrap();
        let listen_conf = match &listen {
            Listen::Unix(p) => format!("LocalSocket {}\n", p.display()),
            Listen::Tcp(port) => format!("TCPSocket {port}\nTCPAddr 127.0.0.1\n"),
        };
        let conf = dir.path().join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "{listen_conf}DatabaseDirectory {db}\nForeground yes\nLogFile {log}\nLogTime yes\n\
                 TemporaryDirectory {tmp}\nPidFile {pid}\nStreamMaxLength 64M\nMaxFileSize 64M\n\
                 MaxScanSize 64M\nSelfCheck 0\n",
                db = db.display(),
                log = dir.path().join("clamd.log").display(),
                tmp = dir.path().display(),
                pid = dir.path().join("clamd.pid").display(),
            ),
        )
        .unwrap();
        let child = Command::new(clamd_binary())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut clamd = Clamd {
            guard: Guard(Some(child)),
            dir,
            listen,
        };
        clamd.wait_listening();
        let log = clamd.log();
        assert!(
            log.contains("Loaded 1 signatures."),
            "clamd should load only the test database; log:\n{log}"
        );
        clamd
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let ok = match &self.listen {
            Listen::Unix(p) => loop {
                if std::os::unix::net::UnixStream::connect(p).is_ok() {
                    break true;
                }
                if Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(50));
            },
            Listen::Tcp(port) => wait_for_port(*port, Duration::from_secs(60)),
        };
        assert!(ok, "clamd did not start listening; log:\n{}", self.log());
    }

    /// The address for `scan.clamd`.
    pub fn addr(&self) -> String {
        match &self.listen {
            Listen::Unix(p) => format!("unix:{}", p.display()),
            Listen::Tcp(port) => format!("127.0.0.1:{port}"),
        }
    }

    /// The TCP port (a TCP clamd only).
    pub fn port(&self) -> u16 {
        match &self.listen {
            Listen::Tcp(port) => *port,
            Listen::Unix(_) => panic!("this clamd listens on a Unix socket"),
        }
    }

    /// Stops clamd (SIGTERM, then it is gone).
    pub fn stop(&mut self) {
        self.guard.signal(15);
        if self.guard.wait_exit(Duration::from_secs(10)).is_none() {
            self.guard = Guard(None); // Drop kills it.
        }
    }

    /// Starts it again with the same configuration and database.
    pub fn restart(&mut self) {
        let child = Command::new(clamd_binary())
            .arg("-c")
            .arg(self.dir.path().join("clamd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.guard = Guard(Some(child));
        self.wait_listening();
    }

    /// clamd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default()
    }
}
