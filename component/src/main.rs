//! The `mftd` command: run the service, check a configuration, manage the
//! node's SSH key, and check the file server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mft_component::config::Settings;
use mft_component::keys::{self, KeyType};
use mft_component::{fileserver, units};

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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn load(config: &Path) -> anyhow::Result<Settings> {
    Ok(Settings::load(config)?)
}

fn sftp_settings(config: &Path) -> anyhow::Result<(Settings, mft_storage::sftp::SftpSettings)> {
    let settings = load(config)?;
    settings.check_files(config)?;
    let sftp = settings
        .sftp()
        .ok_or_else(|| anyhow::anyhow!("{}: store.kind is not \"sftp\"", config.display()))?;
    Ok((settings, sftp))
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig { config } => {
            let s = load(&config)?;
            s.check_files(&config)?;
            println!(
                "{}: OK (component {}, HTTP {} as {}, store {:?}, max file size {} bytes)",
                config.display(),
                s.config.xmpp.component_jid,
                s.config.http.listen,
                s.config.http.public_url,
                s.config.store.kind,
                s.max_file_size
            );
        }
        Command::Run { config } => {
            init_tracing();
            let settings = load(&config)?;
            settings.check_files(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(mft_component::app::run(settings))?;
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
                    let key = s.config.store.sftp.as_ref().map(|x| x.private_key.clone());
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
                    .config
                    .store
                    .sftp
                    .map(|s| s.private_key)
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
            let alarm = settings
                .config
                .store
                .sftp
                .as_ref()
                .map_or(10.0, |s| s.alarm_free_percent);
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
