//! PostgreSQL connections and the embedded, versioned schema migrations.
//!
//! Migrations are SQL files compiled into the binary, applied in order in one
//! transaction each under an advisory lock (so nodes starting together do
//! not race), and recorded in `mftd_schema_migrations`.
//!
//! Least privilege: an owner role runs the migrations and grants the role
//! mftd runs as exactly what [`RUNTIME_PRIVILEGES`] lists (no DDL; the log
//! tables are only appended to: no `UPDATE`, `DELETE` or `TRUNCATE`) and
//! auditors `SELECT` on every table.
//! The grantees are remembered in `mftd_roles`, so every later migration run
//! grants on what it created.

use std::path::PathBuf;
use std::time::Duration;

use mft_common::error::Chain;
use tokio_postgres::config::{SslMode, TargetSessionAttrs};
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
    /// The longest one statement may run (or wait for a lock) before the
    /// server cancels it; `None` keeps the server's setting (the owner's
    /// migrations and auditors' reports run without a limit). The running
    /// service sets it, so a database that cannot write (a full disk, a
    /// held lock) fails a transfer instead of holding it forever.
    pub statement_timeout: Option<Duration>,
}

/// The URL may hold a password: it is never printed.
impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
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
            statement_timeout: None,
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
    (9, "roles", include_str!("../migrations/0009_roles.sql")),
    (
        10,
        "scan verdicts",
        include_str!("../migrations/0010_scan_verdicts.sql"),
    ),
    (
        11,
        "append-only, hash-chained log",
        include_str!("../migrations/0011_log_chain.sql"),
    ),
    (
        12,
        "audited erasure",
        include_str!("../migrations/0012_erasure.sql"),
    ),
    (
        13,
        "rescan verdicts and quarantine",
        include_str!("../migrations/0013_rescan.sql"),
    ),
    (
        14,
        "users' own deletions",
        include_str!("../migrations/0014_user_deletions.sql"),
    ),
    (
        16,
        "monthly log partitions and recorded drops",
        include_str!("../migrations/0016_log_partitions.sql"),
    ),
    (
        17,
        "signed drop records",
        include_str!("../migrations/0017_signed_drops.sql"),
    ),
];

/// The schema version this build needs.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// What the role mftd runs as may do, table by table: what the service and
/// its operator commands (`mftd purge`, `mftd verify`) execute, and nothing
/// more. The log's rows are appended, never changed: a download's end and
/// the first share's recipient are amendment rows (migration 11).
pub const RUNTIME_PRIVILEGES: &[(&str, &str)] = &[
    ("mftd_schema_migrations", "SELECT"),
    ("mftd_roles", "SELECT"),
    // The log is appended to, never rewritten: what is learnt later is an
    // amendment row; `aft_log` is the view readers query.
    ("aft_log", "SELECT"),
    ("aft_log_rows", "SELECT, INSERT"),
    ("aft_log_amends", "SELECT, INSERT"),
    ("log_checkpoints", "SELECT, INSERT"),
    // `mftd verify --rescan` records a verdict and quarantines.
    (
        "files",
        "SELECT, INSERT, UPDATE (to_jid, chat_type, deleted, quarantined, quarantined_to, \
         scan_verdict, scan_detail, scan_source, scanned_at)",
    ),
    ("slot_reservations", "SELECT, INSERT, DELETE"),
    ("shares", "SELECT, INSERT"),
    ("removals", "SELECT, INSERT"),
    ("used_slots", "SELECT, INSERT, DELETE"),
    (
        "slot_rates",
        "SELECT, INSERT, UPDATE (tokens, updated, taken), DELETE",
    ),
    // Legal holds: `mftd hold add|remove` (an operator command with the
    // service's database role) places and releases; sweeps read them.
    (
        "holds",
        "SELECT, INSERT, UPDATE (released_by, released_at, release_reason)",
    ),
    ("hold_events", "SELECT, INSERT"),
    // Audited erasure (`mftd erase`): append-only, like removals.
    ("erasures", "SELECT, INSERT"),
    ("erasure_steps", "SELECT, INSERT"),
    ("aft_log_erasures", "SELECT"),
    // Users deleting their own uploads over ad-hoc commands: append-only.
    ("user_deletions", "SELECT, INSERT"),
    // The record of dropped log partitions (`mftd db prune-log`, run by
    // the owner): read by `mftd verify --log`, never written by this role.
    // The partitions themselves need no grant: rows reach them through
    // their table. `mftd_log_partitions_ahead()` (SECURITY DEFINER, as
    // every function EXECUTE for PUBLIC) creates next months' partitions.
    ("log_drops", "SELECT"),
    ("log_drop_chains", "SELECT"),
];

