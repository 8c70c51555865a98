//! The log's lifecycle: the monthly partitions of the record tables
//! (migration 16) and dropping the months older than `[retention] log`.
//!
//! [`ensure_ahead`] is what the running service does (as its own,
//! DDL-less role): it calls `mftd_log_partitions_ahead()`, which runs as the
//! schema's owner and only ever creates empty partitions for this month and
//! the next three. [`prune`] is what the owner role does (`mftd db
//! prune-log`): it drops whole month partitions that ended before the cut,
//! unless a row in them belongs to a file or a person under a legal hold in
//! force, and records each drop in `log_drops`, with each node's chain run
//! that went in `log_drop_chains` — the anchor [`crate::log_verify`] checks
//! the first kept record against — each run signed with the checkpoint key
//! when the caller has it.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio_postgres::{Client, GenericClient, Transaction};

use crate::db::DbError;
use crate::holds::HOLD_LOCK;
use crate::log_chain::{CheckpointSigner, DropRunRecord};

/// The partitioned record tables and the column each is partitioned by.
pub const PARTITIONED: &[(&str, &str)] = &[
    ("aft_log_rows", "date_time"),
    ("aft_log_amends", "date_time"),
    ("shares", "reported_at"),
    ("removals", "removed_at"),
];

/// One prune at a time, cluster-wide.
const PRUNE_LOCK: i64 = 7_314_608;

/// Creates this month's and the next three months' partitions where they
/// are missing, and moves rows out of the DEFAULT partitions; returns how
/// many partitions it created.
pub async fn ensure_ahead(client: &Client) -> Result<i32, DbError> {
    let row = client
        .query_one("SELECT mftd_log_partitions_ahead()", &[])
        .await
        .map_err(|e| DbError::query("creating the log's partitions ahead", e))?;
    Ok(row.get(0))
}

/// One month partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthPartition {
    /// The partitioned table.
    pub table: String,
    /// The partition's name (`<table>_pYYYYMM`).
    pub partition: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// Whether the whole month ended before the cut.
    pub due: bool,
}

/// The month partitions of the record tables, oldest first per table,
/// each marked due when it ended before `now − older_than`.
pub async fn month_partitions(
    client: &Client,
    older_than: Duration,
) -> Result<Vec<MonthPartition>, DbError> {
    let tables: Vec<&str> = PARTITIONED.iter().map(|(t, _)| *t).collect();
    let rows = client
        .query(
            "SELECT p.relname::text, c.relname::text, \
                    to_char(to_date(right(c.relname, 6), 'YYYYMM'), 'YYYY-MM'), \
                    (to_date(right(c.relname, 6), 'YYYYMM') + interval '1 month')::timestamp \
                        AT TIME ZONE 'UTC' <= now() - make_interval(secs => $2) \
             FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent \
             WHERE p.relname = ANY($1) AND p.relnamespace = current_schema()::regnamespace \
               AND c.relname ~ '_p[0-9]{6}$' \
             ORDER BY 1, 2",
            &[&tables, &(older_than.as_secs_f64())],
        )
        .await
        .map_err(|e| DbError::query("listing the log's partitions", e))?;
    Ok(rows
        .iter()
        .map(|r| MonthPartition {
            table: r.get(0),
            partition: r.get(1),
            month: r.get(2),
            due: r.get(3),
        })
        .collect())
}

/// A partition that was (or, in a dry run, would be) dropped.
#[derive(Debug, Clone)]
pub struct DroppedPartition {
    /// Which one.
    pub partition: MonthPartition,
    /// Its rows.
    pub rows: i64,
    /// Its `log_drops` row (0 in a dry run).
    pub drop_id: i64,
}

/// A partition kept past the cut because a hold covers some of its rows.
#[derive(Debug, Clone)]
pub struct HeldPartition {
    /// Which one.
    pub partition: MonthPartition,
    /// The holds in force that cover its rows.
    pub holds: Vec<i64>,
}

