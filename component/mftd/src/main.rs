//! The `mftd` command: run the service, check a configuration, manage the
//! node's SSH key, check the file server, and the operator's commands on a
//! running node (`status`) and on the transfer log (`log`, `verify`,
//! `purge`, `hold`, `erase`, `export`). Every subcommand's `--help` ends with examples; `mftd man`
//! (hidden, for packaging) writes the manual pages from this definition.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod app;
mod checkpoint_key;
mod config;
mod erase;
mod export;
mod fileserver;
mod hold;
mod keys;
mod log_chain_check;
mod log_command;
mod log_lifecycle;
mod manpages;
mod monitor;
mod node_state;
mod operator;
mod pace;
mod purge;
mod rescan;
mod status;
mod systemd;
mod textfile;
mod verify;

use config::Settings;
use keys::KeyType;

/// mftd: XEP-0363 HTTP File Upload as an XMPP component, with managed file
/// transfer storage and logging.
#[derive(Parser)]
#[command(name = "mftd", version, after_help = TOP_EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const TOP_EXAMPLES: &str = "\
Examples:
  mftd check-config                       check /etc/mftd/mftd.toml
  mftd status                             is the running node ready?
  mftd log --since 24h                    who sent and fetched what today
  mftd help log                           every option of one command

Every command reads /etc/mftd/mftd.toml unless given --config PATH.";

/// The configuration file every command reads unless given `--config`.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/mftd/mftd.toml";

