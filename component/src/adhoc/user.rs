//! The users' commands: "List my uploads" and "Delete an upload". A user
//! only ever sees and deletes files they uploaded themselves — the queries
//! select by the requester's bare JID, and a deletion re-checks ownership,
//! holds and the retention floor in the database whatever the form says.

use std::time::SystemTime;

use mft_common::error::Chain;
use mft_storage::layout::Location;
use mft_storage::user_deletion::{self, DeletionRequest, Refusal, UserDeletionError};
use mft_storage::user_files::{self, UserUpload};

use super::form::{self, Form, Submitted};
use super::{bad_payload, log_unavailable, size, span, when, Commands, Note, Outcome, Requester};
use crate::stanza::StanzaError;
use crate::xml::Element;

/// Most files one listing (or the deletion form) shows, newest first.
pub const MAX_LISTED: i64 = 50;

/// The longest file name shown; longer names are cut with `…`.
const MAX_NAME_CHARS: usize = 120;

fn short(name: &str) -> String {
    if name.chars().count() <= MAX_NAME_CHARS {
        return name.to_owned();
    }
    let cut: String = name.chars().take(MAX_NAME_CHARS - 1).collect();
    format!("{cut}…")
}

async fn uploads(c: &Commands, who: &Requester) -> Result<(Vec<UserUpload>, i64), StanzaError> {
    let client = c.log.read_client().await.map_err(|e| log_unavailable(&e))?;
    user_files::live_uploads(&client, &who.bare, MAX_LISTED)
        .await
        .map_err(|e| log_unavailable(&e))
}

/// What a listing says about how long a file stays.
fn kept_until(c: &Commands, u: &UserUpload) -> String {
    if u.held {
        return "kept while a legal hold applies".into();
    }
    if let Some(at) = u.file.expires {
        return format!("{} (ephemeral)", when(at));
    }
    let limit = if u.file.purpose == "permanent" && c.rules.permanent_exempt {
        None
    } else {
        c.rules.for_chat(&u.file.chat_type)
    };
    match limit {
        Some(age) => when(u.file.created + age),
        None => "no age limit".into(),
    }
}

fn status(u: &UserUpload) -> &'static str {
    if u.held {
        "held"
    } else if u.file.quarantined.is_some() {
        "quarantined"
    } else {
        "stored"
    }
}

fn recipients(u: &UserUpload) -> String {
    let mut s = u.recipients.join(", ");
    if u.more_recipients > 0 {
        s.push_str(&format!(" and {} more", u.more_recipients));
    }
    if s.is_empty() {
        s = "(not known)".into();
    }
    s
}

fn count_note(shown: usize, total: i64, what: &str) -> Vec<Note> {
    if total > i64::try_from(shown).unwrap_or(i64::MAX) {
        vec![Note::info(format!(
            "You have {total} uploads stored; the {shown} newest are {what}."
        ))]
    } else {
        vec![Note::info(format!(
            "You have {total} upload{} stored.",
            if total == 1 { "" } else { "s" }
        ))]
    }
}

/// "List my uploads": one table, newest first.
pub async fn list(c: &Commands, who: &Requester) -> Result<Outcome, StanzaError> {
    let (files, total) = uploads(c, who).await?;
    if files.is_empty() {
        return Ok(Outcome::Done {
            payload: None,
            notes: vec![Note::info("You have no uploads stored.")],
        });
    }
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|u| {
            vec![
                short(&u.file.real_filename),
                size(u.file.size),
                when(u.file.created),
                recipients(u),
                kept_until(c, u),
                when(c.floor.reached_at(&u.file.chat_type, u.file.created)),
                status(u).into(),
                u.file.resource.clone(),
            ]
        })
        .collect();
    // The same list as text: clients that show no result tables still
    // show a form's `fixed` fields (poezio) or a command's first note
    // (profanity).
    let lines: Vec<String> = files
        .iter()
        .map(|u| {
            format!(
                "{} — {}, uploaded {}, sent to {}, kept until {}, {}",
                short(&u.file.real_filename),
                size(u.file.size),
                when(u.file.created),
                recipients(u),
                kept_until(c, u),
                status(u)
            )
        })
        .collect();
    let table = Form::new("result", "Your uploads")
        .lines("file", &lines)
        .table(
            &[
                ("name", "File"),
                ("size", "Size"),
                ("uploaded", "Uploaded"),
                ("recipients", "Sent to"),
                ("expires", "Kept until"),
                ("deletable", "Can be deleted from"),
                ("status", "Status"),
                ("resource", "Resource"),
            ],
            &rows,
        );
    let mut notes = count_note(files.len(), total, "listed");
    if let Some(first) = notes.first_mut() {
        first.text = format!("{}\n{}", first.text, lines.join("\n"));
    }
    Ok(Outcome::Done {
        payload: Some(table.build()),
        notes,
    })
}

