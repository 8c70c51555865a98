//! Slot policy that needs more than the request: which chat type a
//! destination belongs to. (Quotas live with the transfer log, in
//! `mft_storage::quota`, because their numbers are the log's rows.)

use mft_common::jid::Jid;
use mft_storage::ChatType;

use serde::Deserialize;

/// Our namespace for naming the intended recipient inside a slot request:
/// `<request …><destination xmlns='urn:mftd:destination:0' jid='room@conference.example.test'/></request>`.
pub const NS_DESTINATION: &str = "urn:mftd:destination:0";

/// How destination JIDs map to chat types (the `[chat]` section).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRules {
    /// Multi-user chat services: destinations there are `groupchat`.
    #[serde(default)]
    pub groupchat_services: Vec<String>,
    /// Persistent chat services: destinations there are `persistent`.
    #[serde(default)]
    pub persistent_services: Vec<String>,
    /// Individual persistent rooms (bare JIDs) on any service.
    #[serde(default)]
    pub persistent_rooms: Vec<String>,
}

impl ChatRules {
    /// Whether `domain` is one of the configured chat services.
    pub fn is_chat_service(&self, domain: &str) -> bool {
        self.groupchat_services
            .iter()
            .chain(&self.persistent_services)
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

/// The chat type of an upload to `destination` (none given → `im`).
pub fn chat_type(cfg: &ChatRules, destination: Option<&Jid>) -> ChatType {
    let Some(destination) = destination else {
        return ChatType::Im;
    };
    let bare = destination.bare();
    let domain = destination.domain();
    let listed = |list: &[String], value: &str| list.iter().any(|x| x.eq_ignore_ascii_case(value));
    if listed(&cfg.persistent_rooms, &bare) || listed(&cfg.persistent_services, domain) {
        ChatType::Persistent
    } else if listed(&cfg.groupchat_services, domain) {
        ChatType::Groupchat
    } else {
        ChatType::Im
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_map_to_chat_types() {
        let cfg = ChatRules {
            groupchat_services: vec!["conference.example.test".into()],
            persistent_services: vec!["persistent.example.test".into()],
            persistent_rooms: vec!["board@conference.example.test".into()],
        };
        assert_eq!(chat_type(&cfg, None), ChatType::Im);
        assert_eq!(
            chat_type(&cfg, Jid::parse("bob@example.test/phone").as_ref()),
            ChatType::Im
        );
        assert_eq!(
            chat_type(&cfg, Jid::parse("lunch@Conference.example.test").as_ref()),
            ChatType::Groupchat
        );
        assert_eq!(
            chat_type(&cfg, Jid::parse("team@persistent.example.test").as_ref()),
            ChatType::Persistent
        );
        assert_eq!(
            chat_type(
                &cfg,
                Jid::parse("board@conference.example.test/nick").as_ref()
            ),
            ChatType::Persistent
        );
    }
}
