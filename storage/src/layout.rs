//! The MFT directory layout and resource names.
//!
//! Every file lives at `files/<chat type>/<YYYYMMDD>/<HH>[.n]/<resource>` below
//! the node directory, with date and hour in UTC. After [`FILES_PER_HOUR_DIR`]
//! files in one hour the next go to `HH.1`, then `HH.2` …
//!
//! A resource name carries its own location, `<YYYYMMDD>-<HH>[.n]-<chat>-<id>`
//! with a 128-bit random `id`, so a GET finds the file from the URL alone and
//! any parse failure is a plain "not found": no part of a request ever
//! becomes a path without passing [`Location::parse`].

use std::fmt;
use std::str::FromStr;

use base64::Engine;

use crate::utc::UtcTime;

/// How many files one hour directory holds before the next `HH.n` opens.
pub const FILES_PER_HOUR_DIR: u32 = 1000;

/// The kind of conversation a file was shared in; the first directory level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChatType {
    /// One-to-one chat.
    Im,
    /// Ad-hoc group chat (multi-user chat room).
    Groupchat,
    /// Persistent chat room.
    Persistent,
}

impl ChatType {
    /// All chat types, in layout order.
    pub const ALL: [ChatType; 3] = [ChatType::Im, ChatType::Groupchat, ChatType::Persistent];

    /// The directory and log name: `im`, `groupchat`, `persistent`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatType::Im => "im",
            ChatType::Groupchat => "groupchat",
            ChatType::Persistent => "persistent",
        }
    }
}

impl fmt::Display for ChatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChatType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChatType::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown chat type {s:?}: use im, groupchat or persistent"))
    }
}

/// Where one file lives in the layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    chat: ChatType,
    date: String,
    hour_dir: String,
    resource: String,
}

impl Location {
    /// A fresh location with a new random resource id in the given hour directory.
    pub fn new_random(chat: ChatType, date: &str, hour_dir: &str) -> Location {
        let mut id = [0u8; 16];
        // getrandom only fails when the OS has no entropy source at all.
        getrandom::getrandom(&mut id).expect("the operating system's random source failed");
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
        Location {
            chat,
            date: date.to_owned(),
            hour_dir: hour_dir.to_owned(),
            resource: format!("{date}-{hour_dir}-{}-{id}", chat.as_str()),
        }
    }

    /// Parses a resource name; `None` for anything that is not exactly one of ours.
    pub fn parse(resource: &str) -> Option<Location> {
        let mut parts = resource.splitn(4, '-');
        let date = parts.next()?;
        let hour_dir = parts.next()?;
        let chat: ChatType = parts.next()?.parse().ok()?;
        let id = parts.next()?;
        let date_ok = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
        let id_ok = id.len() == 22
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !date_ok || !id_ok || parse_hour_dir(hour_dir).is_none() {
            return None;
        }
        Some(Location {
            chat,
            date: date.to_owned(),
            hour_dir: hour_dir.to_owned(),
            resource: resource.to_owned(),
        })
    }

    /// The resource name: the URL segment and the file name on the server.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The chat type directory this file is in.
    pub fn chat(&self) -> ChatType {
        self.chat
    }

    /// `files/<chat>/<date>/<hour dir>`, relative to the node directory.
    pub fn dir(&self) -> String {
        format!("files/{}/{}/{}", self.chat, self.date, self.hour_dir)
    }

    /// `files/<chat>/<date>/<hour dir>/<resource>`, relative to the node directory.
    pub fn path(&self) -> String {
        format!("{}/{}", self.dir(), self.resource)
    }

    /// The path of the description stored beside the file.
    pub fn meta_path(&self) -> String {
        format!("{}.meta", self.path())
    }
}

/// Parses `HH` or `HH.n` into (hour, n); `n` is 0 for the plain `HH`.
pub fn parse_hour_dir(s: &str) -> Option<(u32, u32)> {
    let (hh, n) = match s.split_once('.') {
        Some((hh, n)) => {
            if n.is_empty() || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (hh, n.parse().ok()?)
        }
        None => (s, 0),
    };
    if hh.len() != 2 || !hh.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hour: u32 = hh.parse().ok()?;
    (hour < 24).then_some((hour, n))
}

/// The directory name for hour `hour`, overflow number `n`.
pub fn hour_dir_name(hour: u32, n: u32) -> String {
    if n == 0 {
        format!("{hour:02}")
    } else {
        format!("{hour:02}.{n}")
    }
}

/// True for names in an hour directory that are stored files, not
/// descriptions (`.meta`) or transfers in progress (leading dot).
pub fn is_data_file(name: &str) -> bool {
    !name.starts_with('.') && !name.ends_with(".meta")
}

