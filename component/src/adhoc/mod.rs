//! XEP-0050 ad-hoc commands on the component: users list and delete their
//! own uploads; administrators (`[adhoc] admins`) manage legal holds and see
//! a user's usage. This module owns the protocol — discovery of the
//! commands, `execute` / `next` / `prev` / `complete` / `cancel`, sessions,
//! notes and the XEP's errors — and dispatches each step to the command's
//! module ([`user`], [`admin`]). What a command may see or change is decided
//! in `mft-storage` ([`mft_storage::user_files`],
//! [`mft_storage::user_deletion`], [`mft_storage::holds`]).
//!
//! The requester is the stanza's `from` as the router stamped it (a router
//! guarantees it for its own c2s users); it must be a user of a domain the
//! service serves. A JID inside a form is never taken as the requester.

pub mod admin;
pub mod form;
pub mod session;
pub mod settings;
pub mod user;

use std::time::SystemTime;

use mft_common::error::Chain;
use mft_common::jid::Jid;
use mft_storage::retention::{RetentionFloor, RetentionRules};
use mft_storage::transfer_log::TransferLog;
use mft_storage::Store;

use crate::stanza::{iq_result, Condition, ErrorType, StanzaError};
use crate::xml::Element;
use session::{Lookup, Session, Sessions};

/// The ad-hoc commands namespace (also the disco node listing them).
pub const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

/// The commands, by node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// "List my uploads".
    ListUploads,
    /// "Delete an upload".
    DeleteUpload,
    /// "Holds" (administrators).
    Holds,
    /// "Usage of a user" (administrators).
    Usage,
}

impl Command {
    const ALL: [Command; 4] = [
        Command::ListUploads,
        Command::DeleteUpload,
        Command::Holds,
        Command::Usage,
    ];

    /// The disco node.
    pub fn node(self) -> &'static str {
        match self {
            Command::ListUploads => "list-uploads",
            Command::DeleteUpload => "delete-upload",
            Command::Holds => "admin-holds",
            Command::Usage => "admin-usage",
        }
    }

    /// The name clients show.
    pub fn name(self) -> &'static str {
        match self {
            Command::ListUploads => "List my uploads",
            Command::DeleteUpload => "Delete an upload",
            Command::Holds => "Holds (administrators)",
            Command::Usage => "Usage of a user (administrators)",
        }
    }

    fn for_admins(self) -> bool {
        matches!(self, Command::Holds | Command::Usage)
    }

    fn from_node(node: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.node() == node)
    }
}

/// Who runs a command: the stanza's `from`, checked.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The full JID (sessions belong to it).
    pub full: String,
    /// The normalised bare JID (whose files).
    pub bare: String,
}

/// A note shown with a step's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `info`, `warn` or `error`.
    pub kind: &'static str,
    /// The text.
    pub text: String,
}

impl Note {
    /// An informational note.
    pub fn info(text: impl Into<String>) -> Note {
        Note {
            kind: "info",
            text: text.into(),
        }
    }
    /// A warning.
    pub fn warn(text: impl Into<String>) -> Note {
        Note {
            kind: "warn",
            text: text.into(),
        }
    }
    /// An error the user can read (the command itself was understood).
    pub fn error(text: impl Into<String>) -> Note {
        Note {
            kind: "error",
            text: text.into(),
        }
    }
}

/// What one step of a command answers.
#[derive(Debug)]
pub enum Outcome {
    /// Another form: the session goes on at `stage`.
    Continue {
        /// The stage the form belongs to.
        stage: u8,
        /// A choice carried to later stages.
        choice: Option<String>,
        /// The form.
        form: Element,
        /// Actions allowed next; the first is the default (`execute`).
        actions: &'static [&'static str],
        /// Notes.
        notes: Vec<Note>,
    },
    /// Finished.
    Done {
        /// A result form, if any.
        payload: Option<Element>,
        /// Notes.
        notes: Vec<Note>,
    },
}

