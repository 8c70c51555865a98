//! The export's manifest (`manifest.json`) and its re-verification. The
//! manifest follows the shape of Relativity's RSMF manifest where it fits —
//! `participants`, `conversations`, and `events` that link `attachments` —
//! and adds what an audit needs: the SHA-256 and size of every file and of
//! every JSON document in the export. The manifest's own SHA-256 is in
//! `manifest.json.sha256` (the `sha256sum` line format), so a change to the
//! manifest is caught as well as a change to what it lists.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Component, Path};

use super::nofollow::{Refused, Root};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The file holding the manifest's SHA-256.
pub const MANIFEST_SHA256: &str = "manifest.json.sha256";
/// The format name written into every manifest.
pub const FORMAT: &str = "mftd-export";

/// The whole manifest.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// This layout's version.
    pub format_version: u32,
    /// The program and version that wrote it.
    pub generator: String,
    /// When (UTC).
    pub created: String,
    /// Who ran the export.
    pub exported_by: String,
    /// What was asked for.
    pub scope: ScopeInfo,
    /// Everyone who appears in an event (RSMF: participants).
    pub participants: Vec<Participant>,
    /// Recipients: people and rooms (RSMF: conversations).
    pub conversations: Vec<Conversation>,
    /// Uploads, shares, downloads and removals, in time order (RSMF: events).
    pub events: Vec<Event>,
    /// Every file the events name, exported or not.
    pub attachments: Vec<Attachment>,
    /// The JSON documents of records, with their hashes.
    pub documents: Vec<Document>,
}

/// What the export was asked for.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScopeInfo {
    /// `user`, `room`, `file`, `log-id` or `sha256`.
    pub kind: String,
    /// The JID, resource, number or digest.
    pub subject: String,
    /// Files uploaded from (inclusive).
    pub from: Option<String>,
    /// Files uploaded before.
    pub to: Option<String>,
}

/// A person or service taking part.
#[derive(Debug, Serialize, Deserialize)]
pub struct Participant {
    /// The bare JID (or `anonymous` for a download without a claim).
    pub id: String,
    /// What to show.
    pub display: String,
}

/// A recipient: a person (`direct`) or a room (`channel`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Conversation {
    /// The bare JID.
    pub id: String,
    /// What to show.
    pub display: String,
    /// `direct` (im) or `channel` (groupchat, persistent).
    #[serde(rename = "type")]
    pub kind: String,
    /// The chat type as the log has it.
    pub chat_type: String,
    /// Who sent files to it.
    pub participants: Vec<String>,
}

/// One thing that happened to a file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Event {
    /// Unique in the export (`log-<aft_index>`, `share-<id>`, `removal-<id>`).
    pub id: String,
    /// `upload`, `share`, `download` or `removal`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who did it.
    pub participant: String,
    /// To whom or where.
    pub conversation: String,
    /// When (as the database wrote it).
    pub timestamp: String,
    /// The file, when its content is in the export; empty for a removed file.
    pub attachments: Vec<AttachmentRef>,
    /// The file's resource name, always (also when it has no attachment).
    pub resource: String,
    /// Facts of the event: HTTP status, reason, who and why for removals.
    pub custom: serde_json::Map<String, serde_json::Value>,
}

/// An event's link to an attachment (RSMF: id, display, size).
#[derive(Debug, Serialize, Deserialize)]
pub struct AttachmentRef {
    /// The attachment's id (the resource name).
    pub id: String,
    /// The name the user uploaded.
    pub display: String,
    /// Bytes.
    pub size: i64,
}

/// A file named by the events.
#[derive(Debug, Serialize, Deserialize)]
pub struct Attachment {
    /// The resource name.
    pub id: String,
    /// The name the user uploaded (as given; not used in any path).
    pub display: String,
    /// Where its content is, relative to the export; `None` when not exported.
    pub path: Option<String>,
    /// `exported`, `removed`, `missing` (the store no longer has it) or
    /// `not-exported` (a resource name that is not mftd's).
    pub status: String,
    /// Bytes written (exported) or logged.
    pub size: i64,
    /// SHA-256 of the bytes written (exported files).
    pub sha256: Option<String>,
    /// SHA-256 the log recorded at upload.
    pub sha256_logged: String,
    /// Whether the two agree (exported files).
    pub matches_log: Option<bool>,
    /// The uploader.
    pub uploader: String,
    /// When it was uploaded.
    pub created: String,
    /// When it was removed, if it was.
    pub removed: Option<String>,
}

/// A JSON document of records.
#[derive(Debug, Serialize, Deserialize)]
pub struct Document {
    /// Relative path.
    pub path: String,
    /// What it holds.
    pub holds: String,
    /// Rows in it.
    pub rows: usize,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of its bytes.
    pub sha256: String,
}

