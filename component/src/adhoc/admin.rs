//! The administrators' commands: "Holds" (list the holds in force, place
//! one, lift one — recorded exactly as `mftd hold` records them, with the
//! administrator's bare JID as the actor) and "Usage of a user". The
//! requester's right to run them is checked before any step
//! ([`super::Commands`]); the JIDs in these forms name whom a hold or a
//! report is about, never who is asking.

use mft_common::jid::Jid;
use mft_storage::holds::{self, HoldError, HoldTarget};
use mft_storage::user_files;

use super::form::{self, Form, Submitted};
use super::session::Session;
use super::{bad_payload, log_unavailable, size, when, Action, Commands, Note, Outcome, Requester};
use crate::stanza::StanzaError;
use crate::xml::Element;

/// Most holds one listing shows.
const MAX_HOLDS: usize = 100;

const KINDS: [(&str, &str); 4] = [
    ("user", "A user (files they sent or received)"),
    ("room", "A room (files sent or shared to it)"),
    ("file", "One file (its resource name or URL)"),
    ("sha256", "A content (its SHA-256: every copy)"),
];

/// "Holds", first step: what to do.
pub fn holds_start(notes: Option<Vec<Note>>) -> Outcome {
    let what = form::with_value(
        form::with_options(
            form::field("action", "list-single", "What to do", true),
            &[
                ("List the holds in force".into(), "list".into()),
                ("Place a hold".into(), "add".into()),
                ("Lift a hold".into(), "remove".into()),
            ],
        ),
        "list",
    );
    Outcome::Continue {
        stage: 0,
        choice: None,
        form: Form::new("form", "Legal holds").field(what).build(),
        actions: &["next", "complete"],
        notes: notes.unwrap_or_default(),
    }
}

fn add_form(notes: Vec<Note>) -> Outcome {
    let kind = form::with_value(
        form::with_options(
            form::field("kind", "list-single", "Hold on", true),
            &KINDS.map(|(v, l)| (l.to_owned(), v.to_owned())),
        ),
        "user",
    );
    let form = Form::new("form", "Place a legal hold")
        .instructions("A hold keeps every file it covers from every removal until it is lifted.")
        .field(kind)
        .field(form::field(
            "subject",
            "text-single",
            "JID, resource, URL or SHA-256",
            true,
        ))
        .field(form::field(
            "reason",
            "text-single",
            "Reason (a case or matter)",
            true,
        ))
        .build();
    Outcome::Continue {
        stage: 1,
        choice: Some("add".into()),
        form,
        actions: &["complete", "prev"],
        notes,
    }
}

async fn remove_form(c: &Commands, notes: Vec<Note>) -> Result<Outcome, StanzaError> {
    let client = c.log.read_client().await.map_err(|e| log_unavailable(&e))?;
    let held = holds::list(&client, false)
        .await
        .map_err(|e| log_unavailable(&e))?;
    if held.is_empty() {
        return Ok(Outcome::Done {
            payload: None,
            notes: vec![Note::info("No hold is in force.")],
        });
    }
    let options: Vec<(String, String)> = held
        .iter()
        .take(MAX_HOLDS)
        .map(|h| {
            (
                format!("{}: {} {} — {}", h.id, h.kind, h.subject, h.reason),
                h.id.to_string(),
            )
        })
        .collect();
    let form = Form::new("form", "Lift a legal hold")
        .field(form::with_options(
            form::field("hold", "list-single", "Hold", true),
            &options,
        ))
        .field(form::field(
            "reason",
            "text-single",
            "Why it is lifted",
            true,
        ))
        .build();
    Ok(Outcome::Continue {
        stage: 1,
        choice: Some("remove".into()),
        form,
        actions: &["complete", "prev"],
        notes,
    })
}

async fn list(c: &Commands) -> Result<Outcome, StanzaError> {
    let client = c.log.read_client().await.map_err(|e| log_unavailable(&e))?;
    let held = holds::list(&client, false)
        .await
        .map_err(|e| log_unavailable(&e))?;
    if held.is_empty() {
        return Ok(Outcome::Done {
            payload: None,
            notes: vec![Note::info("No hold is in force.")],
        });
    }
    let rows: Vec<Vec<String>> = held
        .iter()
        .take(MAX_HOLDS)
        .map(|h| {
            vec![
                h.id.to_string(),
                h.kind.clone(),
                h.subject.clone(),
                h.reason.clone(),
                h.placed_by.clone(),
                h.placed_at.clone(),
            ]
        })
        .collect();
    let columns = [
        ("id", "Hold"),
        ("kind", "On"),
        ("subject", "Subject"),
        ("reason", "Reason"),
        ("placed_by", "Placed by"),
        ("placed_at", "Placed at"),
    ];
    // The table as text too, for clients that show no result tables: in
    // the first note (profanity) and as fixed fields (poezio).
    let lines = form::row_lines(&columns, &rows);
    let mut notes = vec![Note::info(format!(
        "{} holds in force.\n{}",
        held.len(),
        lines.join("\n")
    ))];
    if held.len() > MAX_HOLDS {
        notes.push(Note::warn(format!(
            "Only the {MAX_HOLDS} oldest are listed; `mftd hold list` shows all."
        )));
    }
    let table = Form::new("result", "Holds in force")
        .lines("hold", &lines)
        .table(&columns, &rows);
    Ok(Outcome::Done {
        payload: Some(table.build()),
        notes,
    })
}

