//! The hash chain over the transfer log: the canonical encoding of each
//! record (a transfer row, an amendment, a daily checkpoint), the chain
//! hash, and the chain heads the writer continues from.
//!
//! Every node keeps one chain per table (`aft_log_rows`, `aft_log_amends`,
//! `log_checkpoints`): record *n* of node *N* carries `chain_seq` = *n*,
//! `chain_prev` = the `chain_hash` of record *n − 1* (64 zeros for the
//! first) and `chain_hash` = lower-case hex SHA-256 of the bytes
//! `chain_prev || canonical(record)`. The canonical encoding writes each
//! field as `<length in bytes>:<UTF-8 text>;` (a NULL as `~;`), integers in
//! decimal and times as microseconds since 1970-01-01 UTC in decimal; the
//! first three fields are the record kind (`row`, `amend`, `checkpoint`),
//! the node and the sequence number. Migration 11 defines the same encoding
//! in SQL (`mftd_canon_row` …), so an auditor can recompute a chain with
//! psql alone; the unit tests below pin the bytes.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// `chain_prev` of the first record of a chain.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The SSH signature namespace of checkpoint signatures
/// (`ssh-keygen -Y check-novalidate -n mftd-log-checkpoint`).
pub const SIGNATURE_NAMESPACE: &str = "mftd-log-checkpoint";

/// The chained tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainTable {
    /// `aft_log_rows`: transfers as written.
    Rows,
    /// `aft_log_amends`: what was learnt about a row later.
    Amends,
    /// `log_checkpoints`: the daily chain heads.
    Checkpoints,
}

impl ChainTable {
    /// The table's name.
    pub fn table(self) -> &'static str {
        match self {
            ChainTable::Rows => "aft_log_rows",
            ChainTable::Amends => "aft_log_amends",
            ChainTable::Checkpoints => "log_checkpoints",
        }
    }

    /// What one record is called in reports.
    pub fn record(self) -> &'static str {
        match self {
            ChainTable::Rows => "row",
            ChainTable::Amends => "amendment",
            ChainTable::Checkpoints => "checkpoint",
        }
    }
}

/// The last record of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Its `chain_seq` (0: the chain is empty).
    pub seq: i64,
    /// Its `chain_hash` ([`GENESIS`] when empty).
    pub hash: String,
}

impl Head {
    /// The head of an empty chain.
    pub fn empty() -> Head {
        Head {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }

    /// Chains a record whose canonical encoding `canon(seq)` gives after
    /// this head: returns (seq, prev, hash) and moves the head on.
    pub fn append(&mut self, canon: impl FnOnce(i64) -> String) -> (i64, String, String) {
        let seq = self.seq + 1;
        let prev = std::mem::take(&mut self.hash);
        let hash = chain_hash(&prev, &canon(seq));
        self.seq = seq;
        self.hash = hash.clone();
        (seq, prev, hash)
    }
}

/// Chain heads by (table, node), as one writer continues them.
pub type Heads = HashMap<(ChainTable, String), Head>;

/// `chain_hash` of a record: hex SHA-256 of `prev || canon`.
pub fn chain_hash(prev: &str, canon: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(canon.as_bytes());
    format!("{:x}", h.finalize())
}

/// Microseconds since the Unix epoch (negative before it), as PostgreSQL
/// keeps a `timestamptz`.
pub fn micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// `t` cut to whole microseconds, so the time hashed is the time stored.
pub fn to_micros(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(0)),
        Err(_) => t,
    }
}

/// A canonical encoding being written.
#[derive(Debug, Default)]
pub struct Canon(String);

impl Canon {
    /// Starts a record: its kind, node and sequence number.
    pub fn new(kind: &str, node: &str, seq: i64) -> Canon {
        let mut c = Canon(String::with_capacity(512));
        c.text(kind).text(node).int(seq);
        c
    }

    /// A text field.
    pub fn text(&mut self, v: &str) -> &mut Canon {
        self.0.push_str(&v.len().to_string());
        self.0.push(':');
        self.0.push_str(v);
        self.0.push(';');
        self
    }

