//! A replicated PostgreSQL: a primary ([`Postgres::start`]) and a hot
//! standby streaming from it (`pg_basebackup -R`, as the postgres user, into
//! a temp dir), both on 127.0.0.1; the primary can be killed as a crash
//! would (SIGKILL) and the standby promoted, as a failover does. Both are
//! stopped when the pair is dropped.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres::{bin_dir, Postgres};
use crate::process::{as_user, chown_to, free_port};

/// A primary and its streaming standby.
pub struct Replicated {
    /// The server that takes writes first.
    pub primary: Postgres,
    /// Its hot standby, streaming; the primary after [`promote`](Self::promote).
    pub standby: Postgres,
}

impl Replicated {
    /// Starts a primary with its `mftd` database and a standby of it, and
    /// waits until the standby streams. With `synchronous`, the primary
    /// waits for the standby to flush every commit
    /// (`synchronous_standby_names = '*'`) before it acknowledges it.
    pub fn start(synchronous: bool) -> Replicated {
        let primary = Postgres::start();
        // Replication from loopback (initdb's trust default says the same;
        // said here so the set-up does not hang on a default).
        let hba = primary.data_dir().join("pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).unwrap();
        rules.push_str("\nhost replication all 127.0.0.1/32 trust\n");
        std::fs::write(&hba, rules).unwrap();
        primary.psql("SELECT pg_reload_conf()");

        let dir = Postgres::server_dir();
        chown_to(dir.path(), "postgres");
        let mut backup = Command::new(bin_dir().join("pg_basebackup"));
        backup
            .args(["-h", "127.0.0.1", "-p", &primary.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ])
            .arg("-D")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null());
        as_user(&mut backup, "postgres");
        let out = backup.output().expect("pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let standby = Postgres::start_in(dir, free_port());
        let pair = Replicated { primary, standby };
        pair.wait_streaming();
        if synchronous {
            pair.primary
                .psql("ALTER SYSTEM SET synchronous_standby_names = '*'");
            pair.primary.psql("SELECT pg_reload_conf()");
            let state = pair
                .primary
                .psql_eventually("SELECT sync_state FROM pg_stat_replication", "sync");
            assert_eq!(state, "sync", "the standby did not become synchronous");
        }
        pair
    }

    /// The URL naming both servers, primary first, that accepts only the
    /// one taking writes.
    pub fn url(&self) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/mftd?target_session_attrs=read-write",
            self.primary.port, self.standby.port
        )
    }

    /// Waits until the primary sees the standby streaming and the standby
    /// says it is in recovery.
    fn wait_streaming(&self) {
        let streaming = self.primary.psql_eventually(
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            "1",
        );
        assert_eq!(
            streaming,
            "1",
            "the standby does not stream; its log:\n{}",
            self.standby.log()
        );
        assert_eq!(
            self.standby.psql("SELECT pg_is_in_recovery()").trim(),
            "t",
            "the standby is not in recovery"
        );
    }

    /// Waits until the standby has replayed everything the primary wrote
    /// so far.
    pub fn wait_caught_up(&self) {
        let lsn = self.primary.psql("SELECT pg_current_wal_lsn()");
        let sql = format!(
            "SELECT pg_last_wal_replay_lsn() >= '{}'::pg_lsn",
            lsn.trim()
        );
        assert_eq!(self.standby.psql_eventually(&sql, "t"), "t");
    }

    /// Cuts the standby off the primary (its `primary_conninfo` emptied and
    /// reloaded, so its WAL receiver stops) and waits until the primary
    /// streams to no one: what the primary commits from now on is on the
    /// primary alone, as with a standby lagging behind when the primary dies.
    pub fn detach_standby(&self) {
        self.standby.psql("ALTER SYSTEM SET primary_conninfo = ''");
        self.standby.psql("SELECT pg_reload_conf()");
        let streaming = self
            .primary
            .psql_eventually("SELECT count(*) FROM pg_stat_replication", "0");
        assert_eq!(streaming, "0", "the standby still streams");
    }

    /// SIGKILLs the primary's postmaster and every backend of it, as a
    /// machine dying would.
    pub fn kill_primary(&mut self) {
        self.primary.stop();
    }

    /// Promotes the standby and waits until it takes writes; returns how
    /// long promotion took.
    pub fn promote(&self) -> Duration {
        let started = Instant::now();
        let out = self.standby.psql("SELECT pg_promote(true, 60)");
        assert_eq!(out.trim(), "t", "promotion failed: {}", self.standby.log());
        assert_eq!(
            self.standby
                .psql_eventually("SELECT pg_is_in_recovery()", "f"),
            "f",
            "the promoted standby is still in recovery"
        );
        started.elapsed()
    }
}