/// Sequences behind the runtime role's inserts (`nextval` needs `USAGE`).
pub const RUNTIME_SEQUENCES: &[&str] = &[
    "aft_log_seq",
    "aft_log_amends_amend_id_seq",
    "shares_share_id_seq",
    "removals_removal_id_seq",
    "holds_hold_id_seq",
    "hold_events_event_id_seq",
    "erasures_erasure_id_seq",
    "erasure_steps_step_id_seq",
    "user_deletions_step_id_seq",
];

/// Who a grant is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    /// The role mftd runs as: [`RUNTIME_PRIVILEGES`].
    Runtime,
    /// Read-only: `SELECT` on every table of the schema (`mftd log`,
    /// compliance queries).
    Auditor,
}

impl RoleKind {
    fn as_str(self) -> &'static str {
        match self {
            RoleKind::Runtime => "runtime",
            RoleKind::Auditor => "auditor",
        }
    }
}

/// `name` as an SQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether the connected role may apply migrations: `CREATE` on its
/// current schema and, once the schema exists, membership in the role that
/// owns it. A role without these rights never attempts DDL.
pub async fn may_migrate(client: &Client) -> Result<bool, DbError> {
    let row = client
        .query_one(
            "SELECT current_schema() IS NOT NULL \
                    AND has_schema_privilege(current_schema(), 'CREATE') \
                    AND coalesce((SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c \
                                  WHERE c.oid = to_regclass('mftd_schema_migrations')), true)",
            &[],
        )
        .await
        .map_err(|e| DbError::query("reading the role's rights on the schema", e))?;
    Ok(row.get(0))
}

/// At start: applies pending migrations when the connected role may (the
/// role owns the schema, as in a one-role set-up), and otherwise refuses to
/// start on an older schema without attempting any DDL. Returns the
/// versions applied.
pub async fn migrate_if_permitted(client: &mut Client) -> Result<Vec<i32>, DbError> {
    let version = schema_version(client).await?;
    let latest = latest_version();
    if version >= latest {
        return Ok(Vec::new());
    }
    if !may_migrate(client).await? {
        return Err(DbError::Schema(format!(
            "the database is at schema version {version} and this mftd needs {latest}; \
             the role it connects as may not change the schema (as intended for least privilege): \
             run `mftd db migrate` as the owner role first"
        )));
    }
    migrate(client).await
}

/// Remembers `roles` in `mftd_roles` and grants every remembered role its
/// privileges on the current schema's mftd objects (idempotent; run by the
/// owner after the migrations). Returns the roles granted to.
pub async fn grant(
    client: &mut Client,
    roles: &[(String, RoleKind)],
) -> Result<Vec<(String, RoleKind)>, DbError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| DbError::query("starting the grants", e))?;
    for (role, kind) in roles {
        tx.execute(
            "INSERT INTO mftd_roles (role, kind) VALUES ($1, $2) \
             ON CONFLICT (role) DO UPDATE SET kind = EXCLUDED.kind, granted_at = now()",
            &[role, &kind.as_str()],
        )
        .await
        .map_err(|e| DbError::query(format!("remembering role {role}"), e))?;
    }
    let remembered: Vec<(String, RoleKind)> = tx
        .query("SELECT role::text, kind FROM mftd_roles ORDER BY role", &[])
        .await
        .map_err(|e| DbError::query("reading mftd_roles", e))?
        .iter()
        .map(|r| {
            let kind: String = r.get(1);
            let kind = if kind == "auditor" {
                RoleKind::Auditor
            } else {
                RoleKind::Runtime
            };
            (r.get::<_, String>(0), kind)
        })
        .collect();
    let schema: Option<String> = tx
        .query_one("SELECT current_schema()::text", &[])
        .await
        .map_err(|e| DbError::query("reading the current schema", e))?
        .get(0);
    let schema = schema.ok_or_else(|| {
        DbError::Schema("no current schema: check the owner role's search_path".into())
    })?;
    let tables: Vec<&str> = RUNTIME_PRIVILEGES.iter().map(|(t, _)| *t).collect();
    for (role, kind) in &remembered {
        let who = quote_ident(role);
        let mut sql = format!("GRANT USAGE ON SCHEMA {} TO {who};\n", quote_ident(&schema));
        match kind {
            RoleKind::Runtime => {
                for (table, privileges) in RUNTIME_PRIVILEGES {
                    sql.push_str(&format!("GRANT {privileges} ON {table} TO {who};\n"));
                }
                sql.push_str(&format!(
                    "GRANT USAGE ON SEQUENCE {} TO {who};\n",
                    RUNTIME_SEQUENCES.join(", ")
                ));
            }
            RoleKind::Auditor => {
                sql.push_str(&format!(
                    "GRANT SELECT ON {} TO {who};\n",
                    tables.join(", ")
                ));
            }
        }
        tx.batch_execute(&sql).await.map_err(|e| {
            DbError::query(
                format!("granting {} privileges to {role}", kind.as_str()),
                e,
            )
        })?;
    }
    tx.commit()
        .await
        .map_err(|e| DbError::query("committing the grants", e))?;
    Ok(remembered)
}

