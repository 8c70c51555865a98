//! The `mftd` command: run the service, check a configuration.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mft_component::config::Settings;

/// mftd: XEP-0363 HTTP File Upload as an XMPP component, with managed file
/// transfer storage and logging.
#[derive(Parser)]
#[command(name = "mftd", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the component and its HTTP endpoint.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/mftd/mftd.toml")]
        config: PathBuf,
    },
    /// Check a configuration file and exit (0 = valid).
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, default_value = "/etc/mftd/mftd.toml")]
        config: PathBuf,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Settings::load(&config) {
            Ok(s) => {
                println!(
                    "{}: OK (component {}, HTTP {} as {}, max file size {} bytes)",
                    config.display(),
                    s.config.xmpp.component_jid,
                    s.config.http.listen,
                    s.config.http.public_url,
                    s.max_file_size
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            init_tracing();
            let settings = match Settings::load(&config) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(mft_component::app::run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
