//! The manual pages, generated from the command-line definition itself
//! (clap_mangen), so they cannot drift from `--help`: `mftd.1` and one
//! `mftd-<command>.1` per command (`mftd-keys-generate.1` …). The examples
//! and exit statuses each `--help` ends with become an EXAMPLES section set
//! line by line, as written. The Debian package ships the pages
//! (`scripts/build-deb.sh` runs the hidden `mftd man --out DIR`).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_mangen::Man;

/// Writes every page into `dir`; returns how many were written.
pub fn write(dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("while creating {}", dir.display()))?;
    let mut cmd = crate::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = 0;
    write_tree(&cmd, dir, &mut written)
        .with_context(|| format!("while writing manual pages to {}", dir.display()))?;
    Ok(written)
}

fn write_tree(cmd: &clap::Command, dir: &Path, written: &mut usize) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_tree(sub, dir, written)?;
    }
    let man = Man::new(cmd.clone());
    let mut page = std::fs::File::create(dir.join(man.get_filename()))?;
    render(&man, cmd, &mut page)?;
    page.flush()?;
    *written += 1;
    Ok(())
}

fn render(man: &Man, cmd: &clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(w)?;
    }
    if let Some(text) = cmd.get_after_help() {
        writeln!(w, ".SH EXAMPLES\n.nf")?;
        for line in text.to_string().lines() {
            writeln!(w, "{}", roff_line(line))?;
        }
        writeln!(w, ".fi")?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}

/// One line of literal text for roff: backslashes escaped, and a leading
/// `.` or `'` (a request) or `-` kept as text.
fn roff_line(line: &str) -> String {
    let escaped = line.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_gets_a_page_with_its_examples() {
        let dir = tempfile::tempdir().unwrap();
        let n = write(dir.path()).unwrap();
        assert!(n >= 15, "{n}");
        let log = std::fs::read_to_string(dir.path().join("mftd-log.1")).unwrap();
        assert!(log.contains(".SH EXAMPLES\n.nf\n"), "{log}");
        assert!(log.contains("\\-\\-database\\-url\\-file"), "{log}");
        assert!(
            !dir.path().join("mftd-man.1").exists(),
            "the hidden command has no page"
        );
        assert_eq!(roff_line(".x \\y"), "\\&.x \\ey");
    }
}