/// Connects with a timeout and drives the connection on a task: over TLS
/// (rustls) when the connection string says `sslmode=require`, in clear
/// otherwise.
///
/// With several hosts (`postgresql://a:5432,b:5432/db`, a replicated
/// database) they are tried in order, each within `timeout` from its TCP
/// connect to its answer (a hung server that accepts connections but never
/// answers does not hold up the next host); unless the URL says otherwise
/// (`target_session_attrs=any`) only a host that takes writes is accepted,
/// a standby is skipped, and the error names every host with its reason.
pub async fn connect(db: &DbConfig, timeout: Duration) -> Result<Client, DbError> {
    let mut config = parse_url(&db.url)?;
    if let Some(limit) = db.statement_timeout {
        limit_statements(&mut config, limit);
    }
    if config.get_ssl_mode() != SslMode::Require {
        // Without TLS asked for, do not try it.
        config.ssl_mode(SslMode::Disable);
    }
    let tls = match config.get_ssl_mode() {
        SslMode::Require => {
            let ca = db.ca_file.as_ref().ok_or_else(|| {
                DbError::config("sslmode=require needs [database] ca_file (the CA that signed the server's certificate)")
            })?;
            Some(RustlsConnector::from_ca_file(ca)?)
        }
        _ => None,
    };
    let target = describe(&config);
    if let Some(hosts) = tcp_hosts(&config) {
        if !db.url.contains("target_session_attrs") {
            config.target_session_attrs(TargetSessionAttrs::ReadWrite);
        }
        let each = config.get_connect_timeout().copied().unwrap_or(timeout);
        return connect_each(&config, &hosts, tls, each, &target).await;
    }
    let timed_out = |_| {
        DbError::unavailable(format!(
            "connecting to {target} timed out after {timeout:?}"
        ))
    };
    let refused = |e: tokio_postgres::Error| {
        DbError::unavailable_because(format!("cannot connect to {target}"), e)
    };
    let client = if let Some(tls) = tls {
        let (client, connection) = tokio::time::timeout(timeout, config.connect(tls))
            .await
            .map_err(timed_out)?
            .map_err(refused)?;
        drive(connection);
        client
    } else {
        let (client, connection) = tokio::time::timeout(timeout, config.connect(NoTls))
            .await
            .map_err(timed_out)?
            .map_err(refused)?;
        drive(connection);
        client
    };
    Ok(client)
}

/// The (host, port) pairs to try one by one: when the URL names several
/// hosts by name or address (no Unix sockets, no `hostaddr`, no random
/// order, which the driver's own connect handles).
fn tcp_hosts(config: &tokio_postgres::Config) -> Option<Vec<(String, u16)>> {
    use tokio_postgres::config::{Host, LoadBalanceHosts};
    let hosts = config.get_hosts();
    if hosts.len() < 2
        || !config.get_hostaddrs().is_empty()
        || config.get_load_balance_hosts() == LoadBalanceHosts::Random
    {
        return None;
    }
    let ports = config.get_ports();
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Host::Tcp(name) => Some((
                name.clone(),
                ports.get(i).or(ports.first()).copied().unwrap_or(5432),
            )),
            Host::Unix(_) => None,
        })
        .collect()
}

/// Tries `hosts` in order, each within `each`; the first that answers (and
/// takes writes, when the URL asks for that) wins.
async fn connect_each(
    config: &tokio_postgres::Config,
    hosts: &[(String, u16)],
    tls: Option<RustlsConnector>,
    each: Duration,
    target: &str,
) -> Result<Client, DbError> {
    let mut why = Vec::new();
    for (host, port) in hosts {
        let attempt = match tls.clone() {
            Some(tls) => tokio::time::timeout(each, connect_host(config, host, *port, tls)).await,
            None => tokio::time::timeout(each, connect_host(config, host, *port, NoTls)).await,
        };
        match attempt {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => why.push(format!("{host}:{port}: {e}")),
            Err(_) => why.push(format!("{host}:{port}: no answer within {each:?}")),
        }
    }
    let wanted = if config.get_target_session_attrs() == TargetSessionAttrs::ReadWrite {
        "each host in turn, for one that takes writes: none is up and primary; \
         during a failover, until the new primary is promoted"
    } else {
        "each host in turn: none answered"
    };
    Err(DbError::unavailable(format!(
        "cannot connect to {target} ({wanted}): {}",
        why.join("; ")
    )))
}

