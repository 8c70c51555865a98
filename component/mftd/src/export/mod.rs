//! `mftd export`: an e-discovery export of a person, a room, one file or
//! one content, as a directory a reviewer can open:
//!
//! ```text
//! DIR/manifest.json            participants, conversations, events → attachments, hashes
//! DIR/manifest.json.sha256     the manifest's own SHA-256 (sha256sum -c reads it)
//! DIR/records/*.json           log rows, shares, removals, erasures, holds, files
//! DIR/attachments/<resource>/<name>   each file's bytes, streamed from the store
//! ```
//!
//! Files are streamed from the store (SFTP or local) to disk piece by piece
//! and hashed on the way; nothing holds a whole file. The records are read
//! from the database as JSON rows ([`mft_storage::discovery`]). Names on
//! disk never come from anything a user chose unchecked: the directory is
//! the resource name (only names mftd generates are accepted) and the file
//! name is the uploaded name with every separator and leading dot replaced.
//! `mftd verify --export DIR` re-checks everything ([`manifest::verify`]).

pub mod manifest;
pub mod nofollow;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use mft_common::utc::UtcTime;
use mft_storage::discovery::{self, Records, Scope};
use mft_storage::holds::HoldTarget;
use mft_storage::transfer_log::FileRow;
use mft_storage::{Location, Store};
use serde_json::{json, Value};

use nofollow::Root;

use manifest::{
    safe_name, sidecar_line, Attachment, AttachmentRef, Conversation, Document, Event, Hashing,
    Manifest, Participant, ScopeInfo, FORMAT, MANIFEST, MANIFEST_SHA256,
};

use crate::DEFAULT_CONFIG;

/// Write an e-discovery export: files, their records and a hashed manifest.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  mftd export --user alice@example.test --out /srv/matters/2026-17\n  mftd export --room board@conference.example.test --from 2026-01-01T00:00:00Z --to 2026-04-01T00:00:00Z --out q1-board\n  mftd export --file 20261126-08-im-Qm9hcmQgbWludXRlcw0AAA --out one-file\n  mftd verify --export /srv/matters/2026-17       re-check every hash later\n\n--out must be a new or empty directory. --from/--to select files by upload time;\neach selected file comes with its whole history. Removed and erased files appear\nas events without attachments. Pack it with `tar` or `zip -r` to hand it over."
)]
pub struct ExportArgs {
    /// The configuration file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Files uploaded from this time (RFC 3339, or a duration ago: 30d).
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Files uploaded before this time.
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// The export directory: new, or existing and empty.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Who runs the export, recorded in the manifest (default: the login user).
    #[arg(long)]
    by: Option<String>,
}

/// What to export: exactly one.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct ScopeArgs {
    /// A person (bare JID): files they uploaded, were sent, shared or fetched.
    #[arg(long, value_name = "JID")]
    user: Option<String>,
    /// A room: files sent or shared to it.
    #[arg(long, value_name = "JID")]
    room: Option<String>,
    /// One file: AFT_INDEX of its upload, its resource name or URL, or a
    /// SHA-256 (every file with that content).
    #[arg(long, value_name = "ID|RESOURCE|SHA256")]
    file: Option<String>,
}

impl ScopeArgs {
    fn resolve(&self) -> anyhow::Result<(Scope, ScopeInfo)> {
        let info = |kind: &str, subject: &str| ScopeInfo {
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            from: None,
            to: None,
        };
        if let Some(u) = &self.user {
            let s = HoldTarget::user(u)?.subject().to_owned();
            return Ok((Scope::User(s.clone()), info("user", &s)));
        }
        if let Some(r) = &self.room {
            let s = HoldTarget::room(r)?.subject().to_owned();
            return Ok((Scope::Room(s.clone()), info("room", &s)));
        }
        let f = self.file.as_deref().unwrap_or_default().trim();
        if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) {
            let id: i64 = f.parse().context("--file: the number is too large")?;
            return Ok((Scope::LogId(id), info("log-id", f)));
        }
        if f.len() == 64 && f.bytes().all(|b| b.is_ascii_hexdigit()) {
            let s = HoldTarget::sha256(f)?.subject().to_owned();
            return Ok((Scope::Sha256(s.clone()), info("sha256", &s)));
        }
        let s = HoldTarget::file(f)?.subject().to_owned();
        Ok((Scope::Resource(s.clone()), info("file", &s)))
    }
}

