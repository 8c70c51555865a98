//! Recomputing the log's hash chains (`mftd verify --log`): every record of
//! every node's chains is read in chain order (through a cursor, so memory
//! stays flat), its hash recomputed from its content ([`crate::log_chain`])
//! and compared with what is stored, its link to the previous record
//! checked, and the checkpoints' heads compared with the chains. The
//! findings name the chain (table, node), the sequence number and the row's
//! id. Checkpoint signatures are checked by the caller, which holds the key.

use std::collections::{HashMap, HashSet};

use tokio_postgres::{Client, Row};

use crate::error::DbError;
use crate::log_chain::{chain_hash, AmendRecord, ChainTable, CheckpointRecord, Head, RowRecord};
use crate::log_partitions::{DroppedRuns, StoredDropRun};

/// Rows fetched per round trip.
const FETCH: i32 = 5000;

/// What is wrong at one place of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The stored hash is not the hash of the record's content: the record
    /// was edited, or forged without recomputing its hash.
    Edited,
    /// Sequence numbers `from..=to` are missing before this record: deleted.
    Deleted {
        /// First missing.
        from: i64,
        /// Last missing.
        to: i64,
    },
    /// The record does not link to the one before it: a record was
    /// inserted or replaced (with a recomputed hash) here.
    Relinked,
    /// A checkpoint says this record's hash was something else: the chain
    /// was rewritten after that checkpoint.
    Rewritten {
        /// The checkpoint's day.
        day: String,
    },
    /// A checkpoint counted records up to `seq`; the chain ends earlier:
    /// its last records were deleted.
    TailDeleted {
        /// The day of the checkpoint.
        day: String,
        /// The head the checkpoint recorded.
        seq: i64,
    },
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Which chain.
    pub table: ChainTable,
    /// Whose chain.
    pub node: String,
    /// The record's `chain_seq` (for a deleted tail: the chain's last).
    pub seq: i64,
    /// Its id (`aft_index`, `amend_id`; for checkpoints the sequence
    /// number), 0 when there is no record.
    pub id: i64,
    /// What is wrong.
    pub problem: Problem,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = match self.table {
            ChainTable::Rows => format!("aft_index {}", self.id),
            ChainTable::Amends => format!("amend_id {}", self.id),
            ChainTable::Checkpoints => format!("checkpoint {}", self.id),
        };
        let at = format!(
            "{} node {:?} seq {} ({id})",
            self.table.table(),
            self.node,
            self.seq
        );
        match &self.problem {
            Problem::Edited => write!(
                f,
                "{at}: EDITED — its content no longer gives its hash (changed, or forged)"
            ),
            Problem::Deleted { from, to } => write!(
                f,
                "{at}: DELETED before it — {} {from}..={to} missing",
                self.table.record()
            ),
            Problem::Relinked => write!(
                f,
                "{at}: INSERTED or replaced — it does not link to the {} before it",
                self.table.record()
            ),
            Problem::Rewritten { day } => write!(
                f,
                "{at}: REWRITTEN — the checkpoint of {day} recorded another hash here"
            ),
            Problem::TailDeleted { day, seq } => write!(
                f,
                "{} node {:?}: DELETED at the end — the chain ends at seq {}, the checkpoint of {day} counted {seq}",
                self.table.table(),
                self.node,
                self.seq
            ),
        }
    }
}

/// A stored checkpoint, for the caller to check its signature.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    /// Its content.
    pub record: CheckpointRecord,
    /// Its sequence number in the node's checkpoint chain.
    pub seq: i64,
    /// The armored signature, empty when unsigned.
    pub signature: String,
}

impl StoredCheckpoint {
    /// The bytes its signature signs.
    pub fn message(&self) -> String {
        self.record.canon(self.seq)
    }
}

/// The outcome of a chain check.
#[derive(Debug, Default)]
pub struct ChainReport {
    /// Records checked per (table, node).
    pub records: HashMap<(ChainTable, String), u64>,
    /// Every finding, in chain order (rows, amendments, checkpoints).
    pub findings: Vec<Finding>,
    /// Every checkpoint, oldest first per node.
    pub checkpoints: Vec<StoredCheckpoint>,
    /// Records `mftd db prune-log` dropped with their month, per (table,
    /// node), as `log_drop_chains` records them.
    pub dropped: HashMap<(ChainTable, String), u64>,
    /// Every recorded drop run, for the caller to check its signature.
    pub drop_runs: Vec<StoredDropRun>,
}

impl ChainReport {
    /// The nodes seen, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .records
            .keys()
            .map(|(_, n)| n.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        nodes.sort();
        nodes
    }
}

/// What a checkpoint expects of a chain: (seq, hash, day), by seq.
type Expected = HashMap<(ChainTable, String), Vec<(i64, String, String)>>;

