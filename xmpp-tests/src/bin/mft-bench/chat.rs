//! Scenario 8, the chat workload (issue 26): many users uploading chat-sized
//! files through the real router — slot, PUT, then 1–3 GETs by other users —
//! against mftd (Prosody as its router, PostgreSQL as its log), Prosody's
//! mod_http_file_share and ejabberd's mod_http_upload, in one run.
//! Saturation in closed loop, then latency in open loop at 50 % and 80 % of
//! each server's own saturation, and the CPU each server spent per file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::chat_load::{self, Mode, Outcome, Rng, Target, User, Workload};
use crate::report::Series;
use crate::tools::*;
use crate::Args;

use xmpp_tests::mftd::{Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};
use xmpp_tests::sshd::Sshd;

/// The row of mftd on the SFTP store (its target is against row 0).
const SFTP_ROW: &str = "mftd, SFTP store (OpenSSH sshd on 127.0.0.1), PostgreSQL log";

/// One system under test, started for the whole scenario.
struct System {
    name: String,
    target: Arc<Target>,
    /// The process that serves HTTP (its CPU is "CPU per file").
    server: u32,
    /// Other processes whose CPU is reported beside it (router, database).
    others: Vec<(&'static str, u32)>,
    /// Directories whose files are removed between phases (the disk is small).
    stores: Vec<PathBuf>,
    users: Vec<User>,
    _keep: Vec<Box<dyn std::any::Any>>,
}

/// What one run of the three phases measured for a system.
struct RunFigures {
    saturation: f64,
    gets_per_s: f64,
    cpu_per_1000: f64,
    others_per_1000: Vec<f64>,
    machine_per_1000: f64,
    at50: Outcome,
    at80: Outcome,
    errors: u64,
    first_error: Option<String>,
}

/// The pid listening on TCP `port` on 127.0.0.1.
fn listener_pid(port: u16) -> u32 {
    let out = sh(&format!("ss -Hltnp 'sport = :{port}'"));
    out.split("pid=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("nobody listens on {port}: {out}"))
}

/// `pid` and all its descendants now.
fn with_descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(pp) = ppid {
            parent_of.push((p, pp));
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap()
}

/// Where an mftd under test keeps its files.
enum FileServer {
    /// The node directory on this machine's disk.
    Local,
    /// A real OpenSSH sshd on 127.0.0.1 (its own node directory there).
    Sftp,
}

fn start_mftd(
    name: &str,
    binary: PathBuf,
    pg: &Postgres,
    node: &str,
    rt: &tokio::runtime::Runtime,
    users: usize,
    files: FileServer,
) -> System {
    let prosody = Prosody::start(ProsodyOptions::default());
    let mut opts = MftdOptions::for_prosody(&prosody);
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut sftp_root = None;
    let mut file_server = None;
    if let FileServer::Sftp = files {
        let sshd = Sshd::start();
        file_server = Some(listener_pid(sshd.port));
        let keys = tempfile::tempdir().unwrap();
        let key = sshd.node_key(keys.path(), node);
        opts.store = Some(sshd.store_toml(node, &key));
        sftp_root = Some(sshd.node_root().join(node));
        keep.push(Box::new(sshd));
        keep.push(Box::new(keys));
    }
    opts.limits = "max_file_size = \"0\"\nslots_per_minute = 0\n".into();
    opts.extra = format!("[database]\nurl = \"{}\"\n", pg.url());
    // Every user sits behind 127.0.0.1: the per-client share is the whole budget.
    let mftd = Mftd::start_with(
        &opts,
        binary,
        vec![
            ("MFTD_HTTP__MAX_TRANSFERS_PER_CLIENT".into(), "1024".into()),
            ("MFTD_HTTP__MAX_TRANSFERS".into(), "1024".into()),
            ("MFTD_NODE__NAME".into(), node.into()),
            // The production default level, not the harness's debug.
            ("RUST_LOG".into(), "info".into()),
        ],
    );
    mftd.wait_connected(1);
    let target = Arc::new(Target {
        c2s: prosody.c2s_addr(),
        domain: prosody.domain.clone(),
        user: "alice".into(),
        password: "alice-pw".into(),
        service: prosody.component_jid.clone(),
    });
    let users = rt.block_on(chat_load::login(&target, users));
    let pg_pid = listener_pid(port_of(pg.url().split('/').nth(2).unwrap()));
    let store = sftp_root.unwrap_or_else(|| mftd.node_dir());
    let (mftd_pid, prosody_port) = (mftd.pid(), prosody.c2s_port);
    // Stopped before the file server it writes to.
    keep.insert(0, Box::new(prosody));
    keep.insert(0, Box::new(mftd));
    let mut others = vec![
        ("Prosody (router)", listener_pid(prosody_port)),
        ("PostgreSQL", pg_pid),
    ];
    // sshd and the sftp-server of each session (its descendants).
    others.extend(file_server.map(|pid| ("file server (sshd)", pid)));
    System {
        name: name.into(),
        server: mftd_pid,
        others,
        stores: vec![store],
        target,
        users,
        _keep: keep,
    }
}

fn start_prosody_share(rt: &tokio::runtime::Runtime, users: usize) -> System {
    let port = xmpp_tests::process::free_port();
    let prosody = Prosody::start(ProsodyOptions {
        read_size: 1 << 20,
        file_share_port: Some(port),
        ..ProsodyOptions::default()
    });
    let target = Arc::new(Target {
        c2s: prosody.c2s_addr(),
        domain: prosody.domain.clone(),
        user: "alice".into(),
        password: "alice-pw".into(),
        service: format!("share.{}", prosody.domain),
    });
    let users = rt.block_on(chat_load::login(&target, users));
    System {
        name: "Prosody 0.12 mod_http_file_share (1 MiB reads)".into(),
        server: listener_pid(port),
        others: vec![],
        stores: vec![prosody.data_dir()],
        target,
        users,
        _keep: vec![Box::new(prosody)],
    }
}

fn start_ejabberd(rt: &tokio::runtime::Runtime, users: usize) -> System {
    let ej = xmpp_tests::ejabberd::Ejabberd::start();
    let target = Arc::new(Target {
        c2s: ej.c2s_addr(),
        domain: "example.test".into(),
        user: "alice".into(),
        password: "alice-pw".into(),
        service: "upload.example.test".into(),
    });
    let users = rt.block_on(chat_load::login(&target, users));
    System {
        name: "ejabberd 23.01 mod_http_upload".into(),
        server: listener_pid(ej.c2s_port),
        others: vec![],
        stores: vec![ej.docroot()],
        target,
        users,
        _keep: vec![Box::new(ej)],
    }
}

fn phase(
    rt: &tokio::runtime::Runtime,
    sys: &mut System,
    load: Workload,
    mode: Mode,
    body: &Arc<Vec<u8>>,
) -> Outcome {
    let mut watch = vec![with_descendants(sys.server)];
    watch.extend(sys.others.iter().map(|(_, p)| with_descendants(*p)));
    let users = std::mem::take(&mut sys.users);
    let (users, out) = rt.block_on(chat_load::run(
        sys.target.clone(),
        users,
        load,
        mode,
        body.clone(),
        watch,
    ));
    sys.users = users;
    // Between phases too, but only when the disk runs short.
    let avail_kib: u64 = sh(&format!(
        "df --output=avail -k '{}' | tail -n1",
        sys.stores[0].display()
    ))
    .trim()
    .parse()
    .unwrap_or(u64::MAX);
    if avail_kib < 12 << 20 {
        for d in &sys.stores {
            clear_files(d);
        }
        sh("sync");
    }
    out
}

fn measure(
    rt: &tokio::runtime::Runtime,
    sys: &mut System,
    load: Workload,
    body: &Arc<Vec<u8>>,
) -> RunFigures {
    let sat = phase(rt, sys, load, Mode::Closed, body);
    let secs = sat.window.as_secs_f64();
    let saturation = sat.files as f64 / secs;
    let per_1000 = |cpu: f64| cpu / (sat.files.max(1) as f64) * 1000.0;
    let at50 = phase(rt, sys, load, Mode::Open(saturation * 0.5), body);
    let at80 = phase(rt, sys, load, Mode::Open(saturation * 0.8), body);
    // The disk is small. Removing files costs every server that creates
    // files soon after in the same ext4 block group (without a journal,
    // each new inode is checked against recent deletions), so a system's
    // files go only after its three phases, followed by a sync.
    for d in &sys.stores {
        clear_files(d);
    }
    sh("sync");
    RunFigures {
        saturation,
        gets_per_s: sat.gets as f64 / secs,
        cpu_per_1000: per_1000(sat.cpu[0]),
        others_per_1000: sat.cpu[1..].iter().map(|&c| per_1000(c)).collect(),
        machine_per_1000: per_1000(sat.machine_cpu),
        errors: sat.errors + at50.errors + at80.errors,
        first_error: sat
            .first_error
            .clone()
            .or(at50.first_error.clone())
            .or(at80.first_error.clone()),
        at50,
        at80,
    }
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] * 1000.0
}

fn spread(s: &Series, digits: usize) -> String {
    if s.0.len() == 1 {
        format!("{:.*}", digits, s.median())
    } else {
        format!(
            "{:.*} ({:.*}–{:.*})",
            digits,
            s.median(),
            digits,
            s.min(),
            digits,
            s.max()
        )
    }
}

fn lat(outs: &[&Outcome], f: impl Fn(&Outcome) -> &Vec<f64>) -> String {
    let all: Vec<f64> = outs.iter().flat_map(|o| f(o).iter().copied()).collect();
    format!(
        "{:.0} / {:.0} / {:.0}",
        pct(&all, 0.5),
        pct(&all, 0.99),
        pct(&all, 0.999)
    )
}

/// One phase's legs of slot→201 as four table cells: p50 / p99 of the
/// time queued, of the slot's round trip and of the PUT's, then the mean
/// of each leg over the slowest 1 % of uploads.
fn legs(outs: &[&Outcome]) -> String {
    let all: Vec<[f64; 3]> = outs.iter().flat_map(|o| o.legs.iter().copied()).collect();
    let leg = |i: usize| {
        let v: Vec<f64> = all.iter().map(|l| l[i]).collect();
        format!("{:.0} / {:.0}", pct(&v, 0.5), pct(&v, 0.99))
    };
    let mut slowest = all.clone();
    slowest.sort_by(|a, b| (b[0] + b[1] + b[2]).total_cmp(&(a[0] + a[1] + a[2])));
    slowest.truncate(all.len().div_ceil(100));
    let mean =
        |i: usize| slowest.iter().map(|l| l[i]).sum::<f64>() * 1000.0 / slowest.len().max(1) as f64;
    format!(
        "{} | {} | {} | {:.0} / {:.0} / {:.0}",
        leg(0),
        leg(1),
        leg(2),
        mean(0),
        mean(1),
        mean(2)
    )
}

/// Scenario 8: the chat workload against mftd, Prosody and ejabberd.
pub fn run(a: &Args, _work: &Path, report: &mut String) {
    let quick = a.smoke || a.quick;
    let load = Workload {
        users: if quick { 20 } else { a.users },
        seed: 26,
        shrink: if quick { 16 } else { 1 },
        warmup: Duration::from_secs(if quick { 1 } else { 2 }),
        window: Duration::from_secs(if quick { 3 } else { a.window }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut body = vec![0u8; chat_load::MAX_FILE as usize];
    let mut rng = Rng::new(load.seed);
    for chunk in body.chunks_mut(8) {
        let r = rng.next().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    let body = Arc::new(body);
    let pg = Postgres::start();
    let mut systems = vec![start_mftd(
        "**mftd**, local store, PostgreSQL log",
        xmpp_tests::mftd::binary(),
        &pg,
        "node_1",
        &rt,
        load.users,
        FileServer::Local,
    )];
    if let Some(bin) = std::env::var_os("MFTD_BASELINE_BIN") {
        systems.push(start_mftd(
            "mftd, `$MFTD_BASELINE_BIN` build",
            bin.into(),
            &pg,
            "node_2",
            &rt,
            load.users,
            FileServer::Local,
        ));
    }
    systems.push(start_mftd(
        SFTP_ROW,
        xmpp_tests::mftd::binary(),
        &pg,
        "node_3",
        &rt,
        load.users,
        FileServer::Sftp,
    ));
    systems.push(start_prosody_share(&rt, load.users));
    systems.push(start_ejabberd(&rt, load.users));
    let mut figures: Vec<Vec<RunFigures>> = systems.iter().map(|_| Vec::new()).collect();
    let n = systems.len();
    for run in 0..a.runs {
        // Rotate who goes first, so no system always inherits the others' dirty pages.
        for k in 0..n {
            let i = (run + k) % n;
            sh("sync");
            eprintln!("chat: run {} of {}: {}", run + 1, a.runs, systems[i].name);
            let f = measure(&rt, &mut systems[i], load, &body);
            eprintln!(
                "chat:   {:.1} files/s, {:.2} CPU s per 1000 files, {} errors",
                f.saturation, f.cpu_per_1000, f.errors
            );
            figures[i].push(f);
        }
    }
    let _ = writeln!(
        report,
        "## Chat workload (issue 26)\n\n{} users through the router, each: slot → PUT → 1–3 GETs by other users; sizes from a seeded mix \
         (70 % 100 KiB–3 MiB, 20 % 5–20 MiB, 10 % 20 KiB–2 MiB{}); closed loop for saturation, then open loop (Poisson arrivals, \
         latency from the arrival) at 50 % and 80 % of each server's own saturation. Window {} s after {} s warm-up per phase; \
         {} run(s), systems rotated; median (min–max) over runs. Latencies in ms, p50 / p99 / p99.9, pooled over runs.\n",
        load.users,
        if load.shrink > 1 { format!(", every size divided by {}", load.shrink) } else { String::new() },
        load.window.as_secs(),
        load.warmup.as_secs(),
        a.runs
    );
    let _ = writeln!(
        report,
        "| | files/s at saturation | GETs/s | server CPU s per 1000 files | others' CPU s per 1000 files | machine CPU s per 1000 files | peak RSS MiB | slot→201 at 50 % | slot→201 at 80 % | GET TTFB at 50 % | GET TTFB at 80 % | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let med = |f: &[RunFigures], g: &dyn Fn(&RunFigures) -> f64| Series(f.iter().map(g).collect());
    for (sys, f) in systems.iter().zip(&figures) {
        let others = sys
            .others
            .iter()
            .enumerate()
            .map(|(j, (name, _))| {
                format!("{name} {}", spread(&med(f, &|r| r.others_per_1000[j]), 2))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let a50: Vec<&Outcome> = f.iter().map(|r| &r.at50).collect();
        let a80: Vec<&Outcome> = f.iter().map(|r| &r.at80).collect();
        let _ = writeln!(
            report,
            "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {}{} |",
            sys.name,
            spread(&med(f, &|r| r.saturation), 1),
            spread(&med(f, &|r| r.gets_per_s), 1),
            spread(&med(f, &|r| r.cpu_per_1000), 2),
            if others.is_empty() {
                "—".into()
            } else {
                others
            },
            spread(&med(f, &|r| r.machine_per_1000), 2),
            hwm_mib(sys.server),
            lat(&a50, |o| &o.send_to_201),
            lat(&a80, |o| &o.send_to_201),
            lat(&a50, |o| &o.get_ttfb),
            lat(&a80, |o| &o.get_ttfb),
            f.iter().map(|r| r.errors).sum::<u64>(),
            f.iter()
                .find_map(|r| r.first_error.clone())
                .map(|e| format!(" (first: {})", e.replace('|', "/")))
                .unwrap_or_default(),
        );
    }
    let _ = writeln!(
        report,
        "\nWhere slot→201 goes (ms, p50 / p99 of each leg; the slowest 1 %: mean of each leg): queued behind the user's previous upload, \
         the slot request's round trip through the router, the PUT's round trip to its 201.\n\n\
         | | at 50 %: queued | slot | PUT → 201 | slowest 1 % at 50 %: queued / slot / PUT | at 80 %: queued | slot | PUT → 201 | slowest 1 % at 80 % |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (sys, f) in systems.iter().zip(&figures) {
        let a50: Vec<&Outcome> = f.iter().map(|r| &r.at50).collect();
        let a80: Vec<&Outcome> = f.iter().map(|r| &r.at80).collect();
        let _ = writeln!(report, "| {} | {} | {} |", sys.name, legs(&a50), legs(&a80));
    }
    // Ratios and the targets, mftd (row 0) against each peer.
    let m = &figures[0];
    let rate = |f: &[RunFigures]| med(f, &|r| r.saturation).median();
    let cpu = |f: &[RunFigures]| med(f, &|r| r.cpu_per_1000).median();
    let machine = |f: &[RunFigures]| med(f, &|r| r.machine_per_1000).median();
    let p99_50 = |f: &[RunFigures]| {
        let all: Vec<f64> = f
            .iter()
            .flat_map(|r| r.at50.send_to_201.iter().copied())
            .collect();
        pct(&all, 0.99)
    };
    let _ = writeln!(report);
    for (sys, f) in systems.iter().zip(&figures).skip(1) {
        let _ = writeln!(
            report,
            "- mftd against {}: files/s {:.2}×, CPU per file {:.2}× (the machine's {:.2}×), p99 slot→201 at 50 % {:.2}×",
            sys.name,
            rate(m) / rate(f),
            cpu(m) / cpu(f),
            machine(m) / machine(f),
            p99_50(m) / p99_50(f),
        );
    }
    let peers: Vec<&Vec<RunFigures>> = systems
        .iter()
        .zip(&figures)
        .filter(|(s, _)| !s.name.contains("mftd"))
        .map(|(_, f)| f)
        .collect();
    let best_rate = peers.iter().map(|f| rate(f)).fold(0.0, f64::max);
    let best_p99 = peers
        .iter()
        .map(|f| p99_50(f))
        .fold(f64::INFINITY, f64::min);
    let got = rate(m) / best_rate;
    if let Some((_, f)) = systems
        .iter()
        .zip(&figures)
        .find(|(s, _)| s.name == SFTP_ROW)
    {
        let sftp = rate(f) / rate(m);
        let _ = writeln!(
            report,
            "- target: files/s on the SFTP store ≥ 0.8× mftd's own local store: {sftp:.2}×, {}",
            if sftp >= 0.8 {
                "met".to_owned()
            } else {
                format!("**not met** (short by {:.0} %)", (1.0 - sftp / 0.8) * 100.0)
            },
        );
    }
    let _ = writeln!(
        report,
        "- target: files/s ≥ 1.2× the better peer: {got:.2}×, {}\n- target: p99 slot→201 at 50 % ≤ the better peer's: {:.0} ms against {:.0} ms, {}\n",
        if got >= 1.2 { "met".to_owned() } else { format!("**not met** (short by {:.0} %)", (1.0 - got / 1.2) * 100.0) },
        p99_50(m),
        best_p99,
        if p99_50(m) <= best_p99 { "met".to_owned() } else { format!("**not met** ({:.0} % over)", (p99_50(m) / best_p99 - 1.0) * 100.0) },
    );
    let _ = writeln!(
        report,
        "Server CPU: utime+stime of the process serving HTTP (mftd; Prosody, which is also the router; ejabberd's beam.smp) over the saturation window, per 1000 files stored. \
         mftd's router (Prosody) and database (PostgreSQL, all its processes) are reported beside it; the peers have neither. \
         Machine CPU: all CPU time the machine was busy over the saturation window per 1000 files (every process — the load client too — and the kernel's threads, \
         among them the writeback that writes out the files of a server that does not fsync them itself, which no process's own figure counts). \
         On the SFTP store the file server's CPU is sshd's and that of its session processes open when the phase began (sessions set up during a phase are not counted). \
         mftd answers 201 after fsync of file and directory and a committed log row; the peers write without fsync and log nothing. \
         All users are resources of one account (the peers have no per-account admission; mftd's per-client and per-account shares are set to the whole budget, as all users share 127.0.0.1).\n"
    );
    drop(systems);
    drop(pg);
}
