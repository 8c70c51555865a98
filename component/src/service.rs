//! What the component answers: disco#info/#items, pings, slot requests
//! (policy, location, signed token, URLs), share reports, and — handed to
//! [`crate::adhoc`] — XEP-0050 ad-hoc commands. Every IQ get/set gets exactly one
//! answer; results and errors are never answered.

use std::time::Duration;

use mft_common::error::Chain;
use mft_storage::quota::{QuotaAnswer, QuotaScope, QuotaVerdict, Quotas};
use mft_storage::retention::RetentionFloor;
use mft_storage::transfer_log::TransferLog;
use mft_storage::Store;

use crate::adhoc::{Commands, NS_COMMANDS};
use crate::groups::GroupLimits;
use crate::policy::ChatRules;
use crate::policy::NS_DESTINATION;
use crate::rate::SlotRateLimiter;
use mft_upload_http::urls::slot_url;
use mft_upload_http::{SlotClaims, SlotSigner};

use crate::inbound::{Inbound, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING};
use crate::slot::{self, parse_request, Purpose, UPLOAD_NAMESPACES};
use crate::stanza::{iq_result, StanzaError};
use crate::xml::Element;
use mft_common::jid::Jid;
use mft_common::utc::{stamp, stamp_in};
use mft_metrics::{metrics, SlotOutcome};

const NS_DATA: &str = "jabber:x:data";

/// A refused slot request: the error the client gets and the reason it is
/// counted under.
struct Refusal {
    outcome: SlotOutcome,
    error: StanzaError,
}

/// Tags a stanza error with the outcome it is counted under.
fn refused(outcome: SlotOutcome) -> impl FnOnce(StanzaError) -> Refusal {
    move |error| Refusal { outcome, error }
}

/// How long a client is asked to wait when the file server is down.
const RETRY_AFTER_UNAVAILABLE: u64 = 30;

pub use crate::inbound::NS_SHARE;

/// How far back a queued share report may date its message: a router
/// module keeps reports while mftd is away, not for ever.
pub const SHARE_STAMP_MAX_AGE: u64 = 30 * 24 * 3600;

/// How far ahead of mftd's clock a share's stamp may be (clock skew).
const SHARE_STAMP_SKEW: u64 = 300;

/// The share a router module reported, checked. A `stamp` (XEP-0082) dates
/// a report the module queued while mftd was away; it must lie between
/// [`SHARE_STAMP_MAX_AGE`] ago and a few minutes ahead.
fn parse_share(
    el: &Element,
    reported_by: &str,
    now: u64,
) -> Option<mft_storage::transfer_log::Share> {
    let resource = mft_storage::Location::parse(el.get_attr("resource")?)?;
    let sender = Jid::parse(el.get_attr("sender")?)?;
    let recipient = Jid::parse(el.get_attr("recipient")?)?;
    let chat_type: mft_storage::ChatType = el.get_attr("chat-type")?.parse().ok()?;
    let sent_at = match el.get_attr("stamp") {
        None => None,
        Some(s) => {
            let at = mft_common::utc::UtcTime::parse_xep0082(s)?.unix;
            let plausible = at + SHARE_STAMP_MAX_AGE >= now && at <= now + SHARE_STAMP_SKEW;
            Some(plausible.then_some(at.min(now))?)
        }
    };
    Some(mft_storage::transfer_log::Share {
        resource: resource.resource().to_owned(),
        sender: sender.to_string(),
        recipient: recipient.bare(),
        chat_type: chat_type.as_str().to_owned(),
        reported_by: reported_by.to_owned(),
        sent_at,
    })
}

/// How long a granted slot may be used (XEP-0363 suggests 300 s);
/// `[limits] slot_ttl` by default.
pub const DEFAULT_SLOT_TTL: Duration = Duration::from_secs(300);