#[derive(Subcommand)]
enum Command {
    /// Run the component and its HTTP endpoint.
    #[command(
        after_help = "Example:\n  mftd run --config /etc/mftd/mftd.toml   (systemd runs this; stop with SIGTERM, reload TLS with SIGHUP)"
    )]
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a configuration file and exit (0 = valid).
    #[command(
        after_help = "Examples:\n  sudo -u mftd mftd check-config --config /etc/mftd/mftd.toml\n  mftd check-config --for alice@example.org   the limits alice gets, and from which group"
    )]
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Also print the limits that apply to this JID and the
        /// `[[limits.group]]` that matched it.
        #[arg(long = "for", value_name = "JID")]
        for_jid: Option<String>,
    },
    /// The node's SSH key pair for the file server.
    #[command(
        after_help = "Examples:\n  mftd keys generate                 create store.sftp.private_key, print its public line\n  mftd keys show --key /etc/mftd/node_1.key"
    )]
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Check the SFTP file server.
    #[command(
        after_help = "Examples:\n  mftd fileserver status\n  mftd fileserver transferspeed --size 1GiB"
    )]
    Fileserver {
        #[command(subcommand)]
        action: FileserverCommand,
    },
    /// The transfer log database's schema.
    #[command(
        after_help = "Examples:\n  mftd db status\n  mftd db migrate --config /etc/mftd/mftd.toml"
    )]
    Db {
        #[command(subcommand)]
        action: DbCommand,
    },
    /// Is the running node ready? Link, file server, transfer log,
    /// transfers in flight (asks its [admin] listener).
    Status(status::StatusArgs),
    /// Query the transfer log: who sent and fetched what, newest first.
    Log(Box<log_command::LogArgs>),
    /// Check that the store and the transfer log agree (for cron).
    Verify(verify::VerifyArgs),
    /// Remove old files from the store; their log history stays.
    Purge(purge::PurgeArgs),
    /// Erase a person's files (GDPR erasure); the log keeps every
    /// transfer, marked erased. Legal holds win.
    Erase(erase::EraseArgs),
    /// Write an e-discovery export: files, log rows, shares, removals,
    /// holds and a manifest with SHA-256 of everything.
    Export(Box<export::ExportArgs>),
    /// Legal holds: files a hold covers are kept from every removal.
    #[command(
        after_help = "Examples:\n  mftd hold add --user alice@example.test --reason 'matter 2026-17'\n  mftd hold list\n  mftd hold check 20261126-08-im-Qx3…"
    )]
    Hold {
        #[command(subcommand)]
        action: hold::HoldCommand,
    },
    /// Write the manual pages (mftd.1, mftd-<command>.1) to a directory.
    #[command(hide = true)]
    Man {
        /// The directory (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Where a database-only command connects: the configuration's
/// `[database]`, or a URL file alone (the owner's for `db migrate`, an
/// auditor's for `log`), which needs no access to the rest of the
/// configuration.
#[derive(clap::Args)]
struct DbArgs {
    /// The configuration file (its [database] section).
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Connect with the PostgreSQL URL in this file instead of the
    /// configuration's [database] (the configuration is not read).
    #[arg(long, value_name = "FILE")]
    database_url_file: Option<PathBuf>,
    /// With --database-url-file: the CA that signed the server's
    /// certificate, for sslmode=require.
    #[arg(long, value_name = "FILE", requires = "database_url_file")]
    database_ca_file: Option<PathBuf>,
}

impl DbArgs {
    fn resolve(&self) -> anyhow::Result<mft_storage::db::DbConfig> {
        let Some(path) = &self.database_url_file else {
            return Ok(database_url(&self.config)?.1);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--database-url-file {}: {e}", path.display()))?;
        let url = text.trim_end_matches(['\r', '\n']);
        if url.trim().is_empty() {
            anyhow::bail!(
                "--database-url-file {} is empty: write the PostgreSQL URL into it",
                path.display()
            );
        }
        mft_storage::db::parse_url(url)
            .map_err(|e| anyhow::anyhow!("--database-url-file {}: {e}", path.display()))?;
        Ok(mft_storage::db::DbConfig {
            url: url.to_owned(),
            ca_file: self.database_ca_file.clone(),
            statement_timeout: None,
        })
    }
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply pending migrations (as the role that owns the schema) and
    /// grant the roles mftd runs as and auditors their privileges.
    #[command(
        after_help = "Example:\n  mftd db migrate --config /etc/mftd/mftd.toml --grant-to mftd --auditor mftd_audit   (mftd run applies them at start too)"
    )]
    Migrate {
        #[command(flatten)]
        db: DbArgs,
        /// The role mftd runs as: may read, append and finish log rows, never
        /// change the schema or delete log rows (remembered for later runs).
        #[arg(long, value_name = "ROLE")]
        grant_to: Vec<String>,
        /// A read-only role for `mftd log` and compliance queries
        /// (remembered for later runs).
        #[arg(long, value_name = "ROLE")]
        auditor: Vec<String>,
    },
    /// Show the schema version and row counts.
    #[command(after_help = "Example:\n  mftd db status --config /etc/mftd/mftd.toml")]
    Status {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Drop the transfer log's month partitions older than [retention] log
    /// (as the role that owns the schema); months holding rows of files or
    /// people under a legal hold are kept; each drop is recorded in
    /// log_drops.
    #[command(
        after_help = "Examples:\n  mftd db prune-log --database-url-file /root/mftd-owner.url --config /etc/mftd/mftd.toml --dry-run\n  mftd db prune-log --database-url-file /root/mftd-owner.url --older-than 7y --by 'records: j.smith' --checkpoint-key /etc/mftd/log-checkpoint.key\n\nRun it monthly (cron or a systemd timer). mftd itself never drops: its role may not. With the checkpoint key, each recorded chain run is signed, and `mftd verify --log` names drop records nobody with the key wrote."
    )]
    PruneLog {
        #[command(flatten)]
        db: DbArgs,
        /// Drop months that ended longer ago than this (`7y`, `2555d`);
        /// default: the configuration's [retention] log.
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// List what would be dropped and kept; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Who runs it, for the record (default: the login user).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// Sign each recorded chain run with this key (default: the
        /// configuration's [log] checkpoint_key_file, when the
        /// configuration file exists).
        #[arg(long, value_name = "FILE")]
        checkpoint_key: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create the key pair and print the public line for authorized_keys.
    #[command(
        after_help = "Examples:\n  mftd keys generate                               store.sftp.private_key of /etc/mftd/mftd.toml\n  mftd keys generate --key /etc/mftd/node_2.key --node node_2 --type rsa"
    )]
    Generate {
        /// The configuration file (key path: store.sftp.private_key, comment: node.name).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Write the key here instead of store.sftp.private_key.
        #[arg(long, value_name = "PATH", alias = "out")]
        key: Option<PathBuf>,
        /// Node name for the key comment when --key is given without a config.
        #[arg(long)]
        node: Option<String>,
        /// Key type.
        #[arg(long = "type", value_enum, default_value = "ed25519")]
        key_type: KeyType,
        /// Replace an existing key (the file server must then be given the new line).
        #[arg(long)]
        force: bool,
    },
    /// Print the public line of the existing key.
    #[command(
        after_help = "Examples:\n  mftd keys show\n  mftd keys show --key /etc/mftd/node_1.key >> ~mftfiles/.ssh/authorized_keys"
    )]
    Show {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Read this key instead of store.sftp.private_key.
        #[arg(long, value_name = "PATH")]
        key: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum FileserverCommand {
    /// Reachable, host key, authentication, writable node directory, free space.
    #[command(
        after_help = "Example:\n  mftd fileserver status --config /etc/mftd/mftd.toml   (exit 1 when a check fails)"
    )]
    Status {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Write and read back a test file and print MB/s each way.
    #[command(
        after_help = "Example:\n  mftd fileserver transferspeed --size 1GiB   (exit 1 below the 60 MB/s the link must exceed)"
    )]
    Transferspeed {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Test file size (e.g. 256MiB, 1GB).
        #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = mft_common::units::parse_size)]
        size: u64,
    },
}

