//! The `mftd` command: run the service, check a configuration, manage the
//! node's SSH key, and check the file server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin;
mod app;
mod config;
mod fileserver;
mod hold;
mod keys;
mod monitor;
mod operator;
mod purge;
mod systemd;
mod units;
mod verify;

use config::Settings;
use keys::KeyType;

/// mftd: XEP-0363 HTTP File Upload as an XMPP component, with managed file
/// transfer storage and logging.
#[derive(Parser)]
#[command(name = "mftd", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const DEFAULT_CONFIG: &str = "/etc/mftd/mftd.toml";

#[derive(Subcommand)]
enum Command {
    /// Run the component and its HTTP endpoint.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a configuration file and exit (0 = valid).
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// The node's SSH key pair for the file server.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Check the SFTP file server.
    Fileserver {
        #[command(subcommand)]
        action: FileserverCommand,
    },
    /// The transfer log database's schema.
    Db {
        #[command(subcommand)]
        action: DbCommand,
    },
    /// Query the transfer log: who sent and fetched what.
    Log {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Uploader or downloader (bare or full JID).
        #[arg(long)]
        jid: Option<String>,
        /// Recipient (user, group chat or room).
        #[arg(long)]
        to: Option<String>,
        /// POST (uploads) or GET (downloads).
        #[arg(long)]
        method: Option<String>,
        /// im, groupchat or persistent.
        #[arg(long)]
        chat_type: Option<String>,
        /// From: an RFC 3339 time or a duration ago (24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Until: same forms.
        #[arg(long)]
        until: Option<String>,
        /// Most rows.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: admin::Format,
        /// List shares instead (who each file was sent to, as the router
        /// module reported): --jid is the sender, --to the recipient.
        #[arg(long)]
        shares: bool,
    },
    /// Check that the store and the transfer log agree (exit 1 if not).
    Verify {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Re-hash this many files against their logged SHA-256.
        #[arg(long, default_value_t = 10)]
        sample: usize,
        /// Re-hash every file (overrides --sample).
        #[arg(long)]
        all: bool,
        /// Read at most this many MB/s while re-hashing.
        #[arg(long, default_value_t = 50)]
        max_rate_mb: u64,
        /// Move stored files that have no log row to quarantine/.
        #[arg(long)]
        quarantine: bool,
        /// Also write the findings as Prometheus metrics to this file.
        #[arg(long)]
        textfile: Option<PathBuf>,
    },
    /// Remove old files from the store; their log history stays.
    Purge(purge::PurgeArgs),
    /// Legal holds: files a hold covers are kept from every removal.
    Hold {
        #[command(subcommand)]
        action: hold::HoldCommand,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply pending migrations.
    Migrate {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show the schema version and row counts.
    Status {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create the key pair and print the public line for authorized_keys.
    Generate {
        /// The configuration file (key path: store.sftp.private_key, comment: node.name).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Write the key here instead of store.sftp.private_key.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Node name for the key comment when --out is given without a config.
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
    Show {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Read this key instead of store.sftp.private_key.
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum FileserverCommand {
    /// Reachable, host key, authentication, writable node directory, free space.
    Status {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Write and read back a test file and print MB/s each way.
    Transferspeed {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Test file size.
        #[arg(long, default_value = "256MiB")]
        size: String,
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
        .database()
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
        Command::CheckConfig { config } => {
            let s = load(&config)?;
            s.check_files(&config)?;
            if s.config.http.public_url.starts_with("http://") {
                eprintln!(
                    "warning: http.public_url {} is plain HTTP: XEP-0363 wants HTTPS towards clients (tokens travel in headers); put a TLS-terminating proxy in front and give its https:// URL, or set http.tls_cert/tls_key",
                    s.config.http.public_url
                );
            }
            if s.config.database.is_none() {
                eprintln!("warning: no [database]: uploads and downloads will not be logged");
            }
            println!(
                "{}: OK (component {}, HTTP {} as {}, store {:?}, max file size {} bytes)",
                config.display(),
                s.config.xmpp.component_jid,
                s.config.http.listen,
                s.config.http.public_url,
                s.store.kind(),
                s.max_file_size
            );
            content_policy_report(&s);
        }
        Command::Run { config } => {
            let settings = load(&config)?;
            init_tracing(&settings.config.log);
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
                    out,
                    node,
                    key_type,
                    force,
                },
        } => {
            let (path, node) = match (out, node) {
                (Some(out), Some(node)) => (out, node),
                (out, node) => {
                    let s = load(&config)?;
                    let key = s.store.sftp().map(|x| x.private_key.clone());
                    let path = out.or(key).ok_or_else(|| {
                        anyhow::anyhow!(
                            "no key path: set store.sftp.private_key in {} or pass --out",
                            config.display()
                        )
                    })?;
                    (path, node.unwrap_or_else(|| s.config.node.name.clone()))
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
            let (settings, sftp) = sftp_settings(&config)?;
            let alarm = settings.store.space().alarm_free_percent;
            let checks = fileserver::status(&sftp, alarm);
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
            if failed || checks.len() < 5 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Fileserver {
            action: FileserverCommand::Transferspeed { config, size },
        } => {
            let (_, sftp) = sftp_settings(&config)?;
            let size = units::parse_size(&size).map_err(anyhow::Error::msg)?;
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
            action: DbCommand::Migrate { config },
        } => {
            let (_, url) = database_url(&config)?;
            println!("{}", block_on(admin::migrate(&url))?);
        }
        Command::Db {
            action: DbCommand::Status { config },
        } => {
            let (_, url) = database_url(&config)?;
            println!("{}", block_on(admin::status(&url))?);
        }
        Command::Log {
            config,
            jid,
            to,
            method,
            chat_type,
            since,
            until,
            limit,
            format,
            shares,
        } => {
            let (_, url) = database_url(&config)?;
            let filter = mft_storage::log_query::LogFilter {
                jid,
                to,
                method,
                chat_type,
                since: since.as_deref().map(admin::time_arg).transpose()?,
                until: until.as_deref().map(admin::time_arg).transpose()?,
                limit,
            };
            if shares {
                print!("{}", block_on(admin::query_shares(&url, &filter, format))?);
            } else {
                print!("{}", block_on(admin::query(&url, &filter, format))?);
            }
        }
        Command::Verify {
            config,
            sample,
            all,
            max_rate_mb,
            quarantine,
            textfile,
        } => {
            let (settings, url) = database_url(&config)?;
            let opts = verify::VerifyOptions {
                sample: if all { usize::MAX } else { sample },
                max_rate: max_rate_mb * 1_000_000,
                quarantine,
            };
            let node = settings.config.node.name.clone();
            let report = block_on(async {
                let (log, store) = log_and_store(&settings, &url).await?;
                verify::verify(&store, &log, &node, &opts).await
            })?;
            print!("{}", report.render());
            if let Some(path) = textfile {
                verify::write_textfile(&path, &report.metrics(&node))?;
            }
            if !report.is_clean() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Purge(args) => return purge::run(args),
        Command::Hold { action } => return hold::run(action),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
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
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(async { scan.clamd.ping().await.map_err(|e| e.to_string()) }));
    if let Err(why) = answer {
        eprintln!("warning: {why}");
    }
}