/// The upload service behind the component JID.
pub struct UploadService {
    /// Slot tokens.
    pub signer: SlotSigner,
    /// Where files go.
    pub store: Store,
    /// Base of slot URLs.
    pub public_url: String,
    /// Largest file in bytes.
    pub max_file_size: u64,
    /// How long PUT URLs stay valid.
    pub slot_ttl: Duration,
    /// Requesters' domains allowed to upload (lower case).
    pub allowed_domains: Vec<String>,
    /// Set while the file server is nearly full.
    pub space: crate::space::SpaceGuard,
    /// The transfer log, for quotas.
    pub log: Option<TransferLog>,
    /// Rolling 24-hour quotas.
    pub quotas: Quotas,
    /// Slot requests per user.
    pub slot_rate: SlotRateLimiter,
    /// Destination → chat type rules.
    pub chat: ChatRules,
    /// Offer `ephemeral` uploads (they also need the transfer log).
    pub allow_ephemeral: bool,
    /// Offer `permanent` uploads (exempt from age-based retention).
    pub allow_permanent: bool,
    /// The retention floor: an ephemeral upload may not ask to be gone
    /// before its chat type's floor has passed.
    pub floor: RetentionFloor,
    /// Router domains whose module may report shares, each for its own
    /// users' messages only (lower case).
    pub share_reporters: Vec<String>,
    /// Share reports per sender.
    pub share_rate: SlotRateLimiter,
    /// Share reports per reporting router.
    pub reporter_rate: SlotRateLimiter,
    /// Media types that may be uploaded (`limits.allowed_types`, `refused_types`).
    pub types: mft_upload_http::type_policy::TypePolicy,
    /// Limits per group of users (`[[limits.group]]`); the fields above
    /// are the limits of everyone in no group.
    pub groups: std::sync::Arc<GroupLimits>,
    /// XEP-0050 ad-hoc commands (`[adhoc]`), when offered: they need the
    /// transfer log.
    pub commands: Option<std::sync::Arc<Commands>>,
}

/// The limits that apply to one requester: their group's, or the
/// service's defaults.
pub struct Applied<'a> {
    /// The group, when the requester is in one.
    pub group: Option<&'a str>,
    /// Largest file in bytes.
    pub max_file_size: u64,
    /// The quotas their uploads count against.
    pub quotas: Quotas,
    /// Their slot request buckets.
    pub slot_rate: &'a SlotRateLimiter,
    /// `ephemeral` uploads offered.
    pub allow_ephemeral: bool,
    /// `permanent` uploads offered.
    pub allow_permanent: bool,
}

/// Share reports one sender may cause a minute (and at once); a message
/// carries a handful of files, a flood of them is not a conversation.
pub const SHARES_PER_SENDER_MINUTE: u32 = 120;
/// Share reports one router may send a minute (and at once).
pub const SHARES_PER_REPORTER_MINUTE: u32 = 12_000;

impl UploadService {
    /// A service with the defaults of an empty `[limits]`, no transfer log,
    /// no quotas and no chat rules; callers adjust the public fields.
    pub fn new(
        signer: SlotSigner,
        store: Store,
        public_url: &str,
        allowed_domains: Vec<String>,
    ) -> UploadService {
        UploadService {
            share_reporters: allowed_domains.clone(),
            signer,
            store,
            public_url: public_url.to_owned(),
            max_file_size: slot::MAX_FILE_SIZE_CAP,
            slot_ttl: DEFAULT_SLOT_TTL,
            allowed_domains,
            space: crate::space::SpaceGuard::default(),
            log: None,
            quotas: Quotas::default(),
            slot_rate: SlotRateLimiter::new(0, 1),
            chat: ChatRules::default(),
            allow_ephemeral: true,
            allow_permanent: false,
            floor: RetentionFloor::default(),
            share_rate: SlotRateLimiter::new(SHARES_PER_SENDER_MINUTE, SHARES_PER_SENDER_MINUTE),
            reporter_rate: SlotRateLimiter::new(
                SHARES_PER_REPORTER_MINUTE,
                SHARES_PER_REPORTER_MINUTE / 10,
            ),
            types: Default::default(),
            groups: Default::default(),
            commands: None,
        }
    }