/// Hex SHA-256.
pub fn hex(digest: impl AsRef<[u8]>) -> String {
    digest
        .as_ref()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A writer that counts and hashes what passes through it.
pub struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Hashing<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
            size: 0,
        }
    }

    /// Flushes and returns (hex SHA-256, bytes).
    pub fn finish(mut self) -> std::io::Result<(String, u64)> {
        self.inner.flush()?;
        Ok((hex(self.hash.finalize()), self.size))
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A file name made from what a user uploaded: letters, digits, `.`, `-`,
/// `_` kept, everything else (separators, `..`, control characters)
/// becomes `_`; no leading or trailing dot; at most 120 bytes; never
/// empty; and never a name Windows reserves for a device (`CON`, `NUL`,
/// `COM1.txt` …: an export is often unpacked on a reviewer's Windows
/// machine, where such a file cannot be created and a trailing dot is
/// dropped, so the unpacked copy would not verify).
pub fn safe_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.len() > 120 {
        out.pop();
    }
    while out.starts_with('.') {
        out.replace_range(0..1, "_");
    }
    while out.ends_with('.') {
        out.pop();
        out.push('_');
    }
    if out.is_empty() {
        return "file".to_owned();
    }
    let stem = out.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        out.insert(0, '_');
    }
    out
}

/// Whether `path` (from a manifest) stays inside the export: relative,
/// plain components only.
pub fn inside(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.contains('\\')
}

/// (hex SHA-256, bytes) of everything `file` holds, read in pieces.
pub fn hash_file(mut file: std::fs::File) -> std::io::Result<(String, u64)> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(hash.finalize()), size))
}

/// The sidecar line for a manifest digest.
pub fn sidecar_line(digest: &str) -> String {
    format!("{digest}  {MANIFEST}\n")
}

/// A path as a report line shows it: as is when it is plain text, quoted
/// with escapes when it holds a control character (a newline in a name
/// must not start a report line of its own) or a bidirectional formatting
/// character (U+202E would show `records/exe.doc` for `records/\u{202e}cod.exe`).
pub fn shown(path: &str) -> String {
    let hides = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if path.chars().any(hides) {
        format!("{path:?}")
    } else {
        path.to_owned()
    }
}

/// Reads one of the export's own files whole (manifest, sidecar), never
/// through a link.
fn read_own(root: &Root, name: &str) -> Result<Vec<u8>, Refused> {
    let mut bytes = Vec::new();
    root.open_file(name)?
        .read_to_end(&mut bytes)
        .map_err(Refused::Io)?;
    Ok(bytes)
}