/// Sets up mftd's own log on stderr: `RUST_LOG` wins over `[log] level`;
/// `[log] format = "json"` writes one JSON object per line with the same
/// fields as the text lines.
fn init_tracing(log: &config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::try_new(log.level.as_deref().unwrap_or("info"))
            .unwrap_or_else(|e| {
                eprintln!("log.level is not a valid filter ({e}); using info");
                tracing_subscriber::EnvFilter::new("info")
            })
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    match log.format {
        config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        config::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

fn load(config: &Path) -> anyhow::Result<Settings> {
    Ok(Settings::load(config)?)
}

fn sftp_settings(config: &Path) -> anyhow::Result<(Settings, mft_storage::sftp::SftpSettings)> {
    let settings = load(config)?;
    settings.check_files(config)?;
    let sftp = settings
        .store
        .sftp()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("{}: store.kind is not \"sftp\"", config.display()))?;
    Ok((settings, sftp))
}

fn database_url(config: &Path) -> anyhow::Result<(Settings, mft_storage::db::DbConfig)> {
    let settings = load(config)?;
    let db = settings
        .database
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{}: no [database] section", config.display()))?;
    Ok((settings, db))
}

/// The transfer log and the store, for operator commands that use both.
async fn log_and_store(
    settings: &Settings,
    url: &mft_storage::db::DbConfig,
) -> anyhow::Result<(mft_storage::transfer_log::TransferLog, mft_storage::Store)> {
    let log = mft_storage::transfer_log::TransferLog::start(
        url.clone(),
        std::time::Duration::from_secs(10),
    )
    .await?;
    Ok((log, app::open_store(settings)?))
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig { config, for_jid } => {
            let for_jid = for_jid
                .map(|text| {
                    mft_common::jid::Jid::parse(&text).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--for {text:?} is not a JID: write alice@example.org (or with /resource)"
                        )
                    })
                })
                .transpose()?;
            let s = load(&config)?;
            s.check_files(&config)?;
            if s.http.public_url.starts_with("http://") {
                eprintln!(
                    "warning: http.public_url {} is plain HTTP: XEP-0363 wants HTTPS towards clients (tokens travel in headers); put a TLS-terminating proxy in front and give its https:// URL, or set http.tls_cert/tls_key",
                    s.http.public_url
                );
            }
            if s.database.is_none() {
                eprintln!("warning: no [database]: uploads and downloads will not be logged");
            }
            println!(
                "{}: OK (component {}, HTTP {} as {}, store {:?}, max file size {} bytes)",
                config.display(),
                s.link.jid,
                s.http.listen,
                s.http.public_url,
                s.store.kind(),
                s.max_file_size
            );
            content_policy_report(&s);
            for (group, pattern) in s.groups.unreachable(&s.allowed_domains) {
                eprintln!(
                    "warning: limits.group {group:?} matches {pattern}, whose domain is not in limits.allowed_domains ({}): its users are refused before any group applies; add the domain to allowed_domains or remove the pattern",
                    s.allowed_domains.join(", ")
                );
            }
            if let Some(jid) = for_jid {
                if mft_component::groups::domain_allowed(&s.allowed_domains, &jid) {
                    print!(
                        "{}",
                        s.groups
                            .explain(&jid, &s.default_limits, s.database.is_some())
                    );
                } else {
                    println!(
                        "limits for {jid}: none: its domain {:?} is not in limits.allowed_domains ({}), so every slot request from it is refused (forbidden){}",
                        jid.domain(),
                        s.allowed_domains.join(", "),
                        s.groups
                            .for_jid(&jid)
                            .map(|m| format!(
                                "; group {:?} (matched by {} {:?}) does not apply",
                                m.group.name, m.pattern.kind, m.pattern.key
                            ))
                            .unwrap_or_default()
                    );
                }
            }
        }
        Command::Run { config } => {
            let settings = load(&config)?;
            init_tracing(&settings.log);
            settings.check_files(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let listeners = app::Listeners::bind(&settings).await?;
                app::run(settings, listeners, app::stop_signal(), || {}).await
            })?;
        }
        Command::Keys {
            action:
                KeysCommand::Generate {
                    config,
                    key,
                    node,
                    key_type,
                    force,
                },
        } => {
            let (path, node) = match (key, node) {
                (Some(key), Some(node)) => (key, node),
                (key, node) => {
                    let s = load(&config)?;
                    let configured = s.store.sftp().map(|x| x.private_key.clone());
                    let path = key.or(configured).ok_or_else(|| {
                        anyhow::anyhow!(
                            "no key path: set store.sftp.private_key in {} or pass --key",
                            config.display()
                        )
                    })?;
                    (path, node.unwrap_or_else(|| s.node_name.clone()))
                }
            };
            let line = keys::generate(&path, &node, key_type, force)?;
            eprintln!("wrote {} (mode 0600); add this line to the file server user's ~/.ssh/authorized_keys:", path.display());
            println!("{line}");
        }
        Command::Keys {
            action: KeysCommand::Show { config, key },
        } => {
            let path = match key {
                Some(k) => k,
                None => load(&config)?
                    .store
                    .sftp()
                    .map(|s| s.private_key.clone())
                    .ok_or_else(|| {
                        anyhow::anyhow!("store.sftp.private_key is not set in {}", config.display())
                    })?,
            };
            println!("{}", keys::public_line(&path)?);
        }
        Command::Fileserver {
            action: FileserverCommand::Status { config },
        } => {
            let settings = load(&config)?;
            settings.check_files(&config)?;
            let (checks, expected) = match &settings.store {
                config::StoreSettings::S3 { s3 } => (fileserver::s3_status(s3), 2),
                _ => {
                    let (settings, sftp) = sftp_settings(&config)?;
                    let alarm = settings.store.space().alarm_free_percent;
                    (fileserver::status(&sftp, alarm), 5)
                }
            };
            let mut failed = false;
            for c in &checks {
                match &c.result {
                    Ok(detail) => println!("{:<24} ok    {detail}", c.name),
                    Err(why) => {
                        failed = true;
                        println!("{:<24} FAIL  {why}", c.name);
                    }
                }
            }
            if failed || checks.len() < expected {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Fileserver {
            action: FileserverCommand::Transferspeed { config, size },
        } => {
            let (_, sftp) = sftp_settings(&config)?;
            let (write, read) = fileserver::transfer_speed(&sftp, size)?;
            println!(
                "write {write:.1} MB/s, read {read:.1} MB/s ({size} bytes to {}:{})",
                sftp.host, sftp.port
            );
            let min = fileserver::MIN_SPEED_MB_S;
            if write < min || read < min {
                println!("WARNING: below the {min} MB/s the file server link must exceed");
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Db {
            action:
                DbCommand::Migrate {
                    db,
                    grant_to,
                    auditor,
                },
        } => {
            let url = db.resolve()?;
            let roles: Vec<(String, mft_storage::db::RoleKind)> = grant_to
                .into_iter()
                .map(|r| (r, mft_storage::db::RoleKind::Runtime))
                .chain(
                    auditor
                        .into_iter()
                        .map(|r| (r, mft_storage::db::RoleKind::Auditor)),
                )
                .collect();
            println!("{}", block_on(admin::migrate(&url, &roles))?);
        }
        Command::Db {
            action: DbCommand::Status { db },
        } => {
            println!("{}", block_on(admin::status(&db.resolve()?))?);
        }
        Command::Db {
            action:
                DbCommand::PruneLog {
                    db,
                    older_than,
                    dry_run,
                    by,
                    checkpoint_key,
                },
        } => {
            let text = match older_than {
                Some(text) => text,
                None => match load(&db.config)?.retention.log {
                    Some(age) => humantime::format_duration(age).to_string(),
                    None => {
                        println!(
                            "[retention] log is \"forever\" in {} (the default): nothing to drop",
                            db.config.display()
                        );
                        return Ok(ExitCode::SUCCESS);
                    }
                },
            };
            let older_than = mft_common::units::parse_duration(&text)
                .map_err(|e| anyhow::anyhow!("--older-than {text:?}: {e}"))?;
            let req = mft_storage::log_partitions::PruneRequest {
                older_than,
                older_than_text: text,
                by: by.unwrap_or_else(operator::login_user),
                dry_run,
            };
            let signer = log_lifecycle::drop_signer(checkpoint_key.as_deref(), &db.config)?;
            println!(
                "{}",
                block_on(log_lifecycle::prune(&db.resolve()?, &req, signer.as_ref()))?
            );
        }
        Command::Status(args) => return Ok(status::run(&args).into()),
        Command::Log(args) => log_command::run(*args, Path::new(DEFAULT_CONFIG))?,
        Command::Verify(args) => return Ok(verify::run(args)),
        Command::Man { out } => {
            let written = manpages::write(&out)?;
            println!("wrote {written} manual pages to {}", out.display());
        }
        Command::Purge(args) => return purge::run(args),
        Command::Hold { action } => return hold::run(action),
        Command::Erase(args) => return erase::run(args),
        Command::Export(args) => return export::run(*args),
    }
    Ok(ExitCode::SUCCESS)
}

/// Caps glibc's malloc arenas at two per core (its default is eight per
/// core). Each thread that meets contention gets an arena of its own, and
/// memory freed in one arena is not reused by threads of another: the
/// blocking threads that open SFTP sessions in a burst left buffers spread
/// over sixteen arenas on two cores, about 35 MiB more resident memory
/// with 1024 stalled transfers (docs/performance.md). An operator's own
/// `MALLOC_ARENA_MAX` is left in force.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn cap_malloc_arenas() {
    extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    /// glibc's `M_ARENA_MAX` (malloc.h).
    const M_ARENA_MAX: std::ffi::c_int = -8;
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let arenas = std::ffi::c_int::try_from(2 * cores).unwrap_or(std::ffi::c_int::MAX);
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread exists.
    unsafe {
        mallopt(M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn cap_malloc_arenas() {}

fn main() -> ExitCode {
    cap_malloc_arenas();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config`'s lines about `[scan]` and the media types: what is in
/// force, and whether clamd answers now (a warning, not an error: clamd may
/// start after mftd).
fn content_policy_report(s: &config::Settings) {
    if !s.types.is_open() {
        let list = |l: &[mft_upload_http::type_policy::TypePattern]| {
            l.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "media types: allowed [{}], refused [{}]",
            list(&s.types.allowed),
            list(&s.types.refused)
        );
    }
    let Some(scan) = &s.scan else {
        return;
    };
    println!(
        "malware scan: clamd at {}, fail {:?}, infected files {:?}, max_size {} bytes (above: {:?})",
        scan.clamd.addr(),
        scan.fail,
        scan.quarantine,
        scan.max_size,
        scan.above_max_size
    );
    let answer = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| mft_common::error::chain(&e))
        .and_then(|rt| {
            rt.block_on(async {
                scan.clamd
                    .ping()
                    .await
                    .map_err(|e| mft_common::error::chain(&e))
            })
        });
    if let Err(why) = answer {
        eprintln!("warning: {why}");
    }
}