/// "Delete an upload", first step: the user's own live files to choose from.
pub async fn delete_form(c: &Commands, who: &Requester) -> Result<Outcome, StanzaError> {
    let (files, total) = uploads(c, who).await?;
    if files.is_empty() {
        return Ok(Outcome::Done {
            payload: None,
            notes: vec![Note::info("You have no uploads to delete.")],
        });
    }
    let now = SystemTime::now();
    let options: Vec<(String, String)> = files
        .iter()
        .map(|u| {
            let mut label = format!(
                "{} — {}, {}",
                short(&u.file.real_filename),
                size(u.file.size),
                when(u.file.created)
            );
            if u.held {
                label.push_str(" (held)");
            } else {
                let from = c.floor.reached_at(&u.file.chat_type, u.file.created);
                if from > now {
                    label.push_str(&format!(" (kept until {})", when(from)));
                }
            }
            (label, u.file.resource.clone())
        })
        .collect();
    let choose = form::with_options(
        form::field("resource", "list-single", "File", true),
        &options,
    );
    // Which value is which file, for clients that show a list's options
    // only by value (profanity).
    let which: Vec<String> = options
        .iter()
        .map(|(label, value)| format!("{value}: {label}"))
        .collect();
    let form = Form::new("form", "Delete an upload")
        .instructions(&format!(
            "Choose one of your files. Its link stops working; the record that it was sent is kept.\n{}",
            which.join("\n")
        ))
        .field(choose)
        .build();
    Ok(Outcome::Continue {
        stage: 0,
        choice: None,
        form,
        actions: &["complete"],
        notes: count_note(files.len(), total, "offered"),
    })
}

/// "Delete an upload", last step.
pub async fn delete(
    c: &Commands,
    who: &Requester,
    command: &Element,
) -> Result<Outcome, StanzaError> {
    let submitted = Submitted::read(command).map_err(|e| bad_payload(e.0))?;
    let resource = submitted
        .required("resource")
        .map_err(|e| bad_payload(e.0))?;
    let Some(loc) = Location::parse(resource) else {
        return Err(bad_payload(
            "The value is not the name of one of your stored uploads; choose one from the list.",
        ));
    };
    let mut client = c
        .log
        .dedicated_client()
        .await
        .map_err(|e| log_unavailable(&e))?;
    let request = DeletionRequest {
        user: &who.bare,
        from: &who.full,
        resource: loc.resource(),
        floor: &c.floor,
        node: &c.node,
    };
    match user_deletion::delete(&mut client, &c.store, &request).await {
        Ok(done) => {
            tracing::info!(resource = %done.file.resource, by = %who.full, missing = done.missing, "upload deleted by its uploader");
            Ok(Outcome::Done {
                payload: None,
                notes: vec![Note::info(format!(
                    "Deleted {} (uploaded {}). Its link now answers 410 Gone; the record that it was sent is kept.",
                    short(&done.file.real_filename),
                    when(done.file.created)
                ))],
            })
        }
        Err(UserDeletionError::Refused(why)) => refused(who, loc.resource(), why),
        Err(e @ UserDeletionError::Db(_)) => Err(log_unavailable(&e)),
        Err(e @ UserDeletionError::Store { .. }) => {
            tracing::warn!(error = %Chain(&e), resource = loc.resource(), "a user's deletion is pending: the file server failed");
            Err(StanzaError::resource_constraint(
                "The file server could not remove the file just now. The deletion is recorded and will be finished; you may also try again later.",
            ))
        }
    }
}

fn refused(who: &Requester, resource: &str, why: Refusal) -> Result<Outcome, StanzaError> {
    tracing::info!(resource, by = %who.full, why = ?why, "a user's deletion refused");
    let text = match why {
        Refusal::NotFound => {
            return Err(StanzaError::item_not_found(
                "You have no stored upload by that name; the list offers yours.",
            ))
        }
        Refusal::Held => "This file is under a legal hold and cannot be deleted; it is kept until the hold is lifted.".to_owned(),
        Refusal::Floor {
            until,
            floor,
            chat_type,
        } => format!(
            "This file must be kept until {} by the retention policy (files of {chat_type} chats are kept at least {}); you can delete it from then on.",
            when(until),
            span(floor)
        ),
    };
    Ok(Outcome::Done {
        payload: None,
        notes: vec![Note::error(text)],
    })
}