/// Re-verifies an export: the manifest against its sidecar, then every
/// document and attachment the manifest lists, then files nobody listed.
/// Returns the differences, one line each (empty: intact). `Err` when the
/// directory cannot be read at all. Nothing is read through a symbolic
/// link and nothing but regular files is read ([`Root`]): a link or a
/// special file where the export had a file is a difference.
///
/// `expected` is the manifest's SHA-256 as recorded when it was written:
/// the sidecar sits beside the manifest, so whoever rewrites one can
/// rewrite the other; only a digest kept elsewhere catches that.
pub fn verify(dir: &Path, expected: Option<&str>) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let mut found = Vec::new();
    let not_export = || {
        format!(
            "while reading {} (is {} an export written by `mftd export`?)",
            dir.join(MANIFEST).display(),
            dir.display()
        )
    };
    let root = Root::open(dir).with_context(not_export)?;
    let bytes = match read_own(&root, MANIFEST) {
        Ok(bytes) => bytes,
        Err(Refused::Missing) => {
            return Err(anyhow::anyhow!("{MANIFEST} is not there")).with_context(not_export)
        }
        Err(Refused::Io(e)) => return Err(e).with_context(not_export),
        Err(why) => {
            found.push(format!("changed: {MANIFEST} ({why})"));
            return Ok(found);
        }
    };
    let actual = hex(Sha256::digest(&bytes));
    if let Some(expected) = expected {
        let expected = expected.trim().to_ascii_lowercase();
        if expected != actual {
            found.push(format!(
                "changed: {MANIFEST} (SHA-256 {actual}; the SHA-256 given is {})",
                shown(&expected)
            ));
        }
    }
    match read_own(&root, MANIFEST_SHA256) {
        Ok(line) => {
            let line = String::from_utf8_lossy(&line);
            let recorded = line.split_whitespace().next().unwrap_or("");
            if recorded != actual {
                found.push(format!(
                    "changed: {MANIFEST} (SHA-256 {actual}; {MANIFEST_SHA256} says {})",
                    shown(recorded)
                ));
            }
        }
        Err(Refused::Missing) => found.push(format!("missing: {MANIFEST_SHA256}")),
        Err(why) => found.push(format!("changed: {MANIFEST_SHA256} ({why})")),
    }
    let manifest: Manifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            found.push(format!(
                "changed: {MANIFEST} is no longer a readable manifest ({e})"
            ));
            return Ok(found);
        }
    };
    if manifest.format != FORMAT {
        found.push(format!(
            "changed: {MANIFEST} names format {:?}, not {FORMAT:?}",
            manifest.format
        ));
    }
    let mut listed: BTreeSet<String> = [MANIFEST.to_owned(), MANIFEST_SHA256.to_owned()].into();
    let listed_files = manifest
        .documents
        .iter()
        .map(|d| (d.path.as_str(), Some(d.sha256.as_str()), d.size))
        .chain(manifest.attachments.iter().filter_map(|a| {
            let path = a.path.as_deref()?;
            Some((
                path,
                a.sha256.as_deref(),
                u64::try_from(a.size).unwrap_or(0),
            ))
        }));
    for (path, sha, size) in listed_files {
        if !inside(path) {
            found.push(format!(
                "changed: {MANIFEST} names {path:?}, a path outside the export"
            ));
            continue;
        }
        let path_shown = shown(path);
        if !listed.insert(path.to_owned()) {
            found.push(format!("changed: {MANIFEST} lists {path_shown} twice"));
            continue;
        }
        match root
            .open_file(path)
            .map(|f| hash_file(f).map_err(Refused::Io))
        {
            Err(Refused::Missing) => found.push(format!("missing: {path_shown}")),
            Err(why) | Ok(Err(why)) => found.push(format!("changed: {path_shown} ({why})")),
            Ok(Ok((digest, got))) => {
                if Some(digest.as_str()) != sha || got != size {
                    found.push(format!(
                        "changed: {path_shown} (SHA-256 {digest}, {got} bytes; the manifest says {}, {size} bytes)",
                        shown(sha.unwrap_or("none"))
                    ));
                }
            }
        }
    }
    let mut entries = Vec::new();
    walk(dir, "", &mut entries, &mut found);
    for (extra, kind) in entries {
        if !listed.contains(&extra) {
            found.push(format!(
                "unexpected: {} (not in the manifest{kind})",
                shown(&extra)
            ));
        }
    }
    Ok(found)
}

/// Every entry below `dir` that is not a directory, relative to the
/// export with `/` separators, with what it is when it is not a regular
/// file. Directories are entered, links are not; a directory that cannot
/// be listed is a finding, not the end of the verification.
fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, &'static str)>, found: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            found.push(format!(
                "unreadable: {} ({e})",
                if rel.is_empty() { "." } else { rel }
            ));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                found.push(format!("unreadable: {rel} ({e})"));
                continue;
            }
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        // `file_type` does not follow links.
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&entry.path(), &path, out, found),
            Ok(t) if t.is_file() => out.push((path, "")),
            Ok(t) if t.is_symlink() => out.push((path, "; a symbolic link")),
            Ok(_) => out.push((path, "; not a regular file")),
            Err(e) => found.push(format!("unreadable: {} ({e})", shown(&path))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_users_never_leave_their_directory() {
        for hostile in [
            "../../etc/passwd",
            "..",
            ".",
            "",
            "/abs",
            "a/b\\c",
            "..\u{0}x",
        ] {
            let name = safe_name(hostile);
            assert!(
                inside(&format!("attachments/r/{name}")),
                "{hostile:?} -> {name:?}"
            );
            assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
        }
        assert_eq!(safe_name("Minutes 2026.pdf"), "Minutes_2026.pdf");
        for (reserved, safe) in [
            ("CON", "_CON"),
            ("nul.txt", "_nul.txt"),
            ("Com1.tar.gz", "_Com1.tar.gz"),
            ("lpt9", "_lpt9"),
            ("report.", "report_"),
            ("a...", "a.._"),
        ] {
            assert_eq!(safe_name(reserved), safe, "{reserved:?}");
        }
        assert_eq!(safe_name("console.log"), "console.log");
        assert_eq!(shown("records/a.json"), "records/a.json");
        assert_eq!(shown("x\nintact"), "\"x\\nintact\"");
        assert_eq!(shown("r/\u{202e}cod.exe"), "\"r/\\u{202e}cod.exe\"");
        assert_eq!(safe_name("COM10"), "COM10");
        // Long names are cut on a character boundary, then checked again.
        let long = format!("{}a.{}", "\u{e9}".repeat(59), "b".repeat(20));
        let cut = safe_name(&long);
        assert!(cut.len() <= 120 && !cut.ends_with('.'), "{cut}");
        assert!(!inside("../x") && !inside("/etc/passwd") && !inside("a/../../b"));
        assert!(inside("attachments/x/y.pdf"));
    }
}
