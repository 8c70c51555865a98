//! The widths of the transfer log's text columns, in one place. The
//! migrations create the columns with these sizes; every writer cuts its
//! values to them ([`fit`]); a test against a real PostgreSQL
//! (`xmpp-tests/tests/transfer_log.rs`) reads the live schema and fails if
//! the two ever drift apart.

/// JIDs: `jid`, `to_jid`, `uploader` (Cisco: VARCHAR(3071)).
pub const JID: usize = 3071;
/// Resource names and file names: `filename`, `real_filename`, `resource`.
pub const NAME: usize = 511;
/// `file_type`, `chat_type` (Cisco: VARCHAR(10)).
pub const SHORT: usize = 10;
/// `file_server`.
pub const FILE_SERVER: usize = 511;
/// `file_path`, `storage_path`.
pub const PATH: usize = 1023;
/// `sha256` (hex).
pub const SHA256: usize = 64;
/// `content_type`, `node`.
pub const LABEL: usize = 255;
/// `client_address`.
pub const ADDRESS: usize = 64;
/// `user_agent`.
pub const USER_AGENT: usize = 511;
/// `purpose`, `reason`, a hold's `kind`, a hold event's `action`.
pub const PURPOSE: usize = 16;
/// What an operator wrote: a hold's reason, a removal's note.
pub const NOTE: usize = 1024;
/// `scan_verdict`.
pub const SCAN_VERDICT: usize = 16;
/// `scan_detail`.
pub const SCAN_DETAIL: usize = 255;

/// Every text column of the log's tables with the width its writers use:
/// (table, column, width).
pub const TEXT_COLUMNS: &[(&str, &str, usize)] = &[
    ("aft_log", "jid", JID),
    ("aft_log", "to_jid", JID),
    ("aft_log", "filename", NAME),
    ("aft_log", "real_filename", NAME),
    ("aft_log", "file_type", SHORT),
    ("aft_log", "chat_type", SHORT),
    ("aft_log", "file_server", FILE_SERVER),
    ("aft_log", "file_path", PATH),
    ("aft_log", "sha256", SHA256),
    ("aft_log", "content_type", LABEL),
    ("aft_log", "node", LABEL),
    ("aft_log", "client_address", ADDRESS),
    ("aft_log", "user_agent", USER_AGENT),
    ("aft_log", "scan_verdict", SCAN_VERDICT),
    ("aft_log", "scan_detail", SCAN_DETAIL),
    ("files", "resource", NAME),
    ("files", "storage_path", PATH),
    ("files", "file_server", FILE_SERVER),
    ("files", "node", LABEL),
    ("files", "content_type", LABEL),
    ("files", "sha256", SHA256),
    ("files", "uploader", JID),
    ("files", "to_jid", JID),
    ("files", "chat_type", SHORT),
    ("files", "real_filename", NAME),
    ("slot_reservations", "resource", NAME),
    ("slot_reservations", "uploader", JID),
    ("shares", "resource", NAME),
    ("shares", "sender", JID),
    ("shares", "recipient", JID),
    ("shares", "chat_type", SHORT),
    ("shares", "reported_by", JID),
    ("files", "purpose", PURPOSE),
    ("removals", "resource", NAME),
    ("removals", "storage_path", PATH),
    ("removals", "file_server", FILE_SERVER),
    ("removals", "node", LABEL),
    ("removals", "chat_type", SHORT),
    ("removals", "purpose", PURPOSE),
    ("removals", "sha256", SHA256),
    ("removals", "reason", PURPOSE),
    ("removals", "removed_by", JID),
    ("removals", "note", NOTE),
    ("holds", "kind", PURPOSE),
    ("holds", "subject", JID),
    ("holds", "reason", NOTE),
    ("holds", "placed_by", JID),
    ("holds", "released_by", JID),
    ("holds", "release_reason", NOTE),
    ("hold_events", "action", PURPOSE),
    ("hold_events", "actor", JID),
    ("hold_events", "reason", NOTE),
    ("hold_events", "db_user", LABEL),
];

/// Cuts a text to a column's width (in characters) and removes NUL, which
/// PostgreSQL refuses.
pub fn fit(s: &str, max_chars: usize) -> String {
    s.chars().filter(|c| *c != '\0').take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_fit_their_columns() {
        assert_eq!(fit("abc\0def", 4), "abcd");
        assert_eq!(fit("ééé", 2), "éé");
    }
}