    /// A text field that may be NULL.
    pub fn opt_text(&mut self, v: Option<&str>) -> &mut Canon {
        match v {
            Some(v) => self.text(v),
            None => {
                self.0.push_str("~;");
                self
            }
        }
    }

    /// An integer field.
    pub fn int(&mut self, v: i64) -> &mut Canon {
        self.text(&v.to_string())
    }

    /// An integer field that may be NULL.
    pub fn opt_int(&mut self, v: Option<i64>) -> &mut Canon {
        self.opt_text(v.map(|v| v.to_string()).as_deref())
    }

    /// A time field.
    pub fn time(&mut self, t: SystemTime) -> &mut Canon {
        self.int(micros(t))
    }

    /// The encoding.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

/// A transfer row as stored in `aft_log_rows` (texts already cut to their
/// columns).
#[derive(Debug, Clone)]
pub struct RowRecord {
    /// Node (the chain's).
    pub node: String,
    /// `aft_index`.
    pub aft_index: i64,
    /// JID.
    pub jid: String,
    /// `to_jid`.
    pub to_jid: String,
    /// `method`.
    pub method: String,
    /// `filename`.
    pub filename: String,
    /// `real_filename`.
    pub real_filename: String,
    /// `file_type`.
    pub file_type: String,
    /// `chat_type`.
    pub chat_type: String,
    /// `file_server`.
    pub file_server: String,
    /// `file_path`.
    pub file_path: String,
    /// Bytes.
    pub file_size: i64,
    /// When written (whole microseconds).
    pub date_time: SystemTime,
    /// `sha256`.
    pub sha256: String,
    /// `content_type`.
    pub content_type: String,
    /// `client_address`.
    pub client_address: String,
    /// `user_agent`.
    pub user_agent: String,
    /// `http_status`.
    pub http_status: i32,
    /// `bytes_sent`.
    pub bytes_sent: i64,
    /// `duration_ms`.
    pub duration_ms: i64,
    /// `scan_verdict`.
    pub scan_verdict: String,
    /// `scan_detail`.
    pub scan_detail: String,
}

impl RowRecord {
    /// The canonical encoding as record `seq` of its node's chain
    /// (`mftd_canon_row` in SQL).
    pub fn canon(&self, seq: i64) -> String {
        Canon::new("row", &self.node, seq)
            .int(self.aft_index)
            .text(&self.jid)
            .text(&self.to_jid)
            .text(&self.method)
            .text(&self.filename)
            .text(&self.real_filename)
            .text(&self.file_type)
            .text(&self.chat_type)
            .text(&self.file_server)
            .text(&self.file_path)
            .int(self.file_size)
            .time(self.date_time)
            .text(&self.sha256)
            .text(&self.content_type)
            .text(&self.client_address)
            .text(&self.user_agent)
            .int(i64::from(self.http_status))
            .int(self.bytes_sent)
            .int(self.duration_ms)
            .text(&self.scan_verdict)
            .text(&self.scan_detail)
            .finish()
    }
}

/// An amendment as stored in `aft_log_amends`.
#[derive(Debug, Clone)]
pub struct AmendRecord {
    /// The node that wrote it (the chain's).
    pub node: String,
    /// `amend_id`.
    pub amend_id: i64,
    /// The row it amends.
    pub aft_index: i64,
    /// `end` (a download's end) or `share` (the uploader's first share).
    pub what: String,
    /// A new TO_JID.
    pub to_jid: Option<String>,
    /// A new CHAT_TYPE.
    pub chat_type: Option<String>,
    /// The status the transfer really had.
    pub http_status: Option<i32>,
    /// Bytes really sent.
    pub bytes_sent: Option<i64>,
    /// How long it took.
    pub duration_ms: Option<i64>,
    /// When written (whole microseconds).
    pub date_time: SystemTime,
}

impl AmendRecord {
    /// The canonical encoding as record `seq` (`mftd_canon_amend` in SQL).
    pub fn canon(&self, seq: i64) -> String {
        Canon::new("amend", &self.node, seq)
            .int(self.amend_id)
            .int(self.aft_index)
            .text(&self.what)
            .opt_text(self.to_jid.as_deref())
            .opt_text(self.chat_type.as_deref())
            .opt_int(self.http_status.map(i64::from))
            .opt_int(self.bytes_sent)
            .opt_int(self.duration_ms)
            .time(self.date_time)
            .finish()
    }
}

/// A checkpoint as stored in `log_checkpoints`: a node's chain heads on a
/// day.
#[derive(Debug, Clone)]
pub struct CheckpointRecord {
    /// The node.
    pub node: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The head of the node's row chain.
    pub rows: Head,
    /// The head of the node's amendment chain.
    pub amends: Head,
    /// When written (whole microseconds).
    pub created: SystemTime,
    /// The signer's public key (an OpenSSH line), or empty when unsigned.
    pub public_key: String,
}

impl CheckpointRecord {
    /// The canonical encoding as record `seq` (`mftd_canon_checkpoint` in
    /// SQL); also the message a signature signs.
    pub fn canon(&self, seq: i64) -> String {
        Canon::new("checkpoint", &self.node, seq)
            .text(&self.day)
            .int(self.rows.seq)
            .text(&self.rows.hash)
            .int(self.amends.seq)
            .text(&self.amends.hash)
            .time(self.created)
            .text(&self.public_key)
            .finish()
    }
}

/// One node's run of records `mftd db prune-log` dropped with a month
/// partition (a `log_drop_chains` row with its drop's table, partition
/// and month).
#[derive(Debug, Clone)]
pub struct DropRunRecord {
    /// The chained table the month was dropped from.
    pub table: String,
    /// The dropped partition.
    pub partition: String,
    /// Its month, `YYYY-MM`.
    pub month: String,
    /// The chain's node.
    pub node: String,
    /// First dropped sequence number.
    pub from_seq: i64,
    /// Last dropped sequence number.
    pub to_seq: i64,
    /// Records in the run.
    pub records: i64,
    /// The hash of record `to_seq`: what the next kept record links to.
    pub last_hash: String,
    /// The signer's public key (an OpenSSH line), or empty when unsigned.
    pub public_key: String,
}

impl DropRunRecord {
    /// The canonical encoding (`mftd_canon_drop_run` in SQL): the message
    /// its signature signs.
    pub fn canon(&self) -> String {
        Canon::new("drop", &self.node, self.from_seq)
            .text(&self.table)
            .text(&self.partition)
            .text(&self.month)
            .int(self.to_seq)
            .int(self.records)
            .text(&self.last_hash)
            .text(&self.public_key)
            .finish()
    }
}

/// Signs checkpoints with a key the database never sees
/// (`[log] checkpoint_key_file`).
pub trait CheckpointSigner: Send + Sync {
    /// The public key, as an OpenSSH line.
    fn public_key(&self) -> String;
    /// An armored SSH signature (`-----BEGIN SSH SIGNATURE-----`) of
    /// `message` in [`SIGNATURE_NAMESPACE`].
    fn sign(&self, message: &[u8]) -> Result<String, String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_length_prefixed_and_null_is_a_tilde() {
        let mut c = Canon::new("amend", "node_1", 7);
        c.opt_text(None).text("é").opt_int(Some(-3));
        assert_eq!(c.finish(), "5:amend;6:node_1;1:7;~;2:é;2:-3;");
    }

    #[test]
    fn times_are_microseconds_since_the_epoch() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(micros(t), 1_700_000_000_123_456);
        assert_eq!(micros(to_micros(t)), 1_700_000_000_123_456);
        assert_eq!(micros(UNIX_EPOCH - Duration::from_micros(5)), -5);
    }

    #[test]
    fn the_chain_hash_covers_prev_and_content() {
        // printf '%s%s' "$(printf '0%.0s' {1..64})" 'x' | sha256sum
        let h = chain_hash(GENESIS, "x");
        assert_eq!(h.len(), 64);
        assert_ne!(h, chain_hash(GENESIS, "y"));
        assert_ne!(h, chain_hash(&h, "x"));
        let mut head = Head::empty();
        let (seq, prev, hash) = head.append(|s| format!("{s}"));
        assert_eq!((seq, prev.as_str()), (1, GENESIS));
        assert_eq!(hash, chain_hash(GENESIS, "1"));
        assert_eq!(head.hash, hash);
    }
}
