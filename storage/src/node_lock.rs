//! One running process per node name: a node's directory (and its start-up
//! recovery, which removes and quarantines files) must never be worked on by
//! two processes at once. The lock is a PostgreSQL session advisory lock on
//! the node's name, held on a connection of its own for as long as the
//! process runs; the database releases it when that connection ends (a stop,
//! a crash, a kill -9).

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::error::DbError;
use crate::transfer_log::TransferLog;

/// The first key of every node lock (the second is the name's hash).
const NODE_LOCK_CLASS: i32 = 7_314_604;

/// A held node lock; released when dropped (the connection closes).
pub struct NodeLock {
    _client: Client,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum NodeLockError {
    /// Another process holds it.
    #[error(
        "another mftd is already running as node {node:?} ({holder}); each node needs its own \
         [node] name and directory — stop the other one or give this one another name"
    )]
    Held {
        /// The node name.
        node: String,
        /// What the database says about the holder.
        holder: String,
    },
    /// The database could not be asked.
    #[error("while taking the node lock")]
    Db(#[from] DbError),
}

impl NodeLock {
    /// Takes the lock of `node`, retrying for up to `wait` (a process that
    /// was just killed may hold it until the database notices).
    pub async fn acquire(
        log: &TransferLog,
        node: &str,
        wait: Duration,
    ) -> Result<NodeLock, NodeLockError> {
        let client = log.dedicated_client().await?;
        let me = format!("mftd {node} pid {} on {}", std::process::id(), hostname());
        let me: String = me.chars().take(63).collect();
        client
            .execute("SELECT set_config('application_name', $1, false)", &[&me])
            .await
            .map_err(|e| DbError::query("naming the node lock's connection", e))?;
        let started = Instant::now();
        loop {
            let taken: bool = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, hashtext($2))",
                    &[&NODE_LOCK_CLASS, &node],
                )
                .await
                .map_err(|e| DbError::query("taking the node lock", e))?
                .get(0);
            if taken {
                return Ok(NodeLock { _client: client });
            }
            if started.elapsed() >= wait {
                let holder = holder(&client, node).await;
                return Err(NodeLockError::Held {
                    node: node.to_owned(),
                    holder,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Who holds `node`'s lock, as far as this role may see.
async fn holder(client: &Client, node: &str) -> String {
    let row = client
        .query_opt(
            "SELECT coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'), \
             coalesce(to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), '') \
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::oid \
             AND l.objid = hashtext($2)::oid AND l.objsubid = 2",
            &[&(NODE_LOCK_CLASS as u32), &node],
        )
        .await;
    match row {
        Ok(Some(r)) => {
            let (name, addr, since): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            let name = if name.is_empty() {
                "an mftd process".into()
            } else {
                name
            };
            format!("{name}, connected from {addr} since {since} UTC")
        }
        _ => "a process this database role cannot see".into(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}
