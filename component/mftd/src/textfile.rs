//! Writing metrics for the node exporter's textfile collector.

use std::path::Path;

use anyhow::Context;

/// Writes `text` to `path` atomically (temporary name, then rename), as the
/// node exporter's textfile collector expects.
pub fn write_textfile(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("while writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("while renaming to {}", path.display()))?;
    Ok(())
}