/// Runs `mftd export`.
pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let (scope, mut info) = args.scope.resolve()?;
    let from = args
        .from
        .as_deref()
        .map(crate::admin::time_arg)
        .transpose()?;
    let to = args.to.as_deref().map(crate::admin::time_arg).transpose()?;
    info.from = from.map(stamp);
    info.to = to.map(stamp);
    let by = crate::operator::actor(args.by)?;
    let (settings, url) = crate::database_url(&args.config)?;
    let root = prepare_out(&args.out)?;
    let node = settings.node_name.clone();
    let summary = crate::block_on(async {
        let store = crate::app::open_store(&settings)?;
        let client = mft_storage::db::connect(&url, Duration::from_secs(10)).await?;
        let files = discovery::files(&client, &scope, from, to).await?;
        let resources: Vec<String> = files.iter().map(|f| f.resource.clone()).collect();
        let records = discovery::records(&client, &resources).await?;
        write_export(&root, &store, &node, &files, &records, info, &by).await
    })?;
    print!("{summary}");
    Ok(ExitCode::SUCCESS)
}

fn stamp(t: SystemTime) -> String {
    UtcTime::from_system(t).xep0082()
}

/// Creates `out`, or accepts it when it is an empty directory; anything
/// else is refused before a byte is written. The directory is then held
/// open and everything below it is written without following links
/// ([`nofollow`]).
fn prepare_out(out: &Path) -> anyhow::Result<Root> {
    match std::fs::symlink_metadata(out) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = std::fs::read_dir(out)
                .with_context(|| format!("while reading --out {}", out.display()))?;
            if entries.next().is_some() {
                anyhow::bail!(
                    "--out {} is not empty: an export goes into a new or empty directory, so nothing in it can be mistaken for part of the export; give another directory",
                    out.display()
                );
            }
        }
        Ok(_) => anyhow::bail!(
            "--out {} exists and is not a directory; give a new directory",
            out.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(out)
            .with_context(|| {
                format!(
                    "while creating --out {} (its parent directory must exist)",
                    out.display()
                )
            })?,
        Err(e) => return Err(e).with_context(|| format!("while checking --out {}", out.display())),
    }
    // Opened without following a link: a link put in its place since the
    // check is refused rather than written through.
    let fd = rustix::fs::open(
        out,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::DIRECTORY
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(std::io::Error::from)
    .with_context(|| {
        format!(
            "while opening --out {} (it changed since it was checked: is someone else writing there?)",
            out.display()
        )
    })?;
    Ok(Root::from_fd(fd, out))
}

/// A new file below the export directory (never an existing one, never
/// through a link).
fn create(root: &Root, rel: &str) -> anyhow::Result<File> {
    root.create(rel).map_err(|why| {
        anyhow::anyhow!(
            "while creating {rel} in the export directory: {why}; the export is incomplete: remove the directory and export again into a new one that only you can write to"
        )
    })
}

/// Writes `rows` as one pretty JSON array, hashing on the way.
fn write_document(root: &Root, rel: &str, holds: &str, rows: &[Value]) -> anyhow::Result<Document> {
    let mut w = Hashing::new(BufWriter::new(create(root, rel)?));
    serde_json::to_writer_pretty(&mut w, rows).with_context(|| format!("while writing {rel}"))?;
    w.write_all(b"\n")?;
    let (sha256, size) = w.finish()?;
    Ok(Document {
        path: rel.to_owned(),
        holds: holds.to_owned(),
        rows: rows.len(),
        size,
        sha256,
    })
}

/// Streams one file from the store into the export; (SHA-256, bytes).
async fn copy_file(store: &Store, loc: &Location, dest: File) -> anyhow::Result<(String, u64)> {
    let info = store.stat(loc).await?;
    let mut download = store.read_stated(&info, loc, 0, info.size).await?;
    let mut w = Hashing::new(BufWriter::with_capacity(1 << 20, dest));
    while let Some(piece) = std::future::poll_fn(|cx| download.poll_next(cx)).await {
        w.write_all(&piece?)?;
    }
    let done = w.finish()?;
    Ok(done)
}

fn file_value(f: &FileRow) -> Value {
    json!({
        "resource": f.resource,
        "real_filename": f.real_filename,
        "uploader": f.uploader,
        "to_jid": f.to_jid,
        "chat_type": f.chat_type,
        "size": f.size,
        "sha256": f.sha256,
        "content_type": f.content_type,
        "purpose": f.purpose,
        "created": stamp(f.created),
        "expires": f.expires.map(stamp),
        "deleted": f.deleted.map(stamp),
        "node": f.node,
        "file_server": f.file_server,
        "storage_path": f.storage_path,
    })
}