    /// The limits that apply to `requester` (the stanza's `from`; `None`
    /// when it has none or it is no JID: the defaults).
    pub fn limits_for(&self, requester: Option<&Jid>) -> Applied<'_> {
        match requester.and_then(|j| self.groups.for_jid(j)) {
            Some(m) => {
                let l = &m.group.limits;
                Applied {
                    group: Some(m.group.name.as_str()),
                    max_file_size: l.max_file_size,
                    quotas: Quotas {
                        per_user: l.per_user_daily,
                        global: self.quotas.global,
                    },
                    slot_rate: &m.group.slot_rate,
                    allow_ephemeral: l.allow_ephemeral,
                    allow_permanent: l.allow_permanent,
                }
            }
            None => Applied {
                group: None,
                max_file_size: self.max_file_size,
                quotas: self.quotas,
                slot_rate: &self.slot_rate,
                allow_ephemeral: self.allow_ephemeral,
                allow_permanent: self.allow_permanent,
            },
        }
    }

    /// The reply to one inbound stanza, if it needs one. The IQ is read
    /// once into what it asks ([`Inbound`]) and answered by a `match`.
    pub async fn handle(&self, stanza: &Element) -> Option<Element> {
        let reply = match Inbound::of(stanza)? {
            Inbound::DiscoInfo { node: None } => iq_result(
                stanza,
                Some(self.disco_info(
                    &self.limits_for(Jid::parse(stanza.get_attr("from").unwrap_or("")).as_ref()),
                )),
            ),
            Inbound::DiscoInfo { node: Some(node) } => match self
                .commands
                .as_ref()
                .and_then(|c| c.node_info(stanza, node))
            {
                Some(info) => iq_result(stanza, Some(info)),
                None => StanzaError::item_not_found("No such node.").reply_to(stanza),
            },
            Inbound::DiscoItems { query } => {
                iq_result(stanza, Some(self.disco_items(stanza, Some(query))))
            }
            Inbound::Command => match &self.commands {
                Some(commands) => commands.execute(stanza).await,
                None => StanzaError::service_unavailable().reply_to(stanza),
            },
            Inbound::Ping => iq_result(stanza, None),
            Inbound::Slot { ns, request } => self.slot(stanza, ns, request).await,
            Inbound::Share { share } => match self.share(stanza, share).await {
                Ok(()) => iq_result(stanza, None),
                Err(e) => e.reply_to(stanza),
            },
            Inbound::Unsupported => StanzaError::service_unavailable().reply_to(stanza),
        };
        Some(reply)
    }

    /// Records a share reported by a trusted router module: a message
    /// carrying one of our URLs went from `sender` to `recipient`. Only a
    /// router listed in `share_reporters` may report, and only for messages
    /// of its own users (the sender's domain is the reporter's); anyone else
    /// gets `forbidden` and nothing is written. A share of a file mftd does
    /// not hold is `item-not-found`; reports past the per-sender or
    /// per-router rate get `wait` + `resource-constraint`.
    async fn share(&self, iq: &Element, share: &Element) -> Result<(), StanzaError> {
        let from = iq.get_attr("from").unwrap_or("");
        let reporter = Jid::parse(from)
            .filter(Jid::is_domain)
            .map(|j| j.domain().to_owned())
            .filter(|d| self.share_reporters.iter().any(|r| r == d));
        let Some(reporter) = reporter else {
            tracing::warn!(
                from,
                "share report refused: not from a router listed in recipients.reporters"
            );
            return Err(StanzaError::forbidden(
                "Only the server's own module may report shares.",
            ));
        };
        let Some(log) = &self.log else {
            return Err(StanzaError::service_unavailable());
        };
        let share = parse_share(share, from, mft_common::utc::unix_now())
            .ok_or_else(|| {
                StanzaError::bad_request(
                    "A share needs resource, sender, recipient and chat-type, and a stamp (if any) within the last 30 days.",
                )
            })?;
        let sender_domain = Jid::parse(&share.sender).map(|j| j.domain().to_owned());
        if sender_domain.as_deref() != Some(reporter.as_str()) {
            tracing::warn!(
                from,
                sender = share.sender.as_str(),
                "share report refused: the sender is not the reporter's user"
            );
            return Err(StanzaError::forbidden(
                "A server may report only its own users' messages.",
            ));
        }
        let sender = mft_common::jid::bare_or_raw(&share.sender);
        if self.reporter_rate.take(&reporter).is_err() || self.share_rate.take(&sender).is_err() {
            tracing::warn!(
                reporter = reporter.as_str(),
                sender = sender.as_str(),
                "share report refused: too many shares"
            );
            return Err(StanzaError::resource_constraint(
                "Too many share reports; slow down.",
            ));
        }
        match log.record_share(&share).await {
            Ok(true) => {
                tracing::info!(
                    resource = share.resource.as_str(),
                    sender = share.sender.as_str(),
                    recipient = share.recipient.as_str(),
                    chat_type = share.chat_type.as_str(),
                    "share recorded"
                );
                Ok(())
            }
            Ok(false) => {
                tracing::info!(
                    resource = share.resource.as_str(),
                    sender = share.sender.as_str(),
                    "share refused: no such file"
                );
                Err(StanzaError::item_not_found("No such file."))
            }
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "share not recorded: transfer log unavailable");
                Err(StanzaError::resource_constraint(
                    "The transfer log is unavailable.",
                ))
            }
        }
    }

    /// disco#items: nothing at the top; the ad-hoc commands the asker may
    /// run on the commands node (XEP-0050).
    fn disco_items(&self, stanza: &Element, payload: Option<&Element>) -> Element {
        match (payload.and_then(|p| p.get_attr("node")), &self.commands) {
            (Some(NS_COMMANDS), Some(commands)) => commands.disco_items(stanza),
            (Some(node), _) => Element::new("query", NS_DISCO_ITEMS).attr("node", node),
            (None, _) => Element::new("query", NS_DISCO_ITEMS),
        }
    }

    /// The XEP-0363 1.2 purposes offered, exactly as disco#info lists them:
    /// ephemeral needs the administrator's consent and the transfer log (its
    /// expiry is kept there), permanent the administrator's consent.
    fn purposes(&self, applied: &Applied<'_>) -> Vec<&'static str> {
        let mut offered = vec!["message", "profile"];
        if applied.allow_ephemeral && self.log.is_some() {
            offered.push("ephemeral");
        }
        if applied.allow_permanent {
            offered.push("permanent");
        }
        offered
    }

    /// disco#info as the asker sees it: their group's largest file and
    /// purposes.
    fn disco_info(&self, applied: &Applied<'_>) -> Element {
        let mut query = Element::new("query", NS_DISCO_INFO).child(
            Element::new("identity", NS_DISCO_INFO)
                .attr("category", "store")
                .attr("type", "file")
                .attr("name", "HTTP File Upload"),
        );
        let commands = self.commands.as_ref().map(|_| NS_COMMANDS);
        for feature in [NS_DISCO_INFO, NS_PING]
            .into_iter()
            .chain(commands)
            .chain(UPLOAD_NAMESPACES)
        {
            query = query.child(Element::new("feature", NS_DISCO_INFO).attr("var", feature));
        }
        for purpose in self.purposes(applied) {
            query = query.child(
                Element::new("feature", NS_DISCO_INFO).attr("var", Purpose::feature(purpose)),
            );
        }
        for ns in UPLOAD_NAMESPACES {
            let field = |var: &str, value: &str| {
                Element::new("field", NS_DATA)
                    .attr("var", var)
                    .child(Element::new("value", NS_DATA).text(value))
            };
            let form = Element::new("x", NS_DATA)
                .attr("type", "result")
                .child(field("FORM_TYPE", ns).attr("type", "hidden"))
                .child(field("max-file-size", &applied.max_file_size.to_string()));
            query = query.child(form);
        }
        query
    }

    /// Counts the slot against the rolling quotas (reserving it until it
    /// expires); refuses with `wait` + retry stamp, or `not-acceptable` when
    /// the file could never fit.
    async fn reserve_quota(
        &self,
        ns: &'static str,
        resource: &str,
        uploader: &str,
        size: u64,
        expires: u64,
        quotas: Quotas,
    ) -> Result<(), Refusal> {
        let Some(log) = self.log.as_ref().filter(|_| !quotas.is_unlimited()) else {
            return Ok(());
        };
        let expires_at = std::time::UNIX_EPOCH + Duration::from_secs(expires);
        let verdict = log
            .reserve(resource, uploader, size, expires_at, quotas)
            .await
            .map_err(|e| {
                tracing::warn!(error = %Chain(&e), "slot refused: cannot read quotas from the database");
                refused(SlotOutcome::LogDown)(slot::retry_later(
                    ns,
                    "The transfer log is unavailable; try again shortly.",
                    &stamp_in(RETRY_AFTER_UNAVAILABLE),
                ))
            })?;
        let QuotaVerdict::Refused {
            scope,
            quota,
            answer,
        } = verdict
        else {
            return Ok(());
        };
        let scope = match scope {
            QuotaScope::User => "your",
            QuotaScope::Global => "the server's",
        };
        let error = match answer {
            QuotaAnswer::RetryAt(at) => {
                let stamp = stamp(at);
                tracing::info!(uploader, size, quota, retry = %stamp, "slot refused: quota");
                slot::retry_later(
                    ns,
                    &format!("This upload would exceed {scope} daily quota of {quota} bytes; it fits again at {stamp}."),
                    &stamp,
                )
            }
            _ => StanzaError::not_acceptable(format!(
                "The file is larger than {scope} daily upload quota of {quota} bytes."
            )),
        };
        Err(refused(SlotOutcome::Quota)(error))
    }

    async fn slot(&self, iq: &Element, ns: &'static str, request: &Element) -> Element {
        let started = std::time::Instant::now();
        let (outcome, reply) = match self.grant(iq, ns, request).await {
            Ok(slot) => (SlotOutcome::Granted, iq_result(iq, Some(slot))),
            Err(Refusal { outcome, error }) => (outcome, error.reply_echoing(iq, request)),
        };
        metrics().slot_answered(outcome, started.elapsed());
        reply
    }

    /// One slot request from `uploader`, against this node's bucket and,
    /// with a transfer log, the service-wide one. A log that cannot answer
    /// leaves the node's own limit in force.
    async fn take_slot_request(
        &self,
        uploader: &str,
        slot_rate: &SlotRateLimiter,
    ) -> Result<(), std::time::Duration> {
        slot_rate.take(uploader)?;
        let (per_minute, burst) = slot_rate.limits();
        let Some(log) = self.log.as_ref().filter(|_| per_minute > 0) else {
            return Ok(());
        };
        match log.take_slot_token(uploader, per_minute, burst).await {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => Err(wait),
            Err(e) => {
                tracing::warn!(error = %Chain(&e), "shared slot rate unavailable; this node's own limit applies");
                Ok(())
            }
        }
    }

    /// Refuses an ephemeral upload that asks to be gone before the retention
    /// floor of its chat type: `modify/not-acceptable`, saying the earliest
    /// `expire-before` that would be accepted. Refused rather than stretched
    /// to the floor: the client promised its user the file would be gone by
    /// then, and only the client can tell the user otherwise.
    fn check_floor(
        &self,
        from: &str,
        chat: mft_storage::ChatType,
        expire_before: u64,
    ) -> Result<(), Refusal> {
        let floor = self.floor.for_chat(chat.as_str());
        let earliest = mft_common::utc::unix_now() + floor.as_secs();
        if expire_before >= earliest {
            return Ok(());
        }
        let earliest = mft_common::utc::UtcTime::from_unix(earliest).xep0082();
        tracing::info!(
            from,
            chat_type = chat.as_str(),
            earliest = earliest.as_str(),
            "slot refused: ephemeral expiry before the retention floor"
        );
        Err(refused(SlotOutcome::BadRequest)(StanzaError::not_acceptable(format!(
            "Files here are kept at least {} ({} chats) by policy; ask for expire-before {earliest} or later.",
            mft_common::units::spoken(floor),
            chat.as_str()
        ))))
    }

    async fn grant(
        &self,
        iq: &Element,
        ns: &'static str,
        req: &Element,
    ) -> Result<Element, Refusal> {
        let from = iq.get_attr("from").unwrap_or("");
        let requester = Jid::parse(from);
        let allowed = requester
            .as_ref()
            .is_some_and(|j| crate::groups::domain_allowed(&self.allowed_domains, j));
        let (Some(requester), true) = (requester, allowed) else {
            tracing::info!(from, "slot refused: domain not allowed");
            return Err(refused(SlotOutcome::Forbidden)(StanzaError::forbidden(
                "Users of your server may not upload files here.",
            )));
        };
        let uploader = requester.bare();
        let applied = self.limits_for(Some(&requester));
        let group = applied.group.unwrap_or("");
        if let Err(wait) = self.take_slot_request(&uploader, applied.slot_rate).await {
            tracing::info!(from, "slot refused: too many slot requests");
            return Err(refused(SlotOutcome::RateLimited)(slot::retry_later(
                ns,
                "Too many upload requests; slow down.",
                &stamp_in(wait.as_secs().max(1)),
            )));
        }
        let request = parse_request(ns, req).map_err(refused(SlotOutcome::BadRequest))?;
        if !self.purposes(&applied).contains(&request.purpose.name()) {
            tracing::info!(
                from,
                group,
                purpose = request.purpose.name(),
                "slot refused: purpose not offered"
            );
            return Err(refused(SlotOutcome::BadRequest)(
                StanzaError::feature_not_implemented(format!(
                    "Uploads for the purpose {:?} are not offered by this service.",
                    request.purpose.name()
                )),
            ));
        }
        if request.size > applied.max_file_size {
            tracing::info!(
                from,
                group,
                size = request.size,
                max = applied.max_file_size,
                "slot refused: too large"
            );
            return Err(refused(SlotOutcome::TooLarge)(slot::too_large(
                ns,
                applied.max_file_size,
            )));
        }
        if let Err(why) = self.types.check(request.content_type.as_deref()) {
            tracing::info!(from, content_type = ?request.content_type, "slot refused: content type");
            return Err(refused(SlotOutcome::TypeRefused)(
                StanzaError::not_acceptable(why),
            ));
        }
        let retry_stamp = || stamp_in(RETRY_AFTER_UNAVAILABLE);
        if !self.store.is_available() {
            tracing::warn!(from, "slot refused: file server unavailable");
            return Err(refused(SlotOutcome::StoreDown)(slot::retry_later(
                ns,
                "The file server is unavailable; try again shortly.",
                &retry_stamp(),
            )));
        }
        if self.space.is_low() {
            tracing::warn!(from, "slot refused: file server nearly full");
            return Err(refused(SlotOutcome::StoreFull)(slot::retry_later(
                ns,
                "The file server is full; try again later.",
                &retry_stamp(),
            )));
        }
        let destination = match req
            .get_child("destination", NS_DESTINATION)
            .and_then(|d| d.get_attr("jid"))
            .filter(|d| !d.trim().is_empty())
        {
            None => None,
            Some(d) => Some(Jid::parse(d).ok_or_else(|| {
                refused(SlotOutcome::BadRequest)(StanzaError::bad_request(
                    "The destination is not a valid JID.",
                ))
            })?),
        };
        let chat = crate::policy::chat_type(&self.chat, destination.as_ref());
        if let Purpose::Ephemeral { expire_before } = request.purpose {
            self.check_floor(from, chat, expire_before)?;
        }
        let loc = self.store.allocate(chat).await.map_err(|e| {
            tracing::warn!(error = %Chain(&e), "slot refused: file server unavailable");
            refused(SlotOutcome::StoreDown)(slot::retry_later(
                ns,
                "The file server is unavailable; try again shortly.",
                &retry_stamp(),
            ))
        })?;
        let expires = mft_common::utc::unix_now() + self.slot_ttl.as_secs();
        self.reserve_quota(
            ns,
            loc.resource(),
            &uploader,
            request.size,
            expires,
            applied.quotas,
        )
        .await?;
        let claims = SlotClaims {
            resource: loc.resource().to_owned(),
            filename: request.filename.clone(),
            size: request.size,
            content_type: request.content_type.clone(),
            uploader: from.to_owned(),
            to: destination.map(|d| d.to_string()).unwrap_or_default(),
            expires,
            purpose: (request.purpose != Purpose::Message)
                .then(|| request.purpose.name().to_owned()),
            expire_before: match request.purpose {
                Purpose::Ephemeral { expire_before } => Some(expire_before),
                _ => None,
            },
        };
        let token = self.signer.sign(&claims);
        let url = slot_url(&self.public_url, loc.resource(), &request.filename);
        tracing::info!(
            from,
            group,
            size = request.size,
            resource = loc.resource(),
            "slot granted"
        );
        Ok(slot::slot_element(ns, &url, &url, &token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::NS_COMPONENT;
    use mft_storage::local::LocalBackend;

    fn service(dir: &std::path::Path) -> UploadService {
        let mut svc = UploadService::new(
            SlotSigner::new(b"unit-test-key-0123456789"),
            Store::new(LocalBackend::new(dir).expect("store")),
            "https://up.example.test/",
            vec!["example.test".into()],
        );
        svc.max_file_size = 1000;
        svc
    }

    #[test]
    fn a_share_stamp_dates_a_late_report_within_bounds() {
        let now = 2_000_000_000;
        let share = |stamp: Option<&str>| {
            let mut el = Element::new("share", NS_SHARE)
                .attr("resource", "20261204-22-im-AAAAAAAAAAAAAAAAAAAAAA")
                .attr("sender", "alice@example.test/phone")
                .attr("recipient", "bob@example.test")
                .attr("chat-type", "im");
            if let Some(s) = stamp {
                el = el.attr("stamp", s);
            }
            parse_share(&el, "example.test", now)
        };
        let at = |unix: u64| mft_common::utc::UtcTime::from_unix(unix).xep0082();
        assert_eq!(share(None).expect("no stamp").sent_at, None);
        let hour_ago = share(Some(&at(now - 3600))).expect("an hour ago");
        assert_eq!(hour_ago.sent_at, Some(now - 3600));
        // A little clock skew is the present, never the future.
        assert_eq!(share(Some(&at(now + 60))).expect("skew").sent_at, Some(now));
        assert!(share(Some(&at(now + 3600))).is_none(), "an hour ahead");
        assert!(
            share(Some(&at(now - SHARE_STAMP_MAX_AGE - 1))).is_none(),
            "too old"
        );
        assert!(share(Some("yesterday")).is_none(), "not a date");
    }

    fn iq(kind: &str, payload: Element) -> Element {
        Element::new("iq", NS_COMPONENT)
            .attr("type", kind)
            .attr("id", "x1")
            .attr("from", "alice@example.test/phone")
            .attr("to", "upload.example.test")
            .child(payload)
    }

    #[tokio::test]
    async fn errors_results_messages_and_presence_are_never_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path());
        let ping = Element::new("ping", NS_PING);
        assert!(svc.handle(&iq("error", ping.clone())).await.is_none());
        assert!(svc.handle(&iq("result", ping.clone())).await.is_none());
        let message = Element::new("message", NS_COMPONENT).attr("type", "error");
        assert!(svc.handle(&message).await.is_none());
        assert!(svc
            .handle(&Element::new("presence", NS_COMPONENT))
            .await
            .is_none());
        let pong = svc.handle(&iq("get", ping)).await.expect("ping answered");
        assert_eq!(pong.get_attr("type"), Some("result"));
        assert_eq!(pong.get_attr("to"), Some("alice@example.test/phone"));
        assert_eq!(pong.get_attr("from"), Some("upload.example.test"));
        assert_eq!(pong.get_attr("id"), Some("x1"));
    }

    #[tokio::test]
    async fn a_user_cannot_report_a_share() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path());
        let share = Element::new("share", NS_SHARE)
            .attr("resource", "20261126-08-im-AAAAAAAAAAAAAAAAAAAAAA")
            .attr("sender", "alice@example.test/phone")
            .attr("recipient", "bob@example.test")
            .attr("chat-type", "im");
        // From a user (the default `from` of these tests): forbidden.
        let reply = svc.handle(&iq("set", share.clone())).await.expect("answer");
        assert!(
            reply.to_xml(NS_COMPONENT).contains("<forbidden"),
            "{}",
            reply.to_xml(NS_COMPONENT)
        );
        // From another server: forbidden too.
        let mut other = iq("set", share.clone());
        other.set_attr("from", "other.test");
        let reply = svc.handle(&other).await.expect("answer");
        assert!(reply.to_xml(NS_COMPONENT).contains("<forbidden"));
        // From our server but without a transfer log: nothing to record into.
        let mut ours = iq("set", share);
        ours.set_attr("from", "example.test");
        let reply = svc.handle(&ours).await.expect("answer");
        assert!(reply.to_xml(NS_COMPONENT).contains("<service-unavailable"));
    }

    #[tokio::test]
    async fn disco_info_has_identity_features_and_the_size_form() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path());
        let reply = svc
            .handle(&iq("get", Element::new("query", NS_DISCO_INFO)))
            .await
            .expect("answer")
            .to_xml(NS_COMPONENT);
        assert!(
            reply.contains("<identity category='store' type='file'"),
            "{reply}"
        );
        assert!(
            reply.contains("<feature var='urn:xmpp:http:upload:0'/>"),
            "{reply}"
        );
        assert!(reply.contains(
            "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:http:upload:0</value></field>\
             <field var='max-file-size'><value>1000</value></field>"
        ));
        // A set of the same query is not a thing: service-unavailable.
        let set = svc
            .handle(&iq("set", Element::new("query", NS_DISCO_INFO)))
            .await
            .expect("answer");
        assert!(set.to_xml(NS_COMPONENT).contains("<service-unavailable"));
    }

    #[tokio::test]
    async fn a_granted_slot_verifies_with_the_key_and_binds_the_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let svc = service(dir.path());
        let request = Element::new("request", slot::NS_UPLOAD)
            .attr("filename", "a b.txt")
            .attr("size", "12")
            .attr("content-type", "text/plain");
        let reply = svc.handle(&iq("get", request)).await.expect("answer");
        let slot = reply.get_child("slot", slot::NS_UPLOAD).expect("slot");
        let put = slot.get_child("put", slot::NS_UPLOAD).expect("put");
        let header = put
            .get_child("header", slot::NS_UPLOAD)
            .expect("header")
            .text_content();
        let token = header.strip_prefix("Bearer ").expect("bearer");
        let claims = svc
            .signer
            .verify(token, mft_common::utc::unix_now())
            .expect("valid token");
        assert_eq!(claims.size, 12);
        assert_eq!(claims.filename, "a b.txt");
        assert_eq!(claims.content_type.as_deref(), Some("text/plain"));
        assert_eq!(claims.uploader, "alice@example.test/phone");
        let url = put.get_attr("url").expect("url");
        assert_eq!(
            url,
            format!("https://up.example.test/{}/a%20b.txt", claims.resource)
        );
        assert_eq!(
            slot.get_child("get", slot::NS_UPLOAD)
                .and_then(|g| g.get_attr("url")),
            Some(url)
        );
    }

    /// The claims of the slot a request gets, or the error's condition.
    async fn claims_for(svc: &UploadService, purpose: Element) -> Result<SlotClaims, String> {
        let request = Element::new("request", slot::NS_UPLOAD)
            .attr("filename", "a.txt")
            .attr("size", "12")
            .child(purpose);
        let reply = svc.handle(&iq("get", request)).await.expect("answer");
        let Some(slot) = reply.get_child("slot", slot::NS_UPLOAD) else {
            return Err(reply.to_xml(NS_COMPONENT));
        };
        let put = slot.get_child("put", slot::NS_UPLOAD).expect("put");
        let header = put.get_child("header", slot::NS_UPLOAD).expect("header");
        let token = header.text_content();
        Ok(svc
            .signer
            .verify(
                token.trim_start_matches("Bearer "),
                mft_common::utc::unix_now(),
            )
            .expect("valid token"))
    }

    #[tokio::test]
    async fn purposes_are_advertised_checked_and_carried_in_the_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut svc = service(dir.path());
        let disco = svc
            .handle(&iq("get", Element::new("query", NS_DISCO_INFO)))
            .await
            .expect("answer")
            .to_xml(NS_COMPONENT);
        assert!(
            disco.contains("urn:xmpp:http:upload:purpose:0#message"),
            "{disco}"
        );
        assert!(
            disco.contains("urn:xmpp:http:upload:purpose:0#profile"),
            "{disco}"
        );
        // No transfer log: nowhere to keep an expiry; permanent not allowed.
        assert!(!disco.contains("purpose:0#ephemeral"), "{disco}");
        assert!(!disco.contains("purpose:0#permanent"), "{disco}");
        let p = |name: &str| Element::new(name, slot::NS_PURPOSE);
        let plain = claims_for(&svc, p("message")).await.expect("message");
        assert_eq!((plain.purpose, plain.expire_before), (None, None));
        let profile = claims_for(&svc, p("profile")).await.expect("profile");
        assert_eq!(profile.purpose.as_deref(), Some("profile"));
        let refused = claims_for(&svc, p("permanent")).await.expect_err("refused");
        assert!(refused.contains("<feature-not-implemented"), "{refused}");
        assert!(refused.contains("type='cancel'"), "{refused}");
        let unknown = claims_for(&svc, p("forever-and-ever"))
            .await
            .expect_err("unknown");
        assert!(unknown.contains("<feature-not-implemented"), "{unknown}");
        svc.allow_permanent = true;
        let permanent = claims_for(&svc, p("permanent")).await.expect("allowed");
        assert_eq!(permanent.purpose.as_deref(), Some("permanent"));
        // Malformed or past expiries are bad requests whatever is offered.
        for stamp in ["yesterday", "2001-01-01T00:00:00Z", ""] {
            let e = claims_for(&svc, p("ephemeral").attr("expire-before", stamp))
                .await
                .expect_err("bad expiry");
            assert!(e.contains("<bad-request"), "{stamp}: {e}");
        }
        let two = Element::new("request", slot::NS_UPLOAD)
            .attr("filename", "a.txt")
            .attr("size", "12")
            .child(p("message"))
            .child(p("profile"));
        let reply = svc.handle(&iq("get", two)).await.expect("answer");
        assert!(reply.to_xml(NS_COMPONENT).contains("<bad-request"));
    }

    #[test]
    fn an_ephemeral_expiry_before_the_floor_is_refused_naming_the_earliest_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut svc = service(dir.path());
        let day = Duration::from_secs(86_400);
        svc.floor = RetentionFloor {
            im: 7 * day,
            groupchat: day,
            persistent: Duration::ZERO,
        };
        let now = mft_common::utc::unix_now();
        let im = mft_storage::ChatType::Im;
        let e = svc
            .check_floor("a@example.test", im, now + 3600)
            .expect_err("below the floor");
        let xml = e.error.reply_to(&iq("get", Element::new("ping", NS_PING)));
        let xml = xml.to_xml(NS_COMPONENT);
        assert!(
            xml.contains("type='modify'") && xml.contains("<not-acceptable"),
            "{xml}"
        );
        assert!(xml.contains("at least 7 days (im chats)"), "{xml}");
        assert!(svc
            .check_floor("a@example.test", im, now + 8 * 86_400)
            .is_ok());
        let group = mft_storage::ChatType::Groupchat;
        assert!(svc
            .check_floor("a@example.test", group, now + 3600)
            .is_err());
        assert!(svc
            .check_floor("a@example.test", group, now + 86_401)
            .is_ok());
        let room = mft_storage::ChatType::Persistent;
        assert!(svc.check_floor("a@example.test", room, now + 1).is_ok());
        assert_eq!(
            mft_common::units::spoken(Duration::from_secs(3600)),
            "1 hour"
        );
        assert_eq!(
            mft_common::units::spoken(Duration::from_secs(90)),
            "90 seconds"
        );
    }
}