/// Walks one table's chains in (node, seq) order.
struct Walk<'a> {
    table: ChainTable,
    expected: &'a Expected,
    dropped: &'a DroppedRuns,
    node: Option<String>,
    head: Head,
    checkpoints: Vec<(i64, String, String)>,
    next_checkpoint: usize,
    report: &'a mut ChainReport,
}

impl Walk<'_> {
    fn step(&mut self, node: &str, seq: i64, prev: &str, hash: &str, id: i64, canon: &str) {
        if self.node.as_deref() != Some(node) {
            self.end();
            self.node = Some(node.to_owned());
            self.head = Head::empty();
            self.checkpoints = self
                .expected
                .get(&(self.table, node.to_owned()))
                .cloned()
                .unwrap_or_default();
            self.next_checkpoint = 0;
        }
        *self
            .report
            .records
            .entry((self.table, node.to_owned()))
            .or_default() += 1;
        let finding = |problem| Finding {
            table: self.table,
            node: node.to_owned(),
            seq,
            id,
            problem,
        };
        let table = self.table.table();
        if seq > self.head.seq + 1 {
            // A gap is fine only where a recorded partition drop explains
            // every missing record, and then this record must link to the
            // last dropped one: deleting records at the new start of a
            // pruned chain is still found.
            match self
                .dropped
                .unexplained(table, node, self.head.seq + 1, seq - 1)
            {
                Some((from, to)) => self
                    .report
                    .findings
                    .push(finding(Problem::Deleted { from, to })),
                None if self.dropped.hash_at(table, node, seq - 1) != Some(prev) => {
                    self.report.findings.push(finding(Problem::Relinked))
                }
                None => {}
            }
        } else if prev != self.head.hash {
            self.report.findings.push(finding(Problem::Relinked));
        }
        if chain_hash(prev, canon) != hash {
            self.report.findings.push(finding(Problem::Edited));
        }
        while let Some((at, want, day)) = self.checkpoints.get(self.next_checkpoint) {
            if *at > seq {
                break;
            }
            if *at == seq && want != hash {
                self.report
                    .findings
                    .push(finding(Problem::Rewritten { day: day.clone() }));
            }
            self.next_checkpoint += 1;
        }
        self.head = Head {
            seq,
            hash: hash.to_owned(),
        };
    }

    /// A chain ended: checkpoints beyond its end mean its tail was deleted.
    fn end(&mut self) {
        let Some(node) = self.node.take() else { return };
        let table = self.table.table();
        if let Some((seq, _, day)) = self
            .checkpoints
            .iter()
            .skip(self.next_checkpoint)
            .find(|(at, _, _)| *at > self.head.seq && !self.dropped.covers(table, &node, *at))
        {
            self.report.findings.push(Finding {
                table: self.table,
                node,
                seq: self.head.seq,
                id: 0,
                problem: Problem::TailDeleted {
                    day: day.clone(),
                    seq: *seq,
                },
            });
        }
    }
}

