//! Scenario 8: aggregate upload throughput with 1, 2 and 3 nodes on one
//! machine, each node with its own directory on one shared SFTP file
//! server (the reference's cluster layout), uploads spread round-robin.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::report::{Series, Table};
use crate::tools::*;
use crate::Args;

use mft_storage::ChatType;
use xmpp_tests::mftd::{binary, Mftd};
use xmpp_tests::sshd::Sshd;

/// Scenario 8: 1, 2 and 3 nodes, the same concurrent uploads spread over them.
pub fn run(a: &Args, work: &Path, report: &mut String) {
    let sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let each = if a.smoke { 4 * MIB } else { 64 * MIB };
    let concurrent = 6;
    let file = make_file(work, each);
    let _ = writeln!(report, "## Several nodes\n");
    let mut table = Table::new(
        &format!(
            "Aggregate upload, {concurrent} concurrent uploads of {} MiB (MB/s)",
            each / MIB
        ),
        "MB/s",
    );
    let node_keys: Vec<_> = (1..=3)
        .map(|i| sshd.node_key(keys.path(), &format!("node_{i}")))
        .collect();
    for nodes in 1..=3 {
        let running: Vec<Mftd> = (1..=nodes)
            .map(|i| {
                let name = format!("node_{i}");
                let key = &node_keys[i - 1];
                Mftd::start_with(
                    &bench_options(Some(sshd.store_toml(&name, key)), ""),
                    binary(),
                    vec![("MFTD_NODE__NAME".into(), name)],
                )
            })
            .collect();
        let ports: Vec<u16> = running.iter().map(|m| m.http_port).collect();
        let mut runs = Vec::new();
        for _ in 0..a.runs {
            let started = Instant::now();
            let handles: Vec<_> = (0..concurrent)
                .map(|i| {
                    let (port, file) = (ports[i % ports.len()], file.clone());
                    std::thread::spawn(move || {
                        let (url, headers) = mint(port, each, ChatType::Im);
                        curl_put(&url, &file, &headers);
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            runs.push(mb_s(
                each * concurrent as u64,
                started.elapsed().as_secs_f64(),
            ));
        }
        table.add(
            &format!("{nodes} node{}", if nodes > 1 { "s" } else { "" }),
            Series(runs),
        );
    }
    table.baseline = Some(0);
    table.note = "Baseline: one node. All nodes, the file server and the clients share this machine's two cores; each upload is encrypted by ssh on both ends.".into();
    report.push_str(&table.render());
}
