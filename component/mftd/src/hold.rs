//! `mftd hold`: legal holds from the command line — place one on a user, a
//! room, a file or a content; lift it; list the holds; show their history;
//! ask whether one file is kept and why. The holds themselves (and every
//! query on them) live in `mft_storage::holds`; this module parses, names
//! the actor and renders.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mft_storage::db::{self, DbConfig};
use mft_storage::holds::{self, Hold, HoldEvent, HoldTarget};

use crate::DEFAULT_CONFIG;

/// `mftd hold …`
#[derive(clap::Subcommand)]
pub enum HoldCommand {
    /// Place a legal hold: the files it covers are kept from retention,
    /// ephemeral expiry and purge until the hold is removed.
    #[command(
        after_help = "Examples:\n  mftd hold add --user alice@example.test --reason 'matter 2026-17'\n  mftd hold add --room board@conference.example.test --reason 'audit Q4'"
    )]
    Add {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Why (a case or matter number); kept in the hold's history.
        #[arg(long)]
        reason: String,
        /// Who is responsible (default: the login user).
        #[arg(long)]
        by: Option<String>,
    },
    /// Lift a hold (recorded in its history; the hold itself stays on record).
    #[command(after_help = "Example:\n  mftd hold remove 3 --reason 'matter closed'")]
    Remove {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The hold's number (`mftd hold list`).
        id: i64,
        /// Why it is lifted.
        #[arg(long)]
        reason: String,
        /// Who is responsible (default: the login user).
        #[arg(long)]
        by: Option<String>,
    },
    /// The holds in force.
    #[command(after_help = "Example:\n  mftd hold list --all --json")]
    List {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Released holds too.
        #[arg(long)]
        all: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Every placing and lifting of holds: when, who, why.
    #[command(after_help = "Example:\n  mftd hold history --id 3")]
    History {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only this hold.
        #[arg(long)]
        id: Option<i64>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Whether one file is held, and by which holds (exit 0 when held, 1 when not).
    #[command(
        after_help = "Example:\n  mftd hold check https://upload.example.test/20261126-08-im-Qx3…/minutes.docx"
    )]
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The file's resource name or URL.
        file: String,
    },
}

/// What a hold covers: exactly one of these.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A user (bare JID): files they uploaded, were sent, or shared.
    #[arg(long)]
    user: Option<String>,
    /// A room (JID): files sent to it.
    #[arg(long)]
    room: Option<String>,
    /// One file: its resource name or its URL.
    #[arg(long)]
    file: Option<String>,
    /// Every file with this content (hex SHA-256), including later uploads.
    #[arg(long)]
    sha256: Option<String>,
    /// The file uploaded in this transfer log row (AFT_INDEX of its POST row).
    #[arg(long)]
    log_id: Option<i64>,
}

impl Target {
    async fn resolve(self, client: &tokio_postgres::Client) -> anyhow::Result<HoldTarget> {
        Ok(match self {
            Target { user: Some(u), .. } => HoldTarget::user(&u)?,
            Target { room: Some(r), .. } => HoldTarget::room(&r)?,
            Target { file: Some(f), .. } => HoldTarget::file(&f)?,
            Target {
                sha256: Some(h), ..
            } => HoldTarget::sha256(&h)?,
            Target {
                log_id: Some(id), ..
            } => HoldTarget::file(&holds::resource_of_log_row(client, id).await?)?,
            _ => anyhow::bail!("say what to hold: --user, --room, --file, --sha256 or --log-id"),
        })
    }
}

async fn connect(config: &std::path::Path) -> anyhow::Result<tokio_postgres::Client> {
    let (_, url): (_, DbConfig) = crate::database_url(config)?;
    Ok(db::connect(&url, Duration::from_secs(10)).await?)
}

/// Runs `mftd hold …`.
pub fn run(command: HoldCommand) -> anyhow::Result<ExitCode> {
    crate::block_on(async move {
        match command {
            HoldCommand::Add {
                config,
                target,
                reason,
                by,
            } => {
                let by = crate::operator::actor(by)?;
                let mut client = connect(&config).await?;
                let target = target.resolve(&client).await?;
                let placed = holds::place(&mut client, &target, &reason, &by).await?;
                println!(
                    "placed hold {} on {target} by {by}: it covers {} files now{}",
                    placed.hold.id,
                    placed.live_files,
                    if target.kind() == holds::HoldKind::File {
                        ""
                    } else {
                        " and every later one it names"
                    }
                );
            }
            HoldCommand::Remove {
                config,
                id,
                reason,
                by,
            } => {
                let by = crate::operator::actor(by)?;
                let mut client = connect(&config).await?;
                let hold = holds::release(&mut client, id, &reason, &by).await?;
                println!(
                    "released hold {id} on {} {} by {by}; its files follow the retention rules again",
                    hold.kind, hold.subject
                );
            }
            HoldCommand::List { config, all, json } => {
                let client = connect(&config).await?;
                print!("{}", render_holds(&holds::list(&client, all).await?, json));
            }
            HoldCommand::History { config, id, json } => {
                let client = connect(&config).await?;
                print!(
                    "{}",
                    render_events(&holds::history(&client, id).await?, json)
                );
            }
            HoldCommand::Check { config, file } => {
                let target = HoldTarget::file(&file)?;
                let client = connect(&config).await?;
                let on = holds::on_file(&client, target.subject()).await?;
                if on.is_empty() {
                    println!("{} is under no hold", target.subject());
                    return Ok(ExitCode::from(1));
                }
                println!("{} is held by:", target.subject());
                print!("{}", render_holds(&on, false));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn json_lines<T: serde::Serialize>(rows: &[T]) -> String {
    rows.iter()
        .filter_map(|r| serde_json::to_string(r).ok())
        .map(|l| l + "\n")
        .collect()
}

/// Aligned columns, or JSON lines.
fn render_holds(rows: &[Hold], json: bool) -> String {
    if json {
        return json_lines(rows);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<5} {:<7} {:<40} {:<21} {:<16} REASON",
        "ID", "KIND", "SUBJECT", "PLACED", "BY"
    );
    for h in rows {
        let _ = write!(
            out,
            "{:<5} {:<7} {:<40} {:<21} {:<16} {}",
            h.id, h.kind, h.subject, h.placed_at, h.placed_by, h.reason
        );
        if let Some(at) = &h.released_at {
            let _ = write!(
                out,
                " [released {at} by {}: {}]",
                h.released_by.as_deref().unwrap_or(""),
                h.release_reason.as_deref().unwrap_or("")
            );
        }
        out.push('\n');
    }
    out
}

fn render_events(rows: &[HoldEvent], json: bool) -> String {
    if json {
        return json_lines(rows);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<21} {:<7} {:<5} {:<7} {:<40} {:<16} REASON",
        "WHEN", "ACTION", "HOLD", "KIND", "SUBJECT", "BY"
    );
    for e in rows {
        let _ = writeln!(
            out,
            "{:<21} {:<7} {:<5} {:<7} {:<40} {:<16} {}",
            e.at, e.action, e.hold_id, e.kind, e.subject, e.actor, e.reason
        );
    }
    out
}
