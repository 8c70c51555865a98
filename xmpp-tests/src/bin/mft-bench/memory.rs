//! Scenarios 4 and 5: peak memory, and many concurrent uploads.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::report::{Series, Table};
use crate::tools::*;
use crate::Args;

use mft_storage::ChatType;
use xmpp_tests::mftd::Mftd;
use xmpp_tests::sshd::Sshd;

/// Scenarios 4 and 5: peak memory, and many concurrent uploads.
pub fn run(a: &Args, work: &Path, report: &mut String) {
    let sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let key = sshd.node_key(keys.path(), "node_1");
    let _ = writeln!(report, "## Memory and concurrency\n");
    let big = if a.smoke { 16 * MIB } else { 4096 * MIB };
    let big_file = make_file(work, big);
    let mut mem = Table::new("Peak RSS of mftd (MiB)", "MiB");
    for (name, store) in [
        ("local", None),
        ("SFTP", Some(sshd.store_toml("node_1", &key))),
    ] {
        let mftd = Mftd::start(&bench_options(store, ""));
        let pid = mftd_pid(&mftd);
        let idle = hwm_mib(pid);
        mftd_upload_download(&mftd, &big_file, big, 1);
        mem.add(&format!("idle ({name} store)"), Series(vec![idle]));
        mem.add(
            &format!("after {} MiB upload + download ({name})", big / MIB),
            Series(vec![hwm_mib(pid)]),
        );
    }
    // 200 concurrent uploads of 10 MiB.
    let n = if a.smoke { 20 } else { 200 };
    let each = 10 * MIB;
    let small = make_file(work, each);
    // 200 users behind one loopback address: the per-client share of the
    // permits (a quarter by default) would refuse most of them.
    let mftd = xmpp_tests::mftd::Mftd::start_with(
        &bench_options(None, ""),
        xmpp_tests::mftd::binary(),
        vec![("MFTD_HTTP__MAX_TRANSFERS_PER_CLIENT".into(), "512".into())],
    );
    let pid = mftd_pid(&mftd);
    let port = mftd.http_port;
    let started = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let small = small.clone();
            std::thread::spawn(move || {
                let (url, headers) = mint(port, each, ChatType::Im);
                std::panic::catch_unwind(|| curl_put(&url, &small, &headers)).ok()
            })
        })
        .collect();
    let times: Vec<Option<f64>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wall = started.elapsed().as_secs_f64();
    let errors = times.iter().filter(|t| t.is_none()).count();
    let ok: Vec<f64> = times.into_iter().flatten().collect();
    mem.add(
        &format!("after {n} concurrent 10 MiB uploads (local)"),
        Series(vec![hwm_mib(pid)]),
    );
    report.push_str(&mem.render());
    let lat = Series(ok.iter().map(|s| s * 1000.0).collect());
    let sorted = lat.sorted();
    let p99 = sorted
        .get((sorted.len() * 99 / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN);
    let _ = writeln!(
        report,
        "### {n} concurrent uploads of 10 MiB (local store)\n\nthroughput {:.1} MB/s · errors {errors} · p50 {:.0} ms · p99 {:.0} ms\n",
        mb_s(each * (n as u64 - errors as u64), wall),
        lat.median(),
        p99
    );
    drop(mftd);
}