/// What a prune did.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Dropped (or due, in a dry run), oldest first per table.
    pub dropped: Vec<DroppedPartition>,
    /// Due, but kept by a hold.
    pub held: Vec<HeldPartition>,
    /// Month partitions not due yet.
    pub kept: usize,
    /// Rows moved out of the DEFAULT partitions first.
    pub settled: i64,
}

/// What a prune is asked to do.
#[derive(Debug, Clone)]
pub struct PruneRequest {
    /// Drop months that ended longer ago than this.
    pub older_than: Duration,
    /// The limit as the operator wrote it (`7y`), for the record.
    pub older_than_text: String,
    /// Who runs it (the operator's name).
    pub by: String,
    /// List only.
    pub dry_run: bool,
}

/// Drops the month partitions of the record tables that ended before
/// `now − older_than`, each in its own transaction that first re-checks
/// the holds (under the hold lock, so a hold placed meanwhile is seen) and
/// records the drop, its chain runs signed with `signer` when given. Needs
/// the schema's owner (the runtime role may not drop tables).
pub async fn prune(
    client: &mut Client,
    req: &PruneRequest,
    signer: Option<&dyn CheckpointSigner>,
) -> Result<PruneReport, DbError> {
    let mut report = PruneReport::default();
    if !req.dry_run {
        // Rows a DEFAULT partition holds go to their months first, so an
        // old one is dropped with its month rather than kept forever.
        for (table, _) in PARTITIONED {
            let row = client
                .query_one("SELECT mftd_log_partition_settle($1)", &[table])
                .await
                .map_err(|e| DbError::query(format!("settling {table}'s DEFAULT partition"), e))?;
            report.settled += row.get::<_, i64>(0);
        }
    }
    for part in month_partitions(client, req.older_than).await? {
        if !part.due {
            report.kept += 1;
            continue;
        }
        let tx = client
            .transaction()
            .await
            .map_err(|e| DbError::query("starting a partition drop", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PRUNE_LOCK])
            .await
            .map_err(|e| DbError::query("taking the prune lock", e))?;
        tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&HOLD_LOCK])
            .await
            .map_err(|e| DbError::query("taking the hold lock", e))?;
        let holds = holds_covering(&tx, &part).await?;
        if !holds.is_empty() {
            report.held.push(HeldPartition {
                partition: part,
                holds,
            });
            continue;
        }
        let rows: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM {}", ident(&part.partition)),
                &[],
            )
            .await
            .map_err(|e| DbError::query(format!("counting {}", part.partition), e))?
            .get(0);
        let drop_id = if req.dry_run {
            0
        } else {
            record_and_drop(&tx, &part, rows, req, signer).await?
        };
        tx.commit()
            .await
            .map_err(|e| DbError::query(format!("committing the drop of {}", part.partition), e))?;
        report.dropped.push(DroppedPartition {
            partition: part,
            rows,
            drop_id,
        });
    }
    Ok(report)
}