/// "Holds", every later step.
pub async fn holds_step(
    c: &Commands,
    who: &Requester,
    session: &Session,
    action: Action,
    command: &Element,
) -> Result<Outcome, StanzaError> {
    if action == Action::Prev {
        return Ok(holds_start(None));
    }
    let submitted = Submitted::read(command).map_err(|e| bad_payload(e.0))?;
    match (session.stage, session.choice.as_deref()) {
        (0, _) => match submitted.single("action").map_err(|e| bad_payload(e.0))? {
            None | Some("list") => list(c).await,
            Some("add") => Ok(add_form(Vec::new())),
            Some("remove") => remove_form(c, Vec::new()).await,
            Some(_) => Err(bad_payload("action must be list, add or remove")),
        },
        (1, Some("add")) => place(c, who, &submitted).await,
        (1, Some("remove")) => release(c, who, &submitted).await,
        _ => Err(bad_payload("this step is not part of the command")),
    }
}

async fn place(
    c: &Commands,
    who: &Requester,
    submitted: &Submitted,
) -> Result<Outcome, StanzaError> {
    let kind = submitted.required("kind").map_err(|e| bad_payload(e.0))?;
    let subject = submitted
        .required("subject")
        .map_err(|e| bad_payload(e.0))?;
    let reason = submitted.required("reason").map_err(|e| bad_payload(e.0))?;
    let target = match kind {
        "user" => HoldTarget::user(subject),
        "room" => HoldTarget::room(subject),
        "file" => HoldTarget::file(subject),
        "sha256" => HoldTarget::sha256(subject),
        _ => return Err(bad_payload("kind must be user, room, file or sha256")),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => return Ok(add_form(vec![Note::error(e.to_string())])),
    };
    let mut client = c
        .log
        .dedicated_client()
        .await
        .map_err(|e| log_unavailable(&e))?;
    match holds::place(&mut client, &target, reason, &who.bare).await {
        Ok(placed) => {
            tracing::info!(hold = placed.hold.id, target = %target, by = %who.bare, "legal hold placed over ad-hoc command");
            Ok(Outcome::Done {
                payload: None,
                notes: vec![Note::info(format!(
                    "Hold {} placed on {target}; it covers {} stored file{} now.",
                    placed.hold.id,
                    placed.live_files,
                    if placed.live_files == 1 { "" } else { "s" }
                ))],
            })
        }
        Err(HoldError::Db(e)) => Err(log_unavailable(&e)),
        Err(e) => Ok(add_form(vec![Note::error(e.to_string())])),
    }
}

async fn release(
    c: &Commands,
    who: &Requester,
    submitted: &Submitted,
) -> Result<Outcome, StanzaError> {
    let id = submitted.required("hold").map_err(|e| bad_payload(e.0))?;
    let reason = submitted.required("reason").map_err(|e| bad_payload(e.0))?;
    let Ok(id) = id.parse::<i64>() else {
        return Err(bad_payload("hold must be a hold's number"));
    };
    let mut client = c
        .log
        .dedicated_client()
        .await
        .map_err(|e| log_unavailable(&e))?;
    match holds::release(&mut client, id, reason, &who.bare).await {
        Ok(h) => {
            tracing::info!(hold = h.id, by = %who.bare, "legal hold lifted over ad-hoc command");
            Ok(Outcome::Done {
                payload: None,
                notes: vec![Note::info(format!(
                    "Hold {} on {} {} lifted.",
                    h.id, h.kind, h.subject
                ))],
            })
        }
        Err(HoldError::Db(e)) => Err(log_unavailable(&e)),
        Err(e) => Ok(Outcome::Done {
            payload: None,
            notes: vec![Note::error(e.to_string())],
        }),
    }
}

/// "Usage of a user", first step: whose.
pub fn usage_form(notes: Vec<Note>) -> Outcome {
    Outcome::Continue {
        stage: 0,
        choice: None,
        form: Form::new("form", "Usage of a user")
            .field(form::field("jid", "jid-single", "User", true))
            .build(),
        actions: &["complete"],
        notes,
    }
}

/// "Usage of a user", last step.
pub async fn usage(c: &Commands, command: &Element) -> Result<Outcome, StanzaError> {
    let submitted = Submitted::read(command).map_err(|e| bad_payload(e.0))?;
    let given = submitted.required("jid").map_err(|e| bad_payload(e.0))?;
    let Some(jid) = Jid::parse(given).filter(|j| j.local().is_some()) else {
        return Ok(usage_form(vec![Note::error(format!(
            "{given:?} is not a user's JID; give an address such as alice@example.org"
        ))]));
    };
    let user = jid.bare();
    let client = c.log.read_client().await.map_err(|e| log_unavailable(&e))?;
    let u = user_files::usage(&client, &user)
        .await
        .map_err(|e| log_unavailable(&e))?;
    let report = Form::new("result", "Usage of a user")
        .field(form::shown("jid", "User", &user))
        .field(form::shown(
            "files",
            "Files stored",
            &u.live_files.to_string(),
        ))
        .field(form::shown("bytes", "Bytes stored", &size(u.live_bytes)))
        .field(form::shown(
            "held",
            "Files under a hold",
            &u.held_files.to_string(),
        ))
        .field(form::shown(
            "day-files",
            "Uploads in the last 24 hours",
            &u.day_files.to_string(),
        ))
        .field(form::shown(
            "day-bytes",
            "Bytes in the last 24 hours",
            &size(u.day_bytes),
        ))
        .field(form::shown(
            "removed",
            "Files removed",
            &u.removed_files.to_string(),
        ))
        .field(form::shown(
            "last-upload",
            "Last upload",
            &u.last_upload.map_or_else(|| "never".into(), when),
        ))
        .build();
    Ok(Outcome::Done {
        payload: Some(report),
        notes: Vec::new(),
    })
}
