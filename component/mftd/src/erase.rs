//! `mftd erase`: an operator erases a person's files (a GDPR erasure
//! request) — every file they sent and, with `--received`, every file sent
//! to them — honouring legal holds, with the transfer record kept. The
//! erasure itself (two-phase, crash-safe, recorded) is
//! `mft_storage::erasure`; this module parses, names the actor and renders.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mft_storage::erasure::{self, ErasurePlan, ErasureReport};
use mft_storage::holds::HoldTarget;

use crate::export::manifest::shown;
use crate::DEFAULT_CONFIG;

/// Erase a person's files; the log keeps every transfer, marked erased.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  mftd erase --user alice@example.test --reason 'DSAR 2026-114' --dry-run\n  mftd erase --user alice@example.test --received --reason 'DSAR 2026-114' --by 'dpo: j.smith'\n\nFiles under a legal hold are kept and listed. Each erased file gets a removal\nrecord (reason erasure, who, why); its log rows stay (view aft_log_erasures).\nExit status: 0 done (held files may have been kept); 1 error."
)]
pub struct EraseArgs {
    /// The configuration file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The person (bare JID): every file they uploaded.
    #[arg(long, value_name = "JID")]
    user: String,
    /// Also every file sent to them (as the upload's recipient or in a share).
    #[arg(long)]
    received: bool,
    /// Why (the request's number); recorded with the erasure and each removal.
    #[arg(long)]
    reason: String,
    /// Who is responsible, recorded with each removal (default: the login user).
    #[arg(long)]
    by: Option<String>,
    /// List what would be erased and what holds keep, changing nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `mftd erase`.
pub fn run(args: EraseArgs) -> anyhow::Result<ExitCode> {
    let subject = HoldTarget::user(&args.user)?.subject().to_owned();
    let by = crate::operator::actor(args.by)?;
    let (settings, url) = crate::database_url(&args.config)?;
    let node = settings.node_name.clone();
    let plan = ErasurePlan {
        subject: &subject,
        received: args.received,
        reason: &args.reason,
        by: &by,
        node: &node,
        dry_run: args.dry_run,
    };
    let report = crate::block_on(async {
        let store = crate::app::open_store(&settings)?;
        let mut client = mft_storage::db::connect(&url, Duration::from_secs(10)).await?;
        Ok(erasure::erase(&mut client, &store, &plan).await?)
    })?;
    print!("{}", render(&plan, &report));
    Ok(ExitCode::SUCCESS)
}

/// The report: the first line says what was done, then what holds kept.
fn render(plan: &ErasurePlan<'_>, r: &ErasureReport) -> String {
    let mut out = String::new();
    let r0 = r.resumed;
    if r0 != Default::default() {
        let _ = writeln!(
            out,
            "finished an interrupted erasure first: {} files erased, {} kept under a hold placed since, {} already removed",
            r0.finished, r0.held, r0.gone
        );
    }
    let whose = if plan.received {
        "sent and received"
    } else {
        "sent"
    };
    match r.erasure_id {
        Some(id) => {
            let _ = writeln!(
                out,
                "erasure {id} of {} (files {whose}) by {}: erased {} files, {} bytes",
                plan.subject,
                plan.by,
                r.erased.len(),
                r.bytes()
            );
        }
        None => {
            let _ = writeln!(
                out,
                "dry run for {} (files {whose}): would erase {} files, {} bytes; nothing was changed",
                plan.subject,
                r.erased.len(),
                r.bytes()
            );
        }
    }
    for f in &r.erased {
        let _ = writeln!(
            out,
            "  {} {}  {}",
            if r.erasure_id.is_some() {
                "erased"
            } else {
                "would erase"
            },
            f.resource,
            shown(&f.real_filename)
        );
    }
    if r.missing > 0 {
        let _ = writeln!(
            out,
            "{} of them were already gone from the store (recorded all the same)",
            r.missing
        );
    }
    if r.gone > 0 {
        let _ = writeln!(
            out,
            "{} files were removed by something else while the erasure ran",
            r.gone
        );
    }
    if r.in_flight > 0 {
        let _ = writeln!(
            out,
            "warning: {} uploads (by anyone) were in progress when the erasure ended; one {} started before it lands after it and is not erased: once they have finished (at most the upload timeout), run the same `mftd erase` again",
            r.in_flight, plan.subject
        );
    }
    if !r.held.is_empty() {
        let _ = writeln!(
            out,
            "kept {} files under legal hold (not erased; `mftd hold list` shows the holds):",
            r.held.len()
        );
        for h in &r.held {
            let holds: Vec<String> = h
                .holds
                .iter()
                .map(|(id, what, why)| format!("hold {id} on {what}: {why}"))
                .collect();
            let _ = writeln!(
                out,
                "  held {}  {}  ({})",
                h.file.resource,
                shown(&h.file.real_filename),
                holds.join("; ")
            );
        }
    }
    out
}