/// Exports each file's bytes; the attachments list.
async fn export_files(
    root: &Root,
    store: &Store,
    node: &str,
    files: &[FileRow],
) -> anyhow::Result<Vec<Attachment>> {
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let mut a = Attachment {
            id: f.resource.clone(),
            display: f.real_filename.clone(),
            path: None,
            status: String::new(),
            size: f.size,
            sha256: None,
            sha256_logged: f.sha256.clone(),
            matches_log: None,
            uploader: f.uploader.clone(),
            created: stamp(f.created),
            removed: f.deleted.map(stamp),
        };
        // Only names mftd generates are used as directory names: anything
        // else (a row edited by hand, `../` …) is listed, never followed.
        let loc = Location::parse(&f.resource);
        a.status = match (&loc, f.deleted) {
            (_, Some(_)) => "removed".to_owned(),
            (None, None) => "not-exported".to_owned(),
            (Some(loc), None) => {
                let source = store.of_node(node, &f.node);
                let rel = format!(
                    "attachments/{}/{}",
                    loc.resource(),
                    safe_name(&f.real_filename)
                );
                match source {
                    None => "not-exported".to_owned(),
                    Some(source) => match copy_file(&source, loc, create(root, &rel)?).await {
                        Ok((sha, size)) => {
                            a.matches_log = Some(sha == f.sha256);
                            a.sha256 = Some(sha);
                            a.size = i64::try_from(size).unwrap_or(i64::MAX);
                            a.path = Some(rel);
                            "exported".to_owned()
                        }
                        Err(e) => {
                            root.remove_with_dir(&rel);
                            let missing = e
                                .downcast_ref::<mft_storage::StoreError>()
                                .is_some_and(mft_storage::StoreError::is_not_found);
                            if !missing {
                                return Err(e.context(format!(
                                    "while exporting {} from the file server",
                                    f.storage_path
                                )));
                            }
                            "missing".to_owned()
                        }
                    },
                }
            }
        };
        out.push(a);
    }
    Ok(out)
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn bare(jid: &str) -> String {
    jid.split('/').next().unwrap_or("").to_owned()
}

/// The events of the records, in time order, each linked to its file's
/// attachment when the file's content is in the export.
fn events(files: &[FileRow], attachments: &[Attachment], r: &Records) -> Vec<Event> {
    let by_resource: BTreeMap<&str, (&FileRow, &Attachment)> = files
        .iter()
        .zip(attachments)
        .map(|(f, a)| (f.resource.as_str(), (f, a)))
        .collect();
    let link = |resource: &str| -> Vec<AttachmentRef> {
        match by_resource.get(resource) {
            Some((_, a)) if a.path.is_some() => vec![AttachmentRef {
                id: a.id.clone(),
                display: a.display.clone(),
                size: a.size,
            }],
            _ => Vec::new(),
        }
    };
    let recipient = |resource: &str| {
        by_resource
            .get(resource)
            .map(|(f, _)| bare(&f.to_jid))
            .unwrap_or_default()
    };
    let custom = |v: &Value, keys: &[&str]| {
        keys.iter()
            .filter_map(|k| v.get(*k).map(|x| ((*k).to_owned(), x.clone())))
            .collect::<serde_json::Map<_, _>>()
    };
    let mut out = Vec::new();
    for row in &r.log {
        let resource = text(row, "filename");
        let method = text(row, "method");
        let status: i64 = row.get("http_status").and_then(Value::as_i64).unwrap_or(0);
        let kind = if method == "POST" {
            "upload"
        } else {
            "download"
        };
        let delivered = (200..300).contains(&status) || status == 0;
        let who = bare(&text(row, "jid"));
        out.push(Event {
            id: format!("log-{}", text(row, "aft_index")),
            kind: kind.to_owned(),
            participant: if who.is_empty() {
                "anonymous".to_owned()
            } else {
                who
            },
            conversation: recipient(&resource),
            timestamp: text(row, "date_time"),
            attachments: if delivered {
                link(&resource)
            } else {
                Vec::new()
            },
            resource,
            custom: custom(
                row,
                &[
                    "aft_index",
                    "http_status",
                    "bytes_sent",
                    "chat_type",
                    "client_address",
                    "user_agent",
                    "sha256",
                ],
            ),
        });
    }
    for row in &r.shares {
        let resource = text(row, "resource");
        out.push(Event {
            id: format!("share-{}", text(row, "share_id")),
            kind: "share".to_owned(),
            participant: bare(&text(row, "sender")),
            conversation: bare(&text(row, "recipient")),
            timestamp: text(row, "date_time"),
            attachments: link(&resource),
            resource,
            custom: custom(row, &["share_id", "chat_type", "reported_by"]),
        });
    }
    for row in &r.removals {
        let resource = text(row, "resource");
        out.push(Event {
            id: format!("removal-{}", text(row, "removal_id")),
            kind: "removal".to_owned(),
            participant: text(row, "removed_by"),
            conversation: recipient(&resource),
            timestamp: text(row, "removed_at"),
            attachments: Vec::new(),
            resource,
            custom: custom(row, &["removal_id", "reason", "note", "before_floor"]),
        });
    }
    // The database writes every timestamp in one format and zone.
    out.sort_by(|a, b| a.timestamp.cmp(&b.timestamp));
    out
}