/// The action of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `next`.
    Next,
    /// `prev`.
    Prev,
    /// `complete`.
    Complete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Next => "next",
            Action::Prev => "prev",
            Action::Complete => "complete",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        match s {
            "next" => Some(Action::Next),
            "prev" => Some(Action::Prev),
            "complete" => Some(Action::Complete),
            _ => None,
        }
    }
}

/// The XEP-0050 error `condition` with the commands namespace's own
/// condition `specific` (`bad-action`, `bad-payload`, `bad-sessionid` …).
pub fn xep_error(
    kind: ErrorType,
    condition: Condition,
    specific: Option<&str>,
    text: impl Into<String>,
) -> StanzaError {
    let mut e = StanzaError::new(kind, condition, text);
    e.extra = specific.map(|s| Box::new(Element::new(s, NS_COMMANDS)));
    e
}

/// `modify/bad-request` + `<bad-payload/>`.
pub fn bad_payload(text: impl Into<String>) -> StanzaError {
    xep_error(
        ErrorType::Modify,
        Condition::BadRequest,
        Some("bad-payload"),
        text,
    )
}

/// The transfer log could not answer.
pub fn log_unavailable(e: &(dyn std::error::Error + 'static)) -> StanzaError {
    tracing::warn!(error = %Chain(e), "ad-hoc command failed: transfer log unavailable");
    StanzaError::resource_constraint("The transfer log is unavailable; try again shortly.")
}

/// What the commands need.
pub struct Commands {
    /// The transfer log (files, holds, removals).
    pub log: TransferLog,
    /// This node's store (deletions).
    pub store: Store,
    /// This node's name.
    pub node: String,
    /// The retention floor users cannot undercut.
    pub floor: RetentionFloor,
    /// Retention by chat type (what a listing says a file is kept until).
    pub rules: RetentionRules,
    /// Administrators' bare JIDs.
    pub admins: Vec<String>,
    /// Domains whose users may run commands.
    pub allowed_domains: Vec<String>,
    /// Unfinished sessions.
    pub sessions: Sessions,
}

impl Commands {
    /// The requester, when `from` is a user of a domain this service serves.
    fn requester(&self, iq: &Element) -> Option<Requester> {
        let jid = Jid::parse(iq.get_attr("from")?)?;
        jid.local()?;
        if !self.allowed_domains.iter().any(|d| d == jid.domain()) {
            return None;
        }
        Some(Requester {
            full: jid.to_string(),
            bare: jid.bare(),
        })
    }

    fn is_admin(&self, who: &Requester) -> bool {
        self.admins.contains(&who.bare)
    }

    /// The commands `iq`'s sender may run: all users get theirs,
    /// administrators theirs too; others none.
    fn offered_to(&self, iq: &Element) -> Vec<Command> {
        let Some(who) = self.requester(iq) else {
            return Vec::new();
        };
        Command::ALL
            .into_iter()
            .filter(|c| !c.for_admins() || self.is_admin(&who))
            .collect()
    }

    /// disco#items on the commands node.
    pub fn disco_items(&self, iq: &Element) -> Element {
        let me = iq.get_attr("to").unwrap_or("");
        let mut query = Element::new("query", NS_DISCO_ITEMS).attr("node", NS_COMMANDS);
        for c in self.offered_to(iq) {
            query = query.child(
                Element::new("item", NS_DISCO_ITEMS)
                    .attr("jid", me)
                    .attr("node", c.node())
                    .attr("name", c.name()),
            );
        }
        query
    }

    /// disco#info on a node: the commands list, or one command the sender
    /// may run; `None` for any other node.
    pub fn node_info(&self, iq: &Element, node: &str) -> Option<Element> {
        let query = Element::new("query", NS_DISCO_INFO).attr("node", node);
        let identity = |kind: &str, name: &str| {
            Element::new("identity", NS_DISCO_INFO)
                .attr("category", "automation")
                .attr("type", kind)
                .attr("name", name)
        };
        let feature = |var: &str| Element::new("feature", NS_DISCO_INFO).attr("var", var);
        if node == NS_COMMANDS {
            return Some(query.child(identity("command-list", "Commands")));
        }
        let c = Command::from_node(node).filter(|c| self.offered_to(iq).contains(c))?;
        Some(
            query
                .child(identity("command-node", c.name()))
                .child(feature(NS_COMMANDS))
                .child(feature(form::NS_DATA)),
        )
    }

    /// Answers one `<command/>` IQ set.
    pub async fn execute(&self, iq: &Element) -> Element {
        let Some(command) = iq.get_child("command", NS_COMMANDS) else {
            return bad_payload("").reply_to(iq);
        };
        match self.step(iq, command).await {
            Ok(reply) => reply,
            // The request's node and session go back with the error (no
            // form, nothing else echoed): clients match an error to the
            // command it answers by them, and without them some drop it
            // without telling their user.
            Err(e) => e.reply_echoing(iq, &command_echo(command)),
        }
    }

    async fn step(&self, iq: &Element, command: &Element) -> Result<Element, StanzaError> {
        let Some(who) = self.requester(iq) else {
            tracing::info!(
                from = iq.get_attr("from"),
                "ad-hoc command refused: not a user of this service"
            );
            return Err(StanzaError::forbidden(
                "Only users of this service's domains may run its commands.",
            ));
        };
        let node = command.get_attr("node").unwrap_or("");
        let Some(cmd) = Command::from_node(node) else {
            return Err(StanzaError::item_not_found(
                "There is no command with that node.",
            ));
        };
        if cmd.for_admins() && !self.is_admin(&who) {
            tracing::info!(from = %who.full, node, "ad-hoc command refused: not an administrator");
            return Err(StanzaError::forbidden(
                "This command is for the service's administrators.",
            ));
        }
        let action = match command.get_attr("action") {
            None | Some("execute") => None,
            Some("cancel") => Some(Err(())),
            Some(a) => Some(Ok(Action::parse(a).ok_or_else(|| {
                xep_error(
                    ErrorType::Modify,
                    Condition::BadRequest,
                    Some("malformed-action"),
                    "The action must be execute, next, prev, complete or cancel.",
                )
            })?)),
        };
        let Some(id) = command.get_attr("sessionid") else {
            if action.is_some() {
                return Err(bad_sessionid());
            }
            let outcome = self.start(cmd, &who).await?;
            return Ok(self.answer(iq, cmd, &who, None, outcome));
        };
        let session = self
            .sessions
            .take(id, &who.full, cmd.node())
            .map_err(|l| match l {
                Lookup::Unknown => bad_sessionid(),
                Lookup::Expired => xep_error(
                    ErrorType::Cancel,
                    Condition::NotAllowed,
                    Some("session-expired"),
                    "This command's session timed out; start the command again.",
                ),
            })?;
        let action = match action {
            Some(Err(())) => {
                tracing::debug!(from = %who.full, node, "ad-hoc command canceled");
                return Ok(iq_result(iq, Some(response(cmd, id, "canceled"))));
            }
            Some(Ok(a)) => a,
            // `execute` in a session: the stage's default action.
            None => session
                .actions
                .first()
                .and_then(|a| Action::parse(a))
                .unwrap_or(Action::Complete),
        };
        let action = forward_as_offered(action, session.actions);
        if !session.actions.contains(&action.as_str()) {
            let allowed = session.actions.join(", ");
            self.sessions.keep(id, session);
            return Err(xep_error(
                ErrorType::Modify,
                Condition::BadRequest,
                Some("bad-action"),
                format!("At this step the command takes: {allowed}."),
            ));
        }
        match self.advance(cmd, &who, &session, action, command).await {
            Ok(outcome) => Ok(self.answer(iq, cmd, &who, Some(id), outcome)),
            Err(e) => {
                // A payload the client can correct keeps the session.
                if e.kind == ErrorType::Modify {
                    self.sessions.keep(id, session);
                }
                Err(e)
            }
        }
    }

    async fn start(&self, cmd: Command, who: &Requester) -> Result<Outcome, StanzaError> {
        match cmd {
            Command::ListUploads => user::list(self, who).await,
            Command::DeleteUpload => user::delete_form(self, who).await,
            Command::Holds => Ok(admin::holds_start(None)),
            Command::Usage => Ok(admin::usage_form(Vec::new())),
        }
    }

    async fn advance(
        &self,
        cmd: Command,
        who: &Requester,
        session: &Session,
        action: Action,
        command: &Element,
    ) -> Result<Outcome, StanzaError> {
        match cmd {
            Command::ListUploads => user::list(self, who).await,
            Command::DeleteUpload => user::delete(self, who, command).await,
            Command::Holds => admin::holds_step(self, who, session, action, command).await,
            Command::Usage => admin::usage(self, command).await,
        }
    }

    /// The IQ result for `outcome`, opening or keeping the session.
    fn answer(
        &self,
        iq: &Element,
        cmd: Command,
        who: &Requester,
        id: Option<&str>,
        outcome: Outcome,
    ) -> Element {
        match outcome {
            Outcome::Done { payload, notes } => {
                let id = id.map_or_else(session::new_id, str::to_owned);
                let mut el = response(cmd, &id, "completed");
                for n in notes {
                    el = el.child(note(&n));
                }
                if let Some(p) = payload {
                    el = el.child(p);
                }
                iq_result(iq, Some(el))
            }
            Outcome::Continue {
                stage,
                choice,
                form,
                actions,
                notes,
            } => {
                let session = Session {
                    owner: who.full.clone(),
                    owner_bare: who.bare.clone(),
                    node: cmd.node().to_owned(),
                    stage,
                    choice,
                    actions,
                };
                let id = match id {
                    Some(id) => {
                        self.sessions.keep(id, session);
                        id.to_owned()
                    }
                    None => match self.sessions.open(session) {
                        Ok(id) => id,
                        Err(session::Full) => {
                            return StanzaError::resource_constraint(
                                "Too many unfinished commands; finish or cancel one first.",
                            )
                            .reply_to(iq)
                        }
                    },
                };
                let mut el = response(cmd, &id, "executing");
                let mut acts = Element::new("actions", NS_COMMANDS);
                if let Some(first) = actions.first() {
                    acts.set_attr("execute", *first);
                }
                for a in actions {
                    acts = acts.child(Element::new(a, NS_COMMANDS));
                }
                el = el.child(acts);
                for n in notes {
                    el = el.child(note(&n));
                }
                iq_result(iq, Some(el.child(form)))
            }
        }
    }
}

/// `next` where the step offers only `complete` (and the reverse) is
/// taken as the step's way forward: clients such as poezio always send
/// `next` to submit a form, whatever `<actions/>` offered. `prev` is
/// never guessed.
fn forward_as_offered(action: Action, offered: &[&str]) -> Action {
    let forward = |a: Action| matches!(a, Action::Next | Action::Complete);
    if !forward(action) || offered.contains(&action.as_str()) {
        return action;
    }
    let other = if action == Action::Next {
        Action::Complete
    } else {
        Action::Next
    };
    if offered.contains(&other.as_str()) {
        other
    } else {
        action
    }
}

fn bad_sessionid() -> StanzaError {
    xep_error(
        ErrorType::Modify,
        Condition::BadRequest,
        Some("bad-sessionid"),
        "No such session: it finished, belongs to someone else, or never existed; start the command again.",
    )
}

/// `<command/>` with only the request's `node` and `sessionid`.
fn command_echo(command: &Element) -> Element {
    let mut echo = Element::new("command", NS_COMMANDS);
    for key in ["node", "sessionid"] {
        if let Some(v) = command.get_attr(key) {
            echo.set_attr(key, v);
        }
    }
    echo
}

fn response(cmd: Command, id: &str, status: &str) -> Element {
    Element::new("command", NS_COMMANDS)
        .attr("node", cmd.node())
        .attr("sessionid", id)
        .attr("status", status)
}

fn note(n: &Note) -> Element {
    Element::new("note", NS_COMMANDS)
        .attr("type", n.kind)
        .text(n.text.clone())
}

/// `2026-11-26 09:14 UTC`.
pub fn when(t: SystemTime) -> String {
    let u = mft_common::utc::UtcTime::from_system(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        u.year, u.month, u.day, u.hour, u.minute
    )
}

/// `1.5 MiB (1572864 bytes)`.
pub fn size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    let (v, unit) = if b >= 1024.0 * 1024.0 * 1024.0 {
        (b / (1024.0 * 1024.0 * 1024.0), "GiB")
    } else if b >= 1024.0 * 1024.0 {
        (b / (1024.0 * 1024.0), "MiB")
    } else if b >= 1024.0 {
        (b / 1024.0, "KiB")
    } else {
        return format!("{bytes} bytes");
    };
    format!("{v:.1} {unit} ({bytes} bytes)")
}

