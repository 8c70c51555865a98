//! Scenario: the S3 store on a three-node Garage cluster against rclone
//! (Debian's) moving the same file into and out of the same bucket, run
//! alternately; then six concurrent uploads through one and through two
//! mftd nodes, with mftd's peak memory per transfer.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::report::{Series, Table};
use crate::tools::*;
use crate::Args;

use mft_storage::ChatType;
use xmpp_tests::garage::{Garage, BUCKET, REGION};
use xmpp_tests::mftd::Mftd;

/// The scenario.
pub fn run(a: &Args, work: &Path, report: &mut String) {
    let _ = writeln!(
        report,
        "## Upload and download, S3 store (three-node Garage on 127.0.0.1, replication factor 3)\n"
    );
    let garage = Garage::start();
    let mftd = Mftd::start(&bench_options(Some(garage.store_section(0, "node_1")), ""));
    for &size in &sizes(a) {
        let file = make_file(work, size);
        let mut t = Table::new(&format!("{} MiB (MB/s)", size / MIB), "MB/s");
        let (mut rc_put, mut rc_get, mut up, mut down) = (vec![], vec![], vec![], vec![]);
        for i in 0..a.runs {
            let key = format!("rclone/{i}.bin");
            rc_put.push(mb_s(
                size,
                rclone(
                    &garage,
                    &["copyto", &file.display().to_string(), &remote(&key)],
                ),
            ));
            rc_get.push(mb_s(size, rclone(&garage, &["cat", &remote(&key)])));
            let (url, headers) = mint(mftd.http_port, size, ChatType::Im);
            up.push(mb_s(size, curl_put(&url, &file, &headers)));
            down.push(mb_s(size, curl_get(&url)));
        }
        let rc_put = t.add("rclone `copyto` (multipart, its defaults)", Series(rc_put));
        let put = t.add(
            "**mftd** HTTP PUT → S3 store (201 after completion)",
            Series(up),
        );
        let rc_get = t.add("rclone `cat`", Series(rc_get));
        let get = t.add("**mftd** HTTP GET ← S3 store", Series(down));
        t.baseline = Some(rc_put);
        t.target(put, rc_put, 0.9);
        t.target(get, rc_get, 0.9);
        t.note =
            "Both clients talk to the same Garage node; each run does rclone then mftd.".into();
        report.push_str(&t.render());
    }
    drop(mftd);
    concurrent(a, work, &garage, report);
}

/// Six concurrent uploads through one node, then spread over two nodes.
fn concurrent(a: &Args, work: &Path, garage: &Garage, report: &mut String) {
    const UPLOADS: usize = 6;
    let size = if a.smoke { 8 * MIB } else { 100 * MIB };
    let file = make_file(work, size);
    let mut t = Table::new(
        &format!(
            "{UPLOADS} concurrent uploads of {} MiB (aggregate MB/s)",
            size / MIB
        ),
        "MB/s",
    );
    let mut memory = Vec::new();
    for nodes in [1usize, 2] {
        let mftds: Vec<Mftd> = (1..=nodes)
            .map(|n| {
                let name = format!("node_{n}");
                let mut opts = bench_options(Some(garage.store_section(0, &name)), "");
                opts.limits = "max_file_size = \"2 GiB\"\n".into();
                Mftd::start_with(
                    &opts,
                    xmpp_tests::mftd::binary(),
                    vec![("MFTD_NODE__NAME".into(), name)],
                )
            })
            .collect();
        let before: Vec<f64> = mftds.iter().map(|m| hwm_mib(mftd_pid(m))).collect();
        let mut rates = Vec::new();
        for _ in 0..a.runs {
            let started = Instant::now();
            std::thread::scope(|s| {
                for i in 0..UPLOADS {
                    let port = mftds[i % nodes].http_port;
                    let file = &file;
                    s.spawn(move || {
                        let (url, headers) = mint(port, size, ChatType::Im);
                        curl_put(&url, file, &headers);
                    });
                }
            });
            rates.push(mb_s(size * UPLOADS as u64, started.elapsed().as_secs_f64()));
        }
        let grown: f64 = mftds
            .iter()
            .zip(&before)
            .map(|(m, b)| hwm_mib(mftd_pid(m)) - b)
            .sum();
        memory.push((nodes, grown / UPLOADS as f64));
        t.add(&format!("**mftd**, {nodes} node(s)"), Series(rates));
    }
    t.note = format!(
        "Peak memory growth per concurrent upload (VmHWM after − before, over the nodes): {}.",
        memory
            .iter()
            .map(|(n, m)| format!("{m:.1} MiB with {n} node(s)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    report.push_str(&t.render());
}

fn remote(key: &str) -> String {
    format!("garage:{BUCKET}/{key}")
}

/// Seconds an rclone command takes against the cluster (configured through
/// the environment: nothing written to rclone's own config file).
fn rclone(garage: &Garage, args: &[&str]) -> f64 {
    let started = Instant::now();
    let out = Command::new("rclone")
        .args(args)
        .env("RCLONE_CONFIG", "/dev/null")
        // A CA bundle for AWS's endpoints means nothing to a plain-HTTP
        // endpoint, and rclone refuses to start with one on this transport.
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG_GARAGE_TYPE", "s3")
        .env("RCLONE_CONFIG_GARAGE_PROVIDER", "Other")
        .env("RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID", &garage.key_id)
        .env("RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY", &garage.secret)
        .env("RCLONE_CONFIG_GARAGE_ENDPOINT", garage.endpoint(0))
        .env("RCLONE_CONFIG_GARAGE_REGION", REGION)
        .env("RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE", "true")
        .stdout(std::process::Stdio::null())
        .output()
        .expect("rclone (Debian package rclone; scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "rclone {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed().as_secs_f64()
}
