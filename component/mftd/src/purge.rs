//! `mftd purge`: an operator retires files by age or by the `[retention]`
//! rules, once. Legal holds always win; the retention floor wins unless the
//! operator says `--before-floor` and why. Every removal is recorded with
//! the operator's name (`--by`, or the login user) and reason.

use std::path::PathBuf;
use std::process::ExitCode;

use mft_storage::retention::{Reason, RetentionRules, SweepPlan, SweepReport};
use mft_storage::ChatType;

use crate::{admin, DEFAULT_CONFIG};

/// Remove old files from the store; their log history stays.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  mftd purge --retention --dry-run          what the [retention] rules would remove now\n  mftd purge --older-than 30d --chat-type groupchat\n  mftd purge --older-than 7d --before-floor --reason 'ticket 4711'\n\nFiles of the current UTC hour are never purged by age; files under a legal hold never."
)]
pub struct PurgeArgs {
    /// The configuration file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Age, e.g. 30d (files of the current UTC hour are never purged).
    #[arg(
        long,
        required_unless_present = "retention",
        conflicts_with = "retention"
    )]
    older_than: Option<String>,
    /// Only this chat type (with --older-than).
    #[arg(long, requires = "older_than")]
    chat_type: Option<String>,
    /// Apply the [retention] rules and ephemeral expiries once, as the
    /// service's sweeper does.
    #[arg(long)]
    retention: bool,
    /// Also remove files younger than the retention floor ([retention]
    /// minimum); needs --reason. Files under a legal hold are kept even so.
    #[arg(long, requires = "reason")]
    before_floor: bool,
    /// Why, recorded with each removal (e.g. a ticket or court order).
    #[arg(long)]
    reason: Option<String>,
    /// Who is responsible, recorded with each removal (default: the login user).
    #[arg(long)]
    by: Option<String>,
    /// Report what would be removed without removing anything.
    #[arg(long)]
    dry_run: bool,
    /// Evaluate as if it were this time (RFC 3339); for tests and drills.
    #[arg(long, hide = true)]
    now: Option<String>,
}

/// The age rules of an `--older-than` purge.
fn age_rules(older_than: &str, chat_type: Option<&str>) -> anyhow::Result<RetentionRules> {
    let age = mft_common::units::parse_duration(older_than).map_err(anyhow::Error::msg)?;
    let Some(chat) = chat_type else {
        return Ok(RetentionRules::all(age));
    };
    let mut rules = RetentionRules::default();
    match chat.parse::<ChatType>().map_err(anyhow::Error::msg)? {
        ChatType::Im => rules.im = Some(age),
        ChatType::Groupchat => rules.groupchat = Some(age),
        ChatType::Persistent => rules.persistent = Some(age),
    }
    Ok(rules)
}

/// Runs `mftd purge`.
pub fn run(args: PurgeArgs) -> anyhow::Result<ExitCode> {
    let (settings, url) = crate::database_url(&args.config)?;
    let now = match &args.now {
        Some(t) => admin::time_arg(t)?,
        None => std::time::SystemTime::now(),
    };
    let (rules, reason) = if args.retention {
        (settings.retention.rules, Reason::Retention)
    } else {
        (
            age_rules(
                args.older_than.as_deref().unwrap_or_default(),
                args.chat_type.as_deref(),
            )?,
            Reason::Purge,
        )
    };
    let note = args.reason.as_deref().map(str::trim).unwrap_or_default();
    if args.before_floor && note.is_empty() {
        anyhow::bail!("--before-floor needs --reason saying why files are removed before the retention floor; it is recorded with each removal");
    }
    let by = crate::operator::actor(args.by)?;
    let node = settings.node_name.clone();
    let floor = settings.retention.floor;
    let plan = SweepPlan {
        node: &node,
        rules,
        floor,
        before_floor: args.before_floor,
        reason,
        now,
        by: &by,
        note,
        dry_run: args.dry_run,
    };
    let report = crate::block_on(async {
        let (log, store) = crate::log_and_store(&settings, &url).await?;
        admin::purge(&log, &store, &plan).await
    })?;
    print!("{}", render(&report, args.dry_run, floor.is_none()));
    Ok(ExitCode::SUCCESS)
}

/// The report, one fact a line; the first line keeps the form scripts read.
fn render(r: &SweepReport, dry_run: bool, no_floor: bool) -> String {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut out = format!("{verb} {} files, {} bytes", r.removed, r.bytes);
    if r.missing > 0 {
        out.push_str(&format!(
            " ({} were already gone from the store)",
            r.missing
        ));
    }
    out.push('\n');
    if r.before_floor > 0 {
        out.push_str(&format!(
            "{} of them younger than the retention floor (--before-floor)\n",
            r.before_floor
        ));
    }
    if r.held > 0 {
        out.push_str(&format!(
            "kept {} files under legal hold (`mftd hold list` shows the holds)\n",
            r.held
        ));
    }
    if r.under_floor > 0 && !no_floor {
        out.push_str(&format!(
            "kept {} files younger than the retention floor ([retention] minimum); `--before-floor --reason …` removes them\n",
            r.under_floor
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_what_was_kept_and_why() {
        let r = SweepReport {
            removed: 2,
            bytes: 20,
            held: 3,
            under_floor: 4,
            ..SweepReport::default()
        };
        let text = render(&r, false, false);
        assert!(text.starts_with("removed 2 files, 20 bytes\n"), "{text}");
        assert!(text.contains("kept 3 files under legal hold"), "{text}");
        assert!(
            text.contains("kept 4 files younger than the retention floor"),
            "{text}"
        );
        assert!(render(&SweepReport::default(), true, true).starts_with("would remove 0 files"));
        let rules = age_rules("2d", Some("groupchat")).expect("rules");
        assert_eq!(rules.im, None);
        assert!(rules.groupchat.is_some());
        assert!(age_rules("2d", Some("lobby")).is_err());
    }
}
