//! PostgreSQL connections and the embedded, versioned schema migrations.
//!
//! Migrations are SQL files compiled into the binary, applied in order in one
//! transaction each under an advisory lock (so nodes starting together do
//! not race), and recorded in `mftd_schema_migrations`.

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

use crate::db_tls::RustlsConnector;

/// Where the database is: a connection string, and for `sslmode=require`
/// the CA certificates that sign the server's certificate.
#[derive(Clone, Default)]
pub struct DbConfig {
    /// `postgresql://…` or `host=… user=…`.
    pub url: String,
    /// PEM CA file for TLS.
    pub ca_file: Option<PathBuf>,
}

impl From<&String> for DbConfig {
    fn from(url: &String) -> Self {
        DbConfig::from(url.as_str())
    }
}

impl From<&str> for DbConfig {
    fn from(url: &str) -> Self {
        DbConfig {
            url: url.to_owned(),
            ca_file: None,
        }
    }
}

pub use crate::error::DbError;

/// The migrations, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "transfer log",
        include_str!("../migrations/0001_transfer_log.sql"),
    ),
    (
        2,
        "slot reservations",
        include_str!("../migrations/0002_slot_reservations.sql"),
    ),
    (3, "shares", include_str!("../migrations/0003_shares.sql")),
    (
        4,
        "purposes and removals",
        include_str!("../migrations/0004_retention.sql"),
    ),
    (
        5,
        "used slots",
        include_str!("../migrations/0005_used_slots.sql"),
    ),
    (
        6,
        "share times",
        include_str!("../migrations/0006_share_times.sql"),
    ),
    (
        7,
        "slot rates",
        include_str!("../migrations/0007_slot_rates.sql"),
    ),
    (
        8,
        "legal holds and audited removals",
        include_str!("../migrations/0008_compliance.sql"),
    ),
    (
        9,
        "scan verdicts",
        include_str!("../migrations/0009_scan_verdicts.sql"),
    ),
];

/// Connects with a timeout and drives the connection on a task: over TLS
/// (rustls) when the connection string says `sslmode=require`, in clear
/// otherwise.
pub async fn connect(db: &DbConfig, timeout: Duration) -> Result<Client, DbError> {
    let mut config = parse_url(&db.url)?;
    let target = describe(&config);
    let timed_out = |_| {
        DbError::Unavailable(format!(
            "connecting to {target} timed out after {timeout:?}"
        ))
    };
    let refused = |e: tokio_postgres::Error| {
        DbError::Unavailable(format!(
            "cannot connect to {target}: {}",
            crate::error::chain(&e)
        ))
    };
    let client = if config.get_ssl_mode() == SslMode::Require {
        let ca = db.ca_file.as_ref().ok_or_else(|| {
            DbError::Config("sslmode=require needs [database] ca_file (the CA that signed the server's certificate)".into())
        })?;
        let tls = RustlsConnector::from_ca_file(ca)?;
        let (client, connection) = tokio::time::timeout(timeout, config.connect(tls))
            .await
            .map_err(timed_out)?
            .map_err(refused)?;
        drive(connection);
        client
    } else {
        // Without TLS asked for, do not try it.
        config.ssl_mode(SslMode::Disable);
        let (client, connection) = tokio::time::timeout(timeout, config.connect(NoTls))
            .await
            .map_err(timed_out)?
            .map_err(refused)?;
        drive(connection);
        client
    };
    Ok(client)
}

/// Parses a connection string. libpq's `sslmode=verify-full` and
/// `verify-ca` are taken as `require`, which here already verifies the
/// server's certificate against `ca_file` and its host name (rustls) — what
/// libpq calls verify-full.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, DbError> {
    url.replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require")
        .parse()
        .map_err(|e| DbError::Config(format!("not a PostgreSQL connection string: {e}")))
}

/// Whether the connection string asks for TLS.
pub fn wants_tls(url: &str) -> bool {
    parse_url(url).is_ok_and(|c| c.get_ssl_mode() == SslMode::Require)
}

/// "host:port as user, database db" for messages (never the password).
fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let host = if hosts.is_empty() {
        "localhost".to_owned()
    } else {
        hosts.join(",")
    };
    let port = if ports.is_empty() {
        "5432".to_owned()
    } else {
        ports.join(",")
    };
    format!(
        "PostgreSQL at {host}:{port} as user {:?}, database {:?}",
        config.get_user().unwrap_or("(none)"),
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("(default)")
    )
}

/// Runs a connection's I/O on its own task until it closes.
fn drive(
    connection: impl std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
) {
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
}

/// The highest applied migration (0 for an empty database).
pub async fn schema_version(client: &Client) -> Result<i32, DbError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('mftd_schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| DbError::query("reading the schema version", e))?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM mftd_schema_migrations",
            &[],
        )
        .await
        .map_err(|e| DbError::query("reading the schema version", e))?;
    Ok(row.get(0))
}

/// Applies every migration not applied yet; returns the versions applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, DbError> {
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        let tx = client
            .transaction()
            .await
            .map_err(|e| DbError::query("starting a migration", e))?;
        // One node migrates at a time; the others wait, then see it done.
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(7314601); \
             CREATE TABLE IF NOT EXISTS mftd_schema_migrations (\
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(|e| DbError::query("locking the schema", e))?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM mftd_schema_migrations WHERE version = $1",
                &[version],
            )
            .await
            .map_err(|e| DbError::query("reading applied migrations", e))?
            .is_some();
        if !done {
            tx.batch_execute(sql)
                .await
                .map_err(|e| DbError::query(format!("applying migration {version} ({name})"), e))?;
            tx.execute(
                "INSERT INTO mftd_schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await
            .map_err(|e| DbError::query("recording a migration", e))?;
            applied.push(*version);
        }
        tx.commit()
            .await
            .map_err(|e| DbError::query(format!("committing migration {version}"), e))?;
    }
    Ok(applied)
}