/// Writes the `log_drops` row and the chain runs, then drops the partition.
async fn record_and_drop(
    tx: &Transaction<'_>,
    part: &MonthPartition,
    rows: i64,
    req: &PruneRequest,
    signer: Option<&dyn CheckpointSigner>,
) -> Result<i64, DbError> {
    let drop_id: i64 = tx
        .query_one(
            "INSERT INTO log_drops (table_name, partition, month, row_count, older_than, \
                                    cut_before, dropped_by) \
             VALUES ($1, $2, to_date($3, 'YYYY-MM'), $4, $5, now() - make_interval(secs => $6), $7) \
             RETURNING drop_id",
            &[
                &part.table,
                &part.partition,
                &part.month,
                &rows,
                &req.older_than_text,
                &req.older_than.as_secs_f64(),
                &req.by,
            ],
        )
        .await
        .map_err(|e| DbError::query("recording the drop in log_drops", e))?
        .get(0);
    if matches!(part.table.as_str(), "aft_log_rows" | "aft_log_amends") {
        // Each node's records in this month as runs of consecutive sequence
        // numbers, each with the hash of its last record: what the first
        // record after the run must link to. Each run is signed when a key
        // is at hand, so a drop record nobody with the key wrote is found.
        let p = ident(&part.partition);
        let runs = tx
            .query(
                &format!(
                    "WITH numbered AS ( \
                         SELECT node, chain_seq, \
                                chain_seq - row_number() OVER (PARTITION BY node ORDER BY chain_seq) AS run \
                         FROM {p}), \
                     runs AS ( \
                         SELECT node, min(chain_seq) AS lo, max(chain_seq) AS hi, count(*) AS n \
                         FROM numbered GROUP BY node, run) \
                     SELECT runs.node::text, runs.lo, runs.hi, runs.n, r.chain_hash::text \
                     FROM runs JOIN {p} r ON r.node = runs.node AND r.chain_seq = runs.hi \
                     ORDER BY 1, 2"
                ),
                &[],
            )
            .await
            .map_err(|e| DbError::query("reading the dropped chain runs", e))?;
        for r in &runs {
            let mut run = DropRunRecord {
                table: part.table.clone(),
                partition: part.partition.clone(),
                month: part.month.clone(),
                node: r.get(0),
                from_seq: r.get(1),
                to_seq: r.get(2),
                records: r.get(3),
                last_hash: r.get(4),
                public_key: String::new(),
            };
            let signature = match signer {
                Some(key) => {
                    run.public_key = key.public_key();
                    key.sign(run.canon().as_bytes()).map_err(|e| {
                        DbError::config_because(
                            "signing a dropped chain run with the checkpoint key",
                            e,
                        )
                    })?
                }
                None => String::new(),
            };
            tx.execute(
                "INSERT INTO log_drop_chains (drop_id, node, from_seq, to_seq, records, last_hash, \
                                              public_key, signature) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &drop_id,
                    &run.node,
                    &run.from_seq,
                    &run.to_seq,
                    &run.records,
                    &run.last_hash,
                    &run.public_key,
                    &signature,
                ],
            )
            .await
            .map_err(|e| DbError::query("recording the dropped chain runs", e))?;
        }
    }
    tx.batch_execute(&format!("DROP TABLE {}", ident(&part.partition)))
        .await
        .map_err(|e| {
            DbError::query(
                format!(
                    "dropping {} (run `mftd db prune-log` as the role that owns the schema)",
                    part.partition
                ),
                e,
            )
        })?;
    Ok(drop_id)
}