/// One host: TCP, the start-up (TLS as the URL says), and the check that it
/// takes writes when `target_session_attrs=read-write`.
async fn connect_host<T>(
    config: &tokio_postgres::Config,
    host: &str,
    port: u16,
    mut tls: T,
) -> Result<Client, String>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio::net::TcpStream>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    T::Error: std::fmt::Display,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio::net::TcpStream>>::Future: Send,
{
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let connector = tls
        .make_tls_connect(host)
        .map_err(|e| format!("TLS: {e}"))?;
    let (client, connection) = config
        .connect_raw(stream, connector)
        .await
        .map_err(|e| Chain(&e).to_string())?;
    drive(connection);
    if config.get_target_session_attrs() == TargetSessionAttrs::ReadWrite {
        let read_only = client
            .simple_query("SHOW transaction_read_only")
            .await
            .map_err(|e| Chain(&e).to_string())?
            .into_iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "on"),
                _ => None,
            });
        if read_only != Some(false) {
            return Err("read-only (a standby, or in recovery): it does not take writes".into());
        }
    }
    Ok(client)
}

/// Adds `statement_timeout` (and, four times as long, the limit on a
/// transaction left idle) to the session options the URL may already carry.
fn limit_statements(config: &mut tokio_postgres::Config, limit: Duration) {
    let ms = limit.as_millis().max(1);
    let ours = format!(
        "-c statement_timeout={ms} -c idle_in_transaction_session_timeout={}",
        ms.saturating_mul(4)
    );
    let options = match config.get_options() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
        _ => ours,
    };
    config.options(&options);
}

/// Parses a connection string. libpq's `sslmode=verify-full` and
/// `verify-ca` are taken as `require`, which here already verifies the
/// server's certificate against `ca_file` and its host name (rustls) — what
/// libpq calls verify-full.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, DbError> {
    url.replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require")
        .parse()
        .map_err(|e| DbError::config_because("not a PostgreSQL connection string", e))
}

/// Whether the connection string asks for TLS.
pub fn wants_tls(url: &str) -> bool {
    parse_url(url).is_ok_and(|c| c.get_ssl_mode() == SslMode::Require)
}

/// "host:port as user, database db" for messages (never the password);
/// every host with its port when there are several.
fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if hosts.is_empty() {
        hosts = config
            .get_hostaddrs()
            .iter()
            .map(ToString::to_string)
            .collect();
    }
    if hosts.is_empty() {
        hosts.push("localhost".to_owned());
    }
    let ports = config.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let at: Vec<String> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| format!("{h}:{}", port(i)))
        .collect();
    format!(
        "PostgreSQL at {} as user {:?}, database {:?}",
        at.join(","),
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
            tracing::debug!(error = %Chain(&e), "database connection closed");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_list_of_network_hosts_is_tried_host_by_host() {
        let list = parse_url("postgresql://u@db1:5433,db2/x").unwrap();
        assert_eq!(
            tcp_hosts(&list),
            Some(vec![("db1".to_owned(), 5433), ("db2".to_owned(), 5432)])
        );
        let one_port = parse_url("host=db1,db2 port=6000 user=u").unwrap();
        assert_eq!(
            tcp_hosts(&one_port),
            Some(vec![("db1".to_owned(), 6000), ("db2".to_owned(), 6000)])
        );
        for single in [
            "postgresql://u@db1/x",
            "host=/run/postgresql,db2 user=u",
            "host=db1,db2 hostaddr=10.0.0.1,10.0.0.2 user=u",
            "postgresql://u@db1,db2/x?load_balance_hosts=random",
        ] {
            assert_eq!(tcp_hosts(&parse_url(single).unwrap()), None, "{single}");
        }
    }

    #[test]
    fn every_host_is_named_with_its_port() {
        let config = parse_url(
            "postgresql://mftd:secret@db1:5433,db2:5434/audit?target_session_attrs=read-write",
        )
        .unwrap();
        let text = describe(&config);
        assert_eq!(
            text,
            "PostgreSQL at db1:5433,db2:5434 as user \"mftd\", database \"audit\""
        );
        assert!(!text.contains("secret"));
        let one_port = parse_url("host=db1,db2 port=6000 user=u").unwrap();
        assert_eq!(
            describe(&one_port),
            "PostgreSQL at db1:6000,db2:6000 as user \"u\", database \"u\""
        );
        assert_eq!(
            describe(&parse_url("postgresql:///x").unwrap()),
            "PostgreSQL at localhost:5432 as user \"(none)\", database \"x\""
        );
    }
}