/// The per-(chat type, hour) rollover state: which `HH.n` is open and how
/// many files it has been given.
#[derive(Debug, Default)]
pub struct HourCounters {
    open: std::collections::HashMap<ChatType, OpenHour>,
}

#[derive(Debug, Clone)]
struct OpenHour {
    date: String,
    hour: u32,
    n: u32,
    count: u32,
}

impl HourCounters {
    /// Hands out the next location for `chat` at `now`, or `None` when this
    /// hour has not been seen yet and must first be [`recovered`](Self::recover).
    pub fn next(&mut self, chat: ChatType, now: &UtcTime) -> Option<Location> {
        let date = now.compact_date();
        let open = self.open.get_mut(&chat)?;
        if open.date != date || open.hour != now.hour {
            return None;
        }
        if open.count >= FILES_PER_HOUR_DIR {
            open.n += 1;
            open.count = 0;
        }
        open.count += 1;
        Some(Location::new_random(
            chat,
            &date,
            &hour_dir_name(open.hour, open.n),
        ))
    }

    /// Opens the hour of `now` for `chat` from what the store holds:
    /// the highest `HH.n` found and the number of files already in it.
    pub fn recover(&mut self, chat: ChatType, now: &UtcTime, highest_n: u32, files_in_it: u32) {
        self.open.insert(
            chat,
            OpenHour {
                date: now.compact_date(),
                hour: now.hour,
                n: highest_n,
                count: files_in_it,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_round_trip_and_map_to_layout() {
        let loc = Location::new_random(ChatType::Groupchat, "20261126", "07.2");
        let parsed = Location::parse(loc.resource()).expect("our own name parses");
        assert_eq!(parsed, loc);
        assert!(loc
            .path()
            .starts_with("files/groupchat/20261126/07.2/20261126-07.2-groupchat-"));
        assert_eq!(loc.resource().len(), "20261126-07.2-groupchat-".len() + 22);
    }

    #[test]
    fn path_tricks_are_not_resource_names() {
        for bad in [
            "",
            "..",
            "../etc/passwd",
            "20261126-07-im-../../../../etc/passwd",
            "20261126-07-im-AAAAAAAAAAAAAAAAAAAA/A",
            "20261126-07-im-AAAAAAAAAAAAAAAAAAAAA%2",
            "20261126-24-im-AAAAAAAAAAAAAAAAAAAAAA",
            "20261126-07.0-im-AAAAAAAAAAAAAAAAAAAAAA",
            "20261126-07.-im-AAAAAAAAAAAAAAAAAAAAAA",
            "2026112-07-im-AAAAAAAAAAAAAAAAAAAAAA",
            "20261126-07-chat-AAAAAAAAAAAAAAAAAAAAAA",
            "20261126-07-im-AAAAAAAAAAAAAAAAAAAAAA\0",
        ] {
            assert!(Location::parse(bad).is_none(), "{bad:?} must not parse");
        }
        assert!(Location::parse("20261126-07.12-im-AAAAAAAAAAAAAAAAAAAA-_").is_some());
    }

    #[test]
    fn hour_dirs() {
        assert_eq!(parse_hour_dir("00"), Some((0, 0)));
        assert_eq!(parse_hour_dir("23.15"), Some((23, 15)));
        assert_eq!(parse_hour_dir("7"), None);
        assert_eq!(hour_dir_name(5, 0), "05");
        assert_eq!(hour_dir_name(5, 3), "05.3");
        assert!(is_data_file("20261126-05-im-x"));
        assert!(!is_data_file("20261126-05-im-x.meta"));
        assert!(!is_data_file(".20261126-05-im-x.part"));
    }

    #[test]
    fn rollover_after_a_thousand_files_and_on_the_next_hour() {
        let now = UtcTime::from_unix(1_795_669_628); // 2026-11-26T05:07:08Z
        let mut counters = HourCounters::default();
        assert!(
            counters.next(ChatType::Im, &now).is_none(),
            "must recover first"
        );
        counters.recover(ChatType::Im, &now, 0, 998);
        let dirs: Vec<String> = (0..4)
            .map(|_| counters.next(ChatType::Im, &now).expect("open").dir())
            .collect();
        assert_eq!(
            dirs,
            [
                "files/im/20261126/05",
                "files/im/20261126/05",
                "files/im/20261126/05.1",
                "files/im/20261126/05.1"
            ]
        );
        // Other chat types keep their own counters.
        assert!(counters.next(ChatType::Persistent, &now).is_none());
        // A new hour needs recovery again.
        let later = UtcTime::from_unix(now.unix + 3600);
        assert!(counters.next(ChatType::Im, &later).is_none());
    }
}
