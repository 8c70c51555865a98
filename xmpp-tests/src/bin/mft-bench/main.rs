//! `mft-bench`: mftd against its peers on this machine, in one run, with the
//! same HTTP client (curl) and the same files. Writes a Markdown report with
//! median, min and max over the runs and the ratio to the baseline measured
//! in the same run. `--smoke` runs every scenario once on small sizes so the
//! suite cannot rot (CI runs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Parser;
use mft_common::utc::UtcTime;

mod chat;
mod chat_client;
mod chat_load;
mod cluster;
mod https;
mod local;
mod log;
mod memory;
mod object_store;
mod report;
mod sftp;
mod slots;
mod soak;
mod tools;

use tools::sh;

/// mftd's benchmark suite: mftd beside its peers, in one run, as a Markdown report.
#[derive(Parser)]
pub struct Args {
    /// Small sizes, one run: checks that every scenario still works.
    #[arg(long)]
    pub smoke: bool,
    /// Runs per figure (median, min and max are reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The chat workload at CI size (20 users, small files, 3 s windows).
    #[arg(long)]
    pub quick: bool,
    /// Simulated users of the chat workload.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Seconds each chat-workload phase is measured for.
    #[arg(long, default_value_t = 8)]
    pub window: u64,
    /// Run only these scenarios (`local`, `https`, `sftp`, `s3`, `memory`, `slots`, `log`, `cluster`, `chat`, `soak`); all but `soak` when empty.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Minutes the soak runs (`--only soak`; not part of a full run).
    #[arg(long, default_value_t = 60.0)]
    pub minutes: f64,
    /// Uploads per second the soak offers.
    #[arg(long, default_value_t = 4.0)]
    pub rate: f64,
    /// Where the report goes.
    #[arg(long, default_value = "target/bench-report.md")]
    pub out: PathBuf,
}

fn main() {
    let mut a = Args::parse();
    if a.smoke {
        a.runs = 1;
    }
    let work = tempfile::tempdir_in("target").unwrap();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "# mftd benchmark report\n\nDate: {} · machine: {} cores, {} · runs per figure: {}{}\n\nCommand: `{}`\n",
        UtcTime::now().xep0082(),
        sh("nproc"),
        sh("awk '/MemTotal/ {printf \"%.0f GiB RAM\", $2/1048576}' /proc/meminfo"),
        a.runs,
        if a.smoke { " (smoke mode: small sizes, one run — not for reading)" } else { "" },
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(
        report,
        "Versions: mftd {} · {} · {} · {} · {}\n",
        sh(&format!(
            "{} --version",
            xmpp_tests::mftd::binary().display()
        )),
        sh("dpkg-query -W -f='prosody ${Version}' prosody"),
        sh("ssh -V 2>&1"),
        sh("dpkg-query -W -f='postgresql ${Version}' postgresql"),
        sh("curl --version | head -n1 | cut -d' ' -f1,2"),
    );
    let _ = writeln!(report, "Every transfer uses the same client: `curl` over HTTP/1.1 on 127.0.0.1, files of random bytes.\n");

    type Scenario = fn(&Args, &std::path::Path, &mut String);
    let scenarios: [(&str, Scenario); 10] = [
        ("local", local::run),
        ("https", https::run),
        ("sftp", sftp::run),
        ("s3", object_store::run),
        ("memory", memory::run),
        ("slots", slots::run),
        ("log", log::run),
        ("cluster", cluster::run),
        ("chat", chat::run),
        ("soak", soak::run),
    ];
    for (name, run) in scenarios {
        // The soak runs only when asked for: it takes an hour.
        let wanted = if a.only.is_empty() {
            name != "soak"
        } else {
            a.only.iter().any(|o| o == name)
        };
        if wanted {
            run(&a, work.path(), &mut report);
        }
    }
    std::fs::write(&a.out, &report).unwrap();
    println!("{report}");
    eprintln!("report written to {}", a.out.display());
}
