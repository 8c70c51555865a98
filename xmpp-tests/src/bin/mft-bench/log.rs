//! Scenario 7: transfer log rows per second.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::report::{Series, Table};
use crate::Args;
use std::sync::Arc;

use mft_common::utc::unix_now;
use mft_storage::transfer_log::{TransferLog, TransferRecord};
use xmpp_tests::postgres::Postgres;

/// Scenario 7: transfer log rows per second.
pub fn run(a: &Args, _work: &Path, report: &mut String) {
    let pg = Postgres::start();
    let rows = if a.smoke { 2000 } else { 50_000 };
    let mut logt = Table::new(
        &format!("Transfer log: {rows} rows from 256 concurrent writers, durable commits"),
        "rows/s",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rates = Vec::new();
    for _ in 0..a.runs {
        let rate = rt.block_on(async {
            let log = Arc::new(
                TransferLog::start(&pg.url(), Duration::from_secs(10))
                    .await
                    .unwrap(),
            );
            let started = Instant::now();
            let tasks: Vec<_> = (0..256)
                .map(|w| {
                    let log = log.clone();
                    tokio::spawn(async move {
                        for i in 0..rows / 256 {
                            let rec = TransferRecord {
                                jid: format!("user{w}@example.test"),
                                resource: format!("bench-{w}-{i}-{}", unix_now()),
                                chat_type: "im".into(),
                                file_size: 1000,
                                http_status: 200,
                                ..TransferRecord::default()
                            };
                            log.record_download(rec).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            (rows / 256 * 256) as f64 / started.elapsed().as_secs_f64()
        });
        rates.push(rate);
    }
    logt.add(
        "rows per second (group commit, synchronous_commit = on)",
        Series(rates),
    );
    report.push_str(&logt.render());
}