pub use mft_common::units::spoken as span;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_round_trip_and_admin_commands_are_marked() {
        for c in Command::ALL {
            assert_eq!(Command::from_node(c.node()), Some(c));
        }
        assert_eq!(Command::from_node("nope"), None);
        assert!(Command::Holds.for_admins() && Command::Usage.for_admins());
        assert!(!Command::ListUploads.for_admins() && !Command::DeleteUpload.for_admins());
    }

    #[test]
    fn figures_read_as_people_say_them() {
        assert_eq!(size(12), "12 bytes");
        assert_eq!(size(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(span(std::time::Duration::from_secs(7 * 86_400)), "7 days");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_148_440);
        assert_eq!(when(t), "2025-11-26 09:14 UTC");
    }

    #[test]
    fn a_forward_action_is_taken_as_the_one_the_step_offers() {
        let c = |a| forward_as_offered(a, &["complete"]);
        assert_eq!(c(Action::Next), Action::Complete);
        assert_eq!(c(Action::Complete), Action::Complete);
        assert_eq!(c(Action::Prev), Action::Prev);
        let n = |a| forward_as_offered(a, &["next", "prev"]);
        assert_eq!(n(Action::Complete), Action::Next);
        assert_eq!(n(Action::Prev), Action::Prev);
        let both = |a| forward_as_offered(a, &["next", "complete"]);
        assert_eq!(both(Action::Next), Action::Next);
        assert_eq!(both(Action::Complete), Action::Complete);
    }

    #[test]
    fn an_error_names_the_command_and_session_it_answers() {
        let command = Element::new("command", NS_COMMANDS)
            .attr("node", "delete-upload")
            .attr("sessionid", "abc")
            .attr("action", "next")
            .child(Element::new("x", form::NS_DATA));
        let iq = Element::new("iq", crate::link::NS_COMPONENT)
            .attr("type", "set")
            .attr("id", "1")
            .child(command.clone());
        let xml = bad_sessionid()
            .reply_echoing(&iq, &command_echo(&command))
            .to_xml(crate::link::NS_COMPONENT);
        assert!(
            xml.contains("<command xmlns='http://jabber.org/protocol/commands' node='delete-upload' sessionid='abc'/>"),
            "{xml}"
        );
        assert!(
            !xml.contains("jabber:x:data"),
            "the form is not echoed: {xml}"
        );
    }

    #[test]
    fn xep_errors_carry_the_commands_condition() {
        let iq = Element::new("iq", crate::link::NS_COMPONENT)
            .attr("type", "set")
            .attr("id", "1");
        let xml = bad_sessionid()
            .reply_to(&iq)
            .to_xml(crate::link::NS_COMPONENT);
        assert!(
            xml.contains("<bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<bad-sessionid xmlns='http://jabber.org/protocol/commands'/>"),
            "{xml}"
        );
    }
}