fn participants_and_conversations(
    files: &[FileRow],
    events: &[Event],
) -> (Vec<Participant>, Vec<Conversation>) {
    let people: BTreeSet<&str> = events
        .iter()
        .map(|e| e.participant.as_str())
        .filter(|p| !p.is_empty())
        .collect();
    let mut rooms: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for f in files {
        let to = bare(&f.to_jid);
        if to.is_empty() {
            continue;
        }
        let entry = rooms
            .entry(to)
            .or_insert_with(|| (f.chat_type.clone(), BTreeSet::new()));
        entry.1.insert(bare(&f.uploader));
    }
    for e in events.iter().filter(|e| e.kind == "share") {
        let chat = e
            .custom
            .get("chat_type")
            .and_then(Value::as_str)
            .unwrap_or("im")
            .to_owned();
        rooms
            .entry(e.conversation.clone())
            .or_insert_with(|| (chat, BTreeSet::new()))
            .1
            .insert(e.participant.clone());
    }
    (
        people
            .into_iter()
            .map(|p| Participant {
                id: p.to_owned(),
                display: p.to_owned(),
            })
            .collect(),
        rooms
            .into_iter()
            .map(|(id, (chat_type, senders))| Conversation {
                display: id.clone(),
                id,
                kind: if chat_type == "im" {
                    "direct"
                } else {
                    "channel"
                }
                .to_owned(),
                chat_type,
                participants: senders.into_iter().collect(),
            })
            .collect(),
    )
}

async fn write_export(
    root: &Root,
    store: &Store,
    node: &str,
    files: &[FileRow],
    records: &Records,
    scope: ScopeInfo,
    by: &str,
) -> anyhow::Result<String> {
    let attachments = export_files(root, store, node, files).await?;
    let file_rows: Vec<Value> = files.iter().map(file_value).collect();
    let documents = vec![
        write_document(
            root,
            "records/files.json",
            "the files table rows",
            &file_rows,
        )?,
        write_document(
            root,
            "records/aft_log.json",
            "transfer log rows (AFT_LOG)",
            &records.log,
        )?,
        write_document(
            root,
            "records/shares.json",
            "messages that carried the files' URLs",
            &records.shares,
        )?,
        write_document(
            root,
            "records/removals.json",
            "removals: who, when, why",
            &records.removals,
        )?,
        write_document(
            root,
            "records/erasures.json",
            "erasure steps and their requests",
            &records.erasures,
        )?,
        write_document(
            root,
            "records/holds.json",
            "legal holds covering the files, with history",
            &records.holds,
        )?,
    ];
    let events = events(files, &attachments, records);
    let (participants, conversations) = participants_and_conversations(files, &events);
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        format_version: 1,
        generator: format!("mftd {}", env!("CARGO_PKG_VERSION")),
        created: stamp(SystemTime::now()),
        exported_by: by.to_owned(),
        scope,
        participants,
        conversations,
        events,
        attachments,
        documents,
    };
    let mut w = Hashing::new(BufWriter::new(create(root, MANIFEST)?));
    serde_json::to_writer_pretty(&mut w, &manifest).context("while writing the manifest")?;
    w.write_all(b"\n")?;
    let (digest, _) = w.finish()?;
    create(root, MANIFEST_SHA256)?.write_all(sidecar_line(&digest).as_bytes())?;
    let count = |s: &str| {
        manifest
            .attachments
            .iter()
            .filter(|a| a.status == s)
            .count()
    };
    let mut summary = format!(
        "exported {} files ({} removed, {} missing from the store, {} not exported), {} events to {}\nmanifest SHA-256 {digest}\n",
        count("exported"),
        count("removed"),
        count("missing"),
        count("not-exported"),
        manifest.events.len(),
        root.path().display()
    );
    for a in manifest
        .attachments
        .iter()
        .filter(|a| a.matches_log == Some(false))
    {
        summary.push_str(&format!(
            "warning: {} differs from the SHA-256 logged at upload ({} exported, {} logged)\n",
            a.id,
            a.sha256.as_deref().unwrap_or(""),
            a.sha256_logged
        ));
    }
    Ok(summary)
}
