//! A real PostgreSQL (Debian package) for the transfer log: `initdb` as the
//! postgres user in a temp dir, the server on 127.0.0.1 with a private
//! socket directory, trust authentication on loopback, database `mftd`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{as_user, chown_to, free_port, wait_for_port, Guard};

/// A psql session kept open by [`Postgres::session`]; ends when dropped.
pub struct Session {
    _stdin: std::process::ChildStdin,
    _guard: Guard,
}

impl Session {
    /// Ends the session (releasing its locks and rolling back).
    pub fn end(self) {
        drop(self);
    }
}

/// A running PostgreSQL.
pub struct Postgres {
    guard: Guard,
    dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
    tls: bool,
}

/// The directory of the newest installed PostgreSQL's programs.
pub(crate) fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run scripts/install-deps.sh")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server binaries under /usr/lib/postgresql")
}

impl Postgres {
    /// initdb, start, create the `mftd` database.
    pub fn start() -> Postgres {
        Self::start_inner(false)
    }

    /// The same with TLS on, using a certificate for 127.0.0.1 signed by a
    /// fresh CA ([`ca_file`](Self::ca_file)).
    pub fn start_with_tls() -> Postgres {
        Self::start_inner(true)
    }

    /// The CA certificate that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn make_certs(&self) {
        let d = self.dir.path();
        let run = |args: &str| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mftd-test-ca -keyout ca.key -out ca.pem 2>/dev/null");
        run("openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null");
        run("printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf && \
             openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out server.pem 2>/dev/null");
        run("chmod 600 server.key");
    }

    /// A temp dir the postgres user may enter, with the socket directory.
    pub(crate) fn server_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut perms = std::fs::metadata(dir.path()).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(dir.path(), perms).unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        dir
    }

    /// Starts a server on the `data` directory already made in `dir` (a
    /// base backup, for a standby) on `port`.
    pub(crate) fn start_in(dir: tempfile::TempDir, port: u16) -> Postgres {
        let mut pg = Postgres {
            guard: Guard(None),
            dir,
            port,
            tls: false,
        };
        pg.launch();
        pg
    }

    fn start_inner(tls: bool) -> Postgres {
        let mut pg = Postgres {
            guard: Guard(None),
            dir: Self::server_dir(),
            port: free_port(),
            tls,
        };
        if tls {
            pg.make_certs();
        }
        chown_to(pg.dir.path(), "postgres");
        let mut initdb = Command::new(bin_dir().join("initdb"));
        initdb
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(pg.data_dir())
            .stdout(Stdio::null());
        as_user(&mut initdb, "postgres");
        let out = initdb.output().expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.launch();
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "postgres",
                "-c",
                "CREATE DATABASE mftd",
            ])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "create database: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .unwrap();
        let mut cmd = Command::new(bin_dir().join("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-k",
            ])
            .arg(self.socket_dir())
            .args(["-c", "synchronous_commit=on", "-c", "fsync=on"])
            // The defaults, said here: a standby can be made of any server
            // (crate::pg_replica), and a standby serves reads.
            .args(["-c", "wal_level=replica", "-c", "hot_standby=on"]);
        if self.tls {
            let d = self.dir.path();
            cmd.args(["-c", "ssl=on", "-c"])
                .arg(format!("ssl_cert_file={}", d.join("server.pem").display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", d.join("server.key").display()));
        }
        cmd.stdout(Stdio::null()).stderr(log);
        as_user(&mut cmd, "postgres");
        self.guard = Guard(Some(cmd.spawn().expect("postgres")));
        assert!(
            wait_for_port(self.port, Duration::from_secs(30)),
            "PostgreSQL did not start: {}",
            self.log()
        );
        // The port opens slightly before connections are accepted.
        for _ in 0..50 {
            let ok = Command::new("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The connection URL for mftd.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/mftd", self.port)
    }

    /// Kills the server, as a crash would.
    pub fn stop(&mut self) {
        crate::process::kill_tree(self.guard.pid());
        self.guard = Guard(None);
        // A killed postmaster leaves its pid file; the next start copes.
    }

    /// Stops every process of the server (SIGSTOP), as a hung machine:
    /// its port still takes TCP connections, nothing answers on them.
    /// Killed as usual by [`stop`](Self::stop) or on drop.
    pub fn freeze(&self) {
        crate::process::signal_tree(self.guard.pid(), "-STOP");
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.data_dir().join("postmaster.pid"));
        self.launch();
    }

    /// Polls `sql` until its trimmed output is `want` (rows committed after
    /// the events that cause them) or 10 s pass; returns the last output.
    pub fn psql_eventually(&self, sql: &str, want: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got = self.psql(sql).trim().to_owned();
            if got == want || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Runs SQL through psql and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// Runs SQL through psql: its output, or the server's error text.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "mftd",
                "-At",
                "-F",
                "|",
                "-c",
                sql,
            ])
            .args(["-v", "ON_ERROR_STOP=1"])
            .output()
            .expect("psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Opens a superuser session and runs `sql` in it (e.g. `BEGIN; LOCK
    /// TABLE …`); the session stays open, holding what it took, until the
    /// returned guard is dropped.
    pub fn session(&self, sql: &str) -> Session {
        use std::io::Write;
        let mut child = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "mftd",
                "-q",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("psql");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
        Session {
            _stdin: stdin,
            _guard: Guard(Some(child)),
        }
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        crate::process::kill_tree(self.guard.pid());
    }
}

/// The bytes of a psql `encode(…, 'base64')` column (psql wraps its lines).
pub fn base64_bytes(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    let joined: String = text.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(joined)
        .unwrap()
}