/// Recomputes every chain of the log.
pub async fn verify_chains(client: &mut Client) -> Result<ChainReport, DbError> {
    let mut report = ChainReport::default();
    let q = |what: &'static str| move |e| DbError::query(what, e);
    let tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(q("starting the chain check"))?;
    let dropped = DroppedRuns::load(&tx).await?;
    for (table, node, n) in dropped.counts() {
        let table = match table {
            "aft_log_rows" => ChainTable::Rows,
            "aft_log_amends" => ChainTable::Amends,
            _ => continue,
        };
        *report.dropped.entry((table, node.to_owned())).or_default() += n as u64;
    }
    report.drop_runs = dropped.stored.clone();
    // Checkpoints first: they are few, and say what the chains must hold.
    let rows = tx
        .query(
            "SELECT node::text, chain_seq, to_char(day, 'YYYY-MM-DD'), rows_seq, rows_hash::text, \
             amends_seq, amends_hash::text, created, public_key::text, signature, \
             chain_prev::text, chain_hash::text \
             FROM log_checkpoints ORDER BY node, chain_seq",
            &[],
        )
        .await
        .map_err(q("reading log_checkpoints"))?;
    let mut expected = Expected::new();
    let mut seen: HashSet<(ChainTable, String)> = HashSet::new();
    {
        let mut walk = Walk {
            table: ChainTable::Checkpoints,
            expected: &Expected::new(),
            dropped: &dropped,
            node: None,
            head: Head::empty(),
            checkpoints: Vec::new(),
            next_checkpoint: 0,
            report: &mut report,
        };
        let mut stored = Vec::new();
        for r in &rows {
            let cp = StoredCheckpoint {
                record: CheckpointRecord {
                    node: r.get(0),
                    day: r.get(2),
                    rows: Head {
                        seq: r.get(3),
                        hash: r.get(4),
                    },
                    amends: Head {
                        seq: r.get(5),
                        hash: r.get(6),
                    },
                    created: r.get(7),
                    public_key: r.get(8),
                },
                seq: r.get(1),
                signature: r.get(9),
            };
            let (prev, hash): (String, String) = (r.get(10), r.get(11));
            walk.step(&cp.record.node, cp.seq, &prev, &hash, cp.seq, &cp.message());
            for (table, head) in [
                (ChainTable::Rows, &cp.record.rows),
                (ChainTable::Amends, &cp.record.amends),
            ] {
                if head.seq > 0 {
                    expected
                        .entry((table, cp.record.node.clone()))
                        .or_default()
                        .push((head.seq, head.hash.clone(), cp.record.day.clone()));
                }
            }
            stored.push(cp);
        }
        walk.end();
        report.checkpoints = stored;
    }
    for list in expected.values_mut() {
        list.sort();
    }
    for table in [ChainTable::Rows, ChainTable::Amends] {
        let sql = match table {
            ChainTable::Rows => {
                "SELECT node::text, chain_seq, chain_prev::text, chain_hash::text, aft_index, \
                 jid::text, to_jid::text, method::text, filename::text, real_filename::text, \
                 file_type::text, chat_type::text, file_server::text, file_path::text, file_size, \
                 date_time, sha256::text, content_type::text, client_address::text, \
                 user_agent::text, http_status, bytes_sent, duration_ms, scan_verdict::text, \
                 scan_detail::text FROM aft_log_rows ORDER BY node, chain_seq"
            }
            _ => {
                "SELECT node::text, chain_seq, chain_prev::text, chain_hash::text, amend_id, \
                 aft_index, what::text, to_jid::text, chat_type::text, http_status, bytes_sent, \
                 duration_ms, date_time FROM aft_log_amends ORDER BY node, chain_seq"
            }
        };
        let portal = tx.bind(sql, &[]).await.map_err(q("reading a log chain"))?;
        let mut walk = Walk {
            table,
            expected: &expected,
            dropped: &dropped,
            node: None,
            head: Head::empty(),
            checkpoints: Vec::new(),
            next_checkpoint: 0,
            report: &mut report,
        };
        loop {
            let batch = tx
                .query_portal(&portal, FETCH)
                .await
                .map_err(q("reading a log chain"))?;
            for r in &batch {
                let node: String = r.get(0);
                seen.insert((table, node.clone()));
                let (id, canon) = match table {
                    ChainTable::Rows => {
                        let rec = row_record(r);
                        (rec.aft_index, rec.canon(r.get(1)))
                    }
                    _ => {
                        let rec = amend_record(r);
                        (rec.amend_id, rec.canon(r.get(1)))
                    }
                };
                walk.step(&node, r.get(1), r.get(2), r.get(3), id, &canon);
            }
            if batch.len() < FETCH as usize {
                break;
            }
        }
        walk.end();
    }
    // A checkpoint of a chain that has no record left at all.
    let mut lost: Vec<_> = expected
        .iter()
        .filter(|(key, _)| !seen.contains(key))
        .filter_map(|((table, node), list)| {
            list.iter()
                .find(|(seq, _, _)| !dropped.covers(table.table(), node, *seq))
                .map(|(seq, _, day)| Finding {
                    table: *table,
                    node: node.clone(),
                    seq: 0,
                    id: 0,
                    problem: Problem::TailDeleted {
                        day: day.clone(),
                        seq: *seq,
                    },
                })
        })
        .collect();
    lost.sort_by(|a, b| (a.node.as_str(), a.seq).cmp(&(b.node.as_str(), b.seq)));
    report.findings.extend(lost);
    tx.commit().await.map_err(q("ending the chain check"))?;
    Ok(report)
}

fn row_record(r: &Row) -> RowRecord {
    RowRecord {
        node: r.get(0),
        aft_index: r.get(4),
        jid: r.get(5),
        to_jid: r.get(6),
        method: r.get(7),
        filename: r.get(8),
        real_filename: r.get(9),
        file_type: r.get(10),
        chat_type: r.get(11),
        file_server: r.get(12),
        file_path: r.get(13),
        file_size: r.get(14),
        date_time: r.get(15),
        sha256: r.get(16),
        content_type: r.get(17),
        client_address: r.get(18),
        user_agent: r.get(19),
        http_status: r.get(20),
        bytes_sent: r.get(21),
        duration_ms: r.get(22),
        scan_verdict: r.get(23),
        scan_detail: r.get(24),
    }
}

fn amend_record(r: &Row) -> AmendRecord {
    AmendRecord {
        node: r.get(0),
        amend_id: r.get(4),
        aft_index: r.get(5),
        what: r.get(6),
        to_jid: r.get(7),
        chat_type: r.get(8),
        http_status: r.get(9),
        bytes_sent: r.get(10),
        duration_ms: r.get(11),
        date_time: r.get(12),
    }
}