/// The holds in force that cover a row of `part`: a row of a file a hold
/// covers (by resource, user, room or content: `mftd_hold_covers`), or a row
/// naming a held user or room as sender, recipient or downloader.
async fn holds_covering(tx: &Transaction<'_>, part: &MonthPartition) -> Result<Vec<i64>, DbError> {
    let q = |what: &'static str| move |e| DbError::query(what, e);
    let mut by_resource: HashMap<String, Vec<i64>> = HashMap::new();
    for r in tx
        .query(
            "SELECT h.hold_id, f.resource::text FROM holds h JOIN files f ON mftd_hold_covers(h, f) \
             WHERE h.released_at IS NULL",
            &[],
        )
        .await
        .map_err(q("reading the files under hold"))?
    {
        by_resource.entry(r.get(1)).or_default().push(r.get(0));
    }
    let mut by_subject: HashMap<String, Vec<i64>> = HashMap::new();
    for r in tx
        .query(
            "SELECT hold_id, subject::text FROM holds \
             WHERE released_at IS NULL AND kind IN ('user', 'room')",
            &[],
        )
        .await
        .map_err(q("reading the holds on people and rooms"))?
    {
        by_subject.entry(r.get(1)).or_default().push(r.get(0));
    }
    if by_resource.is_empty() && by_subject.is_empty() {
        return Ok(Vec::new());
    }
    let resources: Vec<&str> = by_resource.keys().map(String::as_str).collect();
    let subjects: Vec<&str> = by_subject.keys().map(String::as_str).collect();
    let p = ident(&part.partition);
    let bare = |col: &str| format!("split_part({col}, '/', 1)");
    let sql = match part.table.as_str() {
        "aft_log_rows" => format!(
            "SELECT filename::text FROM {p} WHERE filename = ANY($1) \
             UNION SELECT {j} FROM {p} WHERE {j} = ANY($2) \
             UNION SELECT {t} FROM {p} WHERE {t} = ANY($2)",
            j = bare("jid"),
            t = bare("to_jid"),
        ),
        "aft_log_amends" => format!(
            "SELECT r.filename::text FROM {p} a JOIN aft_log_rows r USING (aft_index) \
                 WHERE r.filename = ANY($1) \
             UNION SELECT {j} FROM {p} a JOIN aft_log_rows r USING (aft_index) WHERE {j} = ANY($2) \
             UNION SELECT {t} FROM {p} a WHERE {t} = ANY($2)",
            j = bare("r.jid"),
            t = bare("a.to_jid"),
        ),
        "shares" => format!(
            "SELECT resource::text FROM {p} WHERE resource = ANY($1) \
             UNION SELECT {s} FROM {p} WHERE {s} = ANY($2) \
             UNION SELECT {r} FROM {p} WHERE {r} = ANY($2)",
            s = bare("sender"),
            r = bare("recipient"),
        ),
        // A user's own deletion names them in `removed_by`.
        _ => format!(
            "SELECT resource::text FROM {p} WHERE resource = ANY($1) \
             UNION SELECT {b} FROM {p} WHERE {b} = ANY($2)",
            b = bare("removed_by"),
        ),
    };
    let found = tx
        .query(&sql, &[&resources, &subjects])
        .await
        .map_err(|e| DbError::query(format!("checking {} for held rows", part.partition), e))?;
    let mut holds = BTreeSet::new();
    for r in &found {
        let key: Option<String> = r.get(0);
        let Some(key) = key else { continue };
        for id in by_resource
            .get(&key)
            .into_iter()
            .chain(by_subject.get(&key))
        {
            holds.extend(id.iter().copied());
        }
    }
    Ok(holds.into_iter().collect())
}

/// A partition name (ours: letters, digits, `_`) as an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A dropped run of one chain: first and last sequence number, and the
/// hash of the last record.
type Run = (i64, i64, String);

/// What `log_drop_chains` says was dropped from each chain: runs of
/// sequence numbers with the hash of each run's last record.
#[derive(Debug, Default, Clone)]
pub struct DroppedRuns {
    /// (table, node) → (from, to, hash of `to`), sorted by `from`.
    runs: HashMap<(String, String), Vec<Run>>,
    /// Every run as recorded, with its signature, for the caller to check.
    pub stored: Vec<StoredDropRun>,
}

/// A recorded run and its signature (empty when unsigned).
#[derive(Debug, Clone)]
pub struct StoredDropRun {
    /// The run.
    pub record: DropRunRecord,
    /// Its `log_drops` row.
    pub drop_id: i64,
    /// The armored SSH signature of [`DropRunRecord::canon`], or empty.
    pub signature: String,
}

