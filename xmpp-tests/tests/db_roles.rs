//! PostgreSQL least privilege against a real PostgreSQL: an owner role runs
//! `mftd db migrate --grant-to … --auditor …`; mftd runs as the runtime
//! role (uploads, downloads and a purge through Prosody and the real
//! client work) and that role can neither change the schema nor delete or
//! rewrite log rows; the auditor runs `mftd log`, `mftd db status` and the
//! queries of docs/operations.md and docs/compliance.md and can change
//! nothing; and a runtime role facing an older schema refuses to start
//! without attempting any DDL.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xmpp_tests::client;
use xmpp_tests::mftd::{binary, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

const OWNER: &str = "mftd_owner";
const RUNTIME: &str = "mftd_rt";
const AUDITOR: &str = "mftd_audit";

/// The three roles and the database as docs/install.md sets them up
/// (trust authentication on the harness's loopback server, so no passwords).
fn roles(pg: &Postgres) {
    for role in [OWNER, RUNTIME, AUDITOR] {
        pg.psql(&format!("CREATE ROLE {role} LOGIN"));
    }
    pg.psql(&format!("ALTER DATABASE mftd OWNER TO {OWNER}"));
    pg.psql("REVOKE ALL ON DATABASE mftd FROM PUBLIC");
    pg.psql(&format!(
        "GRANT CONNECT ON DATABASE mftd TO {RUNTIME}, {AUDITOR}"
    ));
    pg.psql("REVOKE ALL ON SCHEMA public FROM PUBLIC");
}

fn url(pg: &Postgres, role: &str) -> String {
    url_db(pg, role, "mftd")
}

fn url_db(pg: &Postgres, role: &str, db: &str) -> String {
    format!("postgresql://{role}@127.0.0.1:{}/{db}", pg.port)
}

/// A URL file for `--database-url-file`.
fn url_file(dir: &std::path::Path, pg: &Postgres, role: &str) -> String {
    let path = dir.join(format!("{role}.url"));
    std::fs::write(&path, format!("{}\n", url(pg, role))).unwrap();
    path.display().to_string()
}

/// `psql` as `role`: (succeeded, stdout + stderr).
fn psql_as(pg: &Postgres, role: &str, sql: &str) -> (bool, String) {
    psql_in(pg, role, "mftd", sql)
}

/// `psql` as `role` in database `db`.
fn psql_in(pg: &Postgres, role: &str, db: &str, sql: &str) -> (bool, String) {
    let out = Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(url_db(pg, role, db))
        .args(["-c", sql])
        .output()
        .unwrap();
    xmpp_tests::process::outcome(&out)
}

fn refused(pg: &Postgres, role: &str, sql: &str) {
    let (ok, out) = psql_as(pg, role, sql);
    assert!(
        !ok && (out.contains("permission denied") || out.contains("must be owner")),
        "{role} may run {sql:?}: {out}"
    );
}

fn mftd_cmd(args: &[&str]) -> (bool, String) {
    let out = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    xmpp_tests::process::outcome(&out)
}

/// The `sql` blocks of docs/operations.md and docs/compliance.md: the
/// queries an auditor runs.
fn documented_queries() -> Vec<String> {
    let mut queries = sql_blocks("operations.md");
    queries.extend(sql_blocks("compliance.md"));
    queries
}

/// A script through psql's standard input as `role`, with `res` set (the
/// documented queries use `:'res'`).
fn psql_script_as(pg: &Postgres, role: &str, sql: &str, res: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-v"])
        .arg(format!("res={res}"))
        .arg("-d")
        .arg(url(pg, role))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    xmpp_tests::process::outcome(&out)
}

/// What `grantee` may do in `db`'s public schema, as one sorted line.
fn privileges(pg: &Postgres, db: &str, grantee: &str) -> String {
    let (ok, out) = psql_in(
        pg,
        "postgres",
        db,
        &format!(
            "SELECT string_agg(x, ' ' ORDER BY x) FROM ( \
               SELECT table_name || ':' || privilege_type AS x FROM information_schema.role_table_grants \
                 WHERE grantee = '{grantee}' AND table_schema = 'public' \
               UNION ALL SELECT table_name || '.' || column_name || ':UPDATE' FROM information_schema.column_privileges \
                 WHERE grantee = '{grantee}' AND table_schema = 'public' AND privilege_type = 'UPDATE' \
               UNION ALL SELECT object_name || ':' || privilege_type FROM information_schema.usage_privileges \
                 WHERE grantee = '{grantee}' AND object_schema = 'public' \
               UNION ALL SELECT 'schema:USAGE' WHERE has_schema_privilege('{grantee}', 'public', 'USAGE') \
             ) p"
        ),
    );
    assert!(ok, "{out}");
    out.trim().to_owned()
}

/// The `sql` blocks of a page in docs/.
fn sql_blocks(page: &str) -> Vec<String> {
    let page =
        std::fs::read_to_string(format!("{}/../docs/{page}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let mut queries = Vec::new();
    let mut block: Option<String> = None;
    for line in page.lines() {
        match &mut block {
            Some(_) if line.trim_end() == "```" => queries.push(block.take().unwrap()),
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None if line.trim_end() == "```sql" => block = Some(String::new()),
            None => {}
        }
    }
    queries
}

#[test]
fn the_runtime_role_transfers_without_ddl_or_deletes_and_the_auditor_only_reads() {
    let pg = Postgres::start();
    roles(&pg);
    let dir = tempfile::tempdir().unwrap();
    let owner_url = url_file(dir.path(), &pg, OWNER);
    let audit_url = url_file(dir.path(), &pg, AUDITOR);

    // Before any migration: mftd as the runtime role stops at start,
    // naming `mftd db migrate`, and sends no DDL (every statement of the
    // role is in the server's log).
    pg.psql(&format!("ALTER ROLE {RUNTIME} SET log_statement = 'all'"));
    let log_before = pg.log().len();
    let prosody = Prosody::start(ProsodyOptions::default());
    let mut opts = MftdOptions::for_prosody(&prosody);
    opts.extra = format!("[database]\nurl = \"{}\"\n", url(&pg, RUNTIME));
    let config = dir.path().join("early.toml");
    std::fs::write(
        &config,
        format!(
            "[xmpp]\ncomponent_jid = \"{}\"\nsecret = \"{}\"\nrouter = \"{}\"\n\
             [http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1/\"\n\
             token_key = \"test-token-key-0123456789abcdef\"\n\
             [node]\nname = \"node_1\"\n[store]\nkind = \"local\"\npath = \"{}\"\n{}",
            opts.component_jid,
            opts.secret,
            opts.router,
            dir.path().join("node_1").display(),
            opts.extra
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["60"])
        .arg(binary())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("mftd db migrate")
            && said.contains("schema version 0"),
        "{said}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "{said}");
    let statements = pg.log()[log_before..].to_owned();
    assert!(
        statements.contains("mftd_schema_migrations"),
        "the runtime role's statements are logged: {statements}"
    );
    for ddl in ["CREATE ", "ALTER ", "DROP ", "GRANT "] {
        assert!(
            !statements.contains(ddl),
            "the runtime role attempted {ddl}: {statements}"
        );
    }

    // The owner migrates and grants; the grantees are remembered.
    let (ok, out) = mftd_cmd(&[
        "db",
        "migrate",
        "--database-url-file",
        &owner_url,
        "--grant-to",
        RUNTIME,
        "--auditor",
        AUDITOR,
    ]);
    assert!(
        ok && out.contains("granted mftd_rt") && out.contains("granted mftd_audit"),
        "{out}"
    );
    let (ok, out) = mftd_cmd(&["db", "migrate", "--database-url-file", &owner_url]);
    assert!(
        ok && out.contains("up to date") && out.contains("granted mftd_rt"),
        "{out}"
    );
    // Every table of the schema is reachable by both roles: a migration
    // that adds a table without privileges fails here.
    // (`aft_log` is a view over the append-only tables since migration 11;
    // the record tables' month partitions of migration 16 are reached
    // through their table, and have no grants of their own.)
    let tables = pg.psql(
        "SELECT c.relname FROM pg_class c \
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v') \
           AND NOT c.relispartition ORDER BY 1",
    );
    let tables: Vec<&str> = tables.lines().collect();
    assert!(
        tables.contains(&"aft_log") && tables.len() >= 8,
        "{tables:?}"
    );
    for table in &tables {
        for role in [RUNTIME, AUDITOR] {
            let (ok, out) = psql_as(&pg, role, &format!("SELECT count(*) FROM {table}"));
            assert!(ok, "{role} cannot read {table}: {out}");
        }
    }

    // The runtime role makes next months' partitions through the owner's
    // function, and can neither drop a partition nor call the owner's
    // partition functions directly.
    let (ok, out) = psql_as(&pg, RUNTIME, "SELECT mftd_log_partitions_ahead()");
    assert!(ok, "{out}");
    refused(&pg, RUNTIME, "DROP TABLE aft_log_rows_pdefault");
    refused(
        &pg,
        RUNTIME,
        "SELECT mftd_log_partition_create('aft_log_rows', '2001-01-01')",
    );
    refused(&pg, AUDITOR, "DROP TABLE shares_pdefault");

    // mftd as the runtime role: an upload and downloads, rows committed.
    let mftd = Mftd::start(&opts);
    mftd.wait_connected(1);
    let file = dir.path().join("least-privilege.bin");
    std::fs::write(&file, vec![7u8; 200_000]).unwrap();
    let up = client::run(
        &prosody,
        "alice@example.test",
        "alice-pw",
        &[
            "upload",
            "--file",
            &file.display().to_string(),
            "--destination",
            "bob@example.test",
        ],
    );
    assert_eq!(up["put_status"], 201, "{up}");
    assert_eq!(up["get_status"], 200, "{up}");
    assert_eq!(
        pg.psql_eventually(
            "SELECT string_agg(method || ':' || http_status, ',' ORDER BY aft_index) FROM aft_log",
            "POST:201,GET:200"
        ),
        "POST:201,GET:200",
        "{}",
        mftd.log()
    );
    let resource = pg.psql("SELECT filename FROM aft_log WHERE method = 'POST'");
    let resource = resource.trim();

    // What the runtime role cannot do.
    for sql in [
        "ALTER TABLE aft_log ADD COLUMN note text",
        "DROP VIEW aft_log",
        "DROP TABLE aft_log_rows",
        "CREATE TABLE scratch (x int)",
        "DELETE FROM aft_log",
        "UPDATE aft_log SET jid = 'someone@else.test'",
        "UPDATE aft_log SET file_size = 0",
        // The log is append-only (migration 11): no rewrite of a row, an
        // amendment or a checkpoint.
        "UPDATE aft_log_rows SET http_status = 200",
        "UPDATE aft_log_rows SET to_jid = 'someone@else.test'",
        "DELETE FROM aft_log_rows",
        "TRUNCATE aft_log_rows",
        "UPDATE aft_log_amends SET bytes_sent = 0",
        "DELETE FROM aft_log_amends",
        "DELETE FROM log_checkpoints",
        "DELETE FROM files",
        "DELETE FROM shares",
        "DELETE FROM removals",
        "UPDATE files SET storage_path = '/elsewhere'",
        "INSERT INTO mftd_schema_migrations (version, name) VALUES (99, 'x')",
        "INSERT INTO mftd_roles (role, kind) VALUES ('intruder', 'runtime')",
    ] {
        refused(&pg, RUNTIME, sql);
    }
    // What it does need beyond transfers: legal holds placed and released
    // (`mftd hold`), and the sweeper's and `mftd purge`'s retirement
    // (UPDATE files.deleted, INSERT removals).
    let config = mftd.config_path().display().to_string();
    let (ok, out) = mftd_cmd(&[
        "hold",
        "add",
        "--config",
        &config,
        "--user",
        "bob@example.test",
        "--reason",
        "case 1",
    ]);
    assert!(ok, "{out}");
    let hold = pg.psql("SELECT max(hold_id) FROM holds");
    let (ok, out) = mftd_cmd(&[
        "hold",
        "remove",
        "--config",
        &config,
        hold.trim(),
        "--reason",
        "case closed",
    ]);
    assert!(ok, "{out}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM hold_events").trim(),
        "2",
        "placed and released"
    );
    let later = Command::new("date")
        .args(["-u", "-d", "+3 hours", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let later = String::from_utf8_lossy(&later.stdout).trim().to_owned();
    let (ok, out) = mftd_cmd(&[
        "purge",
        "--config",
        &mftd.config_path().display().to_string(),
        "--older-than",
        "1h",
        "--now",
        &later,
    ]);
    assert!(ok && out.contains("removed 1 files"), "{out}");
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM removals WHERE resource = '{resource}'"
        ))
        .trim(),
        "1"
    );

    // The auditor: mftd log and db status with nothing but its URL, the
    // documented compliance queries, and no change of any kind.
    let (ok, out) = mftd_cmd(&["log", "--database-url-file", &audit_url, "--format", "csv"]);
    assert!(
        ok && out.contains("least-privilege.bin") && out.contains(resource),
        "{out}"
    );
    let (ok, out) = mftd_cmd(&["db", "status", "--database-url-file", &audit_url]);
    assert!(ok && out.contains("aft_log rows: 2"), "{out}");
    let queries = documented_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    for sql in &queries {
        let (ok, out) = psql_script_as(&pg, AUDITOR, sql, resource);
        assert!(ok, "the auditor cannot run {sql}: {out}");
    }
    for sql in [
        "DELETE FROM aft_log",
        "TRUNCATE aft_log_rows",
        "UPDATE aft_log SET http_status = 200",
        "INSERT INTO aft_log (jid, to_jid, method, filename, real_filename, file_type, chat_type, \
         file_server, file_path, file_size, date_time) VALUES ('', '', 'POST', 'x', 'x', '', 'im', '', '', 0, now())",
        "UPDATE files SET deleted = now()",
        "DELETE FROM removals",
        "INSERT INTO holds (kind, subject, reason, placed_by) VALUES ('user', 'a@b', 'x', 'x')",
        "UPDATE holds SET released_at = now()",
        "CREATE TABLE scratch (x int)",
    ] {
        refused(&pg, AUDITOR, sql);
    }
    assert_eq!(
        pg.psql("SELECT count(*) FROM aft_log").trim(),
        "2",
        "nothing changed the log"
    );

    // docs/install.md lists the grants as SQL: run them in a second
    // database migrated without grants; the privileges must be exactly the
    // ones `mftd db migrate` gave.
    pg.psql(&format!("CREATE DATABASE listed OWNER {OWNER}"));
    pg.psql("CREATE ROLE mftd LOGIN");
    pg.psql("CREATE ROLE mftd_audit_listed LOGIN");
    psql_in(
        &pg,
        "postgres",
        "listed",
        "REVOKE ALL ON SCHEMA public FROM PUBLIC",
    );
    let listed_url = dir.path().join("listed.url");
    std::fs::write(&listed_url, url_db(&pg, OWNER, "listed")).unwrap();
    let (ok, out) = mftd_cmd(&[
        "db",
        "migrate",
        "--database-url-file",
        &listed_url.display().to_string(),
    ]);
    assert!(ok, "{out}");
    let grants: Vec<String> = sql_blocks("install.md")
        .into_iter()
        .filter(|b| b.contains("GRANT"))
        .collect();
    assert_eq!(grants.len(), 1, "one block of grants in docs/install.md");
    let (ok, out) = psql_in(
        &pg,
        OWNER,
        "listed",
        &grants[0].replace("mftd_audit", "mftd_audit_listed"),
    );
    assert!(ok, "docs/install.md's grants: {out}");
    let runtime = privileges(&pg, "mftd", RUNTIME);
    assert!(
        runtime.contains("aft_log_rows:INSERT")
            && runtime.contains("aft_log_amends:INSERT")
            && !runtime.contains("aft_log_rows:UPDATE")
            && !runtime.contains("aft_log_rows.http_status:UPDATE")
            && !runtime.contains("aft_log_rows:DELETE")
            && !runtime.contains("aft_log:INSERT")
            && runtime.contains("aft_log_seq:USAGE"),
        "{runtime}"
    );
    assert_eq!(
        privileges(&pg, "listed", "mftd"),
        runtime,
        "docs/install.md's grants for mftd differ from what mftd db migrate grants"
    );
    assert_eq!(
        privileges(&pg, "listed", "mftd_audit_listed"),
        privileges(&pg, "mftd", AUDITOR),
        "docs/install.md's grants for mftd_audit differ from what mftd db migrate grants"
    );
}