impl DroppedRuns {
    /// Reads them (empty when nothing was ever dropped).
    pub async fn load(client: &impl GenericClient) -> Result<DroppedRuns, DbError> {
        let rows = client
            .query(
                "SELECT d.table_name::text, c.node::text, c.from_seq, c.to_seq, c.last_hash::text, \
                        d.partition::text, to_char(d.month, 'YYYY-MM'), c.records, \
                        c.public_key, c.signature, d.drop_id \
                 FROM log_drop_chains c JOIN log_drops d USING (drop_id) \
                 ORDER BY 1, 2, 3",
                &[],
            )
            .await
            .map_err(|e| DbError::query("reading log_drop_chains", e))?;
        let mut out = DroppedRuns::default();
        for r in &rows {
            out.runs
                .entry((r.get(0), r.get(1)))
                .or_default()
                .push((r.get(2), r.get(3), r.get(4)));
            out.stored.push(StoredDropRun {
                record: DropRunRecord {
                    table: r.get(0),
                    node: r.get(1),
                    from_seq: r.get(2),
                    to_seq: r.get(3),
                    last_hash: r.get(4),
                    partition: r.get(5),
                    month: r.get(6),
                    records: r.get(7),
                    public_key: r.get(8),
                },
                drop_id: r.get(10),
                signature: r.get(9),
            });
        }
        Ok(out)
    }

    /// Adds one run (tests, and readers that build their own).
    pub fn add(&mut self, table: &str, node: &str, from: i64, to: i64, hash: &str) {
        let list = self
            .runs
            .entry((table.to_owned(), node.to_owned()))
            .or_default();
        list.push((from, to, hash.to_owned()));
        list.sort();
    }

    fn list(&self, table: &str, node: &str) -> &[Run] {
        self.runs
            .get(&(table.to_owned(), node.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    /// Whether record `seq` of the chain was dropped by a prune.
    pub fn covers(&self, table: &str, node: &str, seq: i64) -> bool {
        self.list(table, node)
            .iter()
            .any(|(from, to, _)| (*from..=*to).contains(&seq))
    }

    /// The first and last sequence numbers in `lo..=hi` that no recorded
    /// drop explains, if any: records deleted otherwise.
    pub fn unexplained(&self, table: &str, node: &str, lo: i64, hi: i64) -> Option<(i64, i64)> {
        let mut first = None;
        let mut last = None;
        let mut seq = lo;
        let list = self.list(table, node);
        while seq <= hi {
            match list
                .iter()
                .find(|(from, to, _)| (*from..=*to).contains(&seq))
            {
                Some((_, to, _)) => seq = to + 1,
                None => {
                    first.get_or_insert(seq);
                    last = Some(seq);
                    seq += 1;
                }
            }
        }
        first.zip(last)
    }

    /// The hash of dropped record `seq` when a recorded run ends there.
    pub fn hash_at(&self, table: &str, node: &str, seq: i64) -> Option<&str> {
        self.list(table, node)
            .iter()
            .find(|(_, to, _)| *to == seq)
            .map(|(_, _, h)| h.as_str())
    }

    /// Records dropped from each (table, node).
    pub fn counts(&self) -> impl Iterator<Item = (&str, &str, i64)> {
        self.runs.iter().map(|((t, n), list)| {
            (
                t.as_str(),
                n.as_str(),
                list.iter().map(|(from, to, _)| to - from + 1).sum(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_runs_explain_their_gaps_and_nothing_else() {
        let mut d = DroppedRuns::default();
        d.add("aft_log_rows", "n1", 1, 10, "h10");
        d.add("aft_log_rows", "n1", 12, 12, "h12");
        assert_eq!(d.unexplained("aft_log_rows", "n1", 1, 10), None);
        assert_eq!(d.unexplained("aft_log_rows", "n1", 1, 12), Some((11, 11)));
        assert_eq!(d.unexplained("aft_log_rows", "n1", 1, 15), Some((11, 15)));
        assert_eq!(d.unexplained("aft_log_rows", "n2", 1, 3), Some((1, 3)));
        assert_eq!(d.unexplained("aft_log_amends", "n1", 1, 1), Some((1, 1)));
        assert_eq!(d.hash_at("aft_log_rows", "n1", 10), Some("h10"));
        assert_eq!(d.hash_at("aft_log_rows", "n1", 9), None);
        assert!(d.covers("aft_log_rows", "n1", 12) && !d.covers("aft_log_rows", "n1", 13));
    }
}
