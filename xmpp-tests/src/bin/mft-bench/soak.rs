//! The soak (issue 23): the chat workload at a steady offered rate for a
//! long time (an hour by default) against mftd on the SFTP store, with the
//! transfer log on and retention sweeping, while faults are injected at
//! random — sshd, PostgreSQL and the router restarted, the file server link
//! stalled. Every few seconds it samples what drifts when something leaks
//! (RSS, descriptors, SSH and database connections, the log's queue, the
//! transfers in flight). Afterwards every `201` must have its row and its
//! file (or a recorded removal), `mftd verify --all` must be clean, and each
//! curve must be flat after the warm-up. Writes a Markdown section and an
//! SVG plot.
//!
//! Not part of CI: `scripts/soak.sh` runs it (`--minutes` shortens it).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::chat_client::{HttpConn, XmppSession};
use crate::chat_load::{self, Rng};
use crate::tools::sh;
use crate::Args;

use xmpp_tests::delay_link::DelayLink;
use xmpp_tests::mftd::{Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::free_port;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};
use xmpp_tests::sshd::Sshd;

/// Files are this many times smaller than the chat mix (the disk is small).
const SHRINK: u64 = 16;
/// How often the curves are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long a stalled link stays stalled.
const STALL_FOR: Duration = Duration::from_secs(8);

/// One sample of the curves.
#[derive(Clone, Copy, Default)]
struct Sample {
    at_s: f64,
    rss_mib: f64,
    fds: f64,
    ssh_sessions: f64,
    db_connections: f64,
    log_queue: f64,
    in_flight: f64,
}

/// A curve: its name and how a sample gives its value.
type Curve = (&'static str, fn(&Sample) -> f64);

const CURVES: [Curve; 6] = [
    ("RSS (MiB)", |s| s.rss_mib),
    ("open descriptors", |s| s.fds),
    ("SSH sessions", |s| s.ssh_sessions),
    ("database connections", |s| s.db_connections),
    ("log queue depth", |s| s.log_queue),
    ("transfers in flight", |s| s.in_flight),
];

#[derive(Default)]
struct Tally {
    stored: AtomicU64,
    gets: AtomicU64,
    failed: AtomicU64,
    relogins: AtomicU64,
    /// Resources answered 201.
    resources: Mutex<Vec<String>>,
}

fn status_value(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Established TCP connections of `pid` to 127.0.0.1:`port`.
fn connections_to(pid: u32, port: u16) -> f64 {
    sh(&format!(
        "ss -Htnp state established '( dport = :{port} )' | grep -c 'pid={pid},' || true"
    ))
    .trim()
    .parse()
    .unwrap_or(0.0)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn sample(t0: Instant, pid: u32, ssh_port: u16, pg_port: u16, admin: &str) -> Sample {
    let (_, metrics) = xmpp_tests::http::get_with(&format!("{admin}/metrics"), &[]);
    Sample {
        at_s: t0.elapsed().as_secs_f64(),
        rss_mib: status_value(pid, "VmRSS:") / 1024.0,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()) as f64,
        ssh_sessions: connections_to(pid, ssh_port),
        db_connections: connections_to(pid, pg_port),
        log_queue: metric(&metrics, "mftd_transfer_log_queue_depth"),
        in_flight: metric(&metrics, "mftd_transfers_in_flight"),
    }
}

/// One simulated user until `stop`: uploads at exponential intervals of
/// mean `mean_gap`, each followed by 1–3 GETs; a broken session is logged
/// in again (the router restarts).
async fn user_loop(
    u: usize,
    prosody: (String, String, String),
    mean_gap: f64,
    body: Arc<Vec<u8>>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let (c2s, domain, service) = prosody;
    let mut rng = Rng::new(0x50A4 ^ (u as u64).wrapping_mul(0x9E37));
    let mut session: Option<XmppSession> = None;
    let (mut put, mut get) = (HttpConn::default(), HttpConn::default());
    let mut i = 0u64;
    let mut logged_in_before = false;
    while !stop.load(Ordering::Relaxed) {
        let gap = -(1.0 - rng.unit()).ln() * mean_gap;
        tokio::time::sleep(Duration::from_secs_f64(gap.min(mean_gap * 5.0))).await;
        if session.is_none() {
            let resource = format!("soak{u}");
            let login = XmppSession::login(&c2s, &domain, "alice", "alice-pw", &resource);
            match tokio::time::timeout(Duration::from_secs(10), login).await {
                Ok(Ok(s)) => {
                    if logged_in_before {
                        tally.relogins.fetch_add(1, Ordering::Relaxed);
                    }
                    logged_in_before = true;
                    session = Some(s);
                }
                _ => continue,
            }
        }
        let Some(s) = session.as_mut() else { continue };
        i += 1;
        let size = (chat_load::file_size(&mut rng) / SHRINK).max(1);
        let name = format!("soak-u{u}-{i}.bin");
        let slot = match tokio::time::timeout(
            Duration::from_secs(20),
            s.slot(&service, &name, size),
        )
        .await
        {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) | Err(_) => {
                // An error reply, a dead router or a link that is down:
                // counted, and the session is made again.
                tally.failed.fetch_add(1, Ordering::Relaxed);
                session = None;
                continue;
            }
        };
        let answer = put
            .request("PUT", &slot.put, &slot.headers, &body[..size as usize])
            .await;
        match answer {
            Ok(a) if a.status == 201 => {
                tally.stored.fetch_add(1, Ordering::Relaxed);
                let resource = slot.get.rsplit('/').nth(1).unwrap_or("").to_owned();
                tally.resources.lock().expect("lock").push(resource);
                for _ in 0..rng.range(1, 3) {
                    match get.request("GET", &slot.get, &[], &[]).await {
                        Ok(a) if a.status == 200 => {
                            tally.gets.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            _ => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The faults, one at a time at random intervals around `every`.
struct Faults {
    sshd: Sshd,
    pg: Postgres,
    prosody: Prosody,
    link: DelayLink,
    log: Vec<(f64, &'static str)>,
}

impl Faults {
    fn inject(&mut self, t0: Instant, rng: &mut Rng) {
        let what = match rng.range(0, 3) {
            0 => {
                self.sshd.restart();
                "sshd restarted"
            }
            1 => {
                self.pg.restart();
                "PostgreSQL restarted"
            }
            2 => {
                self.prosody.restart();
                "router restarted"
            }
            _ => {
                self.link.stall();
                std::thread::sleep(STALL_FOR);
                self.link.heal();
                "file server link stalled 8 s"
            }
        };
        eprintln!("soak: {:>6.0} s: {what}", t0.elapsed().as_secs_f64());
        self.log.push((t0.elapsed().as_secs_f64(), what));
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// An SVG with one small line chart per curve and the faults as ticks.
fn plot(samples: &[Sample], faults: &[(f64, &'static str)]) -> String {
    let (w, h, pad) = (560.0, 120.0, 40.0);
    let end = samples.last().map_or(1.0, |s| s.at_s).max(1.0);
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif' font-size='11'>\n<rect width='100%' height='100%' fill='white'/>\n",
        w + 2.0 * pad,
        (h + pad) * CURVES.len() as f64 + pad
    );
    for (k, (name, f)) in CURVES.iter().enumerate() {
        let top = pad + k as f64 * (h + pad);
        let values: Vec<f64> = samples.iter().map(f).collect();
        let max = values.iter().copied().fold(1.0, f64::max) * 1.1;
        let _ = writeln!(
            svg,
            "<text x='{pad}' y='{}'>{name} (max {:.0})</text><rect x='{pad}' y='{top}' width='{w}' height='{h}' fill='none' stroke='#999'/>",
            top - 6.0,
            max / 1.1
        );
        for (at, _) in faults {
            let x = pad + at / end * w;
            let _ = writeln!(
                svg,
                "<line x1='{x:.1}' y1='{top}' x2='{x:.1}' y2='{:.1}' stroke='#e88' stroke-dasharray='2,2'/>",
                top + h
            );
        }
        let points: Vec<String> = samples
            .iter()
            .zip(&values)
            .map(|(s, v)| format!("{:.1},{:.1}", pad + s.at_s / end * w, top + h - v / max * h))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill='none' stroke='#236' stroke-width='1.2' points='{}'/>",
            points.join(" ")
        );
        let _ = writeln!(
            svg,
            "<text x='{}' y='{}' text-anchor='end'>{:.0} s</text>",
            pad + w,
            top + h + 12.0,
            end
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The soak scenario.
pub fn run(a: &Args, work: &Path, report: &mut String) {
    let minutes = a.minutes;
    let duration = Duration::from_secs_f64(minutes * 60.0);
    let fault_every = Duration::from_secs_f64((duration.as_secs_f64() / 12.0).clamp(20.0, 300.0));
    let pg = Postgres::start();
    let sshd = Sshd::start();
    let link = DelayLink::start(sshd.port, Duration::ZERO);
    let prosody = Prosody::start(ProsodyOptions::default());
    let keys = tempfile::tempdir_in(work).unwrap();
    let key = sshd.node_key(keys.path(), "node_1");
    let store = sshd
        .store_toml("node_1", &key)
        .replace(
            &format!("port = {}", sshd.port),
            &format!("port = {}", link.port),
        )
        .replace(
            &format!("[127.0.0.1]:{}", sshd.port),
            &format!("[127.0.0.1]:{}", link.port),
        )
        .replace("io_timeout = \"10s\"", "io_timeout = \"5s\"");
    let admin_port = free_port();
    let mut opts = MftdOptions::for_prosody(&prosody);
    opts.limits = "max_file_size = \"0\"\nslots_per_minute = 0\n".into();
    opts.store = Some(store);
    opts.extra = format!(
        "[database]\nurl = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
         [retention]\nim = \"10m\"\nsweep_interval = \"2m\"\n",
        pg.url()
    );
    let mftd = Mftd::start_with(
        &opts,
        xmpp_tests::mftd::binary(),
        vec![
            ("MFTD_HTTP__MAX_TRANSFERS_PER_CLIENT".into(), "1024".into()),
            ("RUST_LOG".into(), "info".into()),
        ],
    );
    mftd.wait_connected(1);
    let admin = format!("http://127.0.0.1:{admin_port}");
    let (pid, ssh_port, pg_port) = (mftd.pid(), link.port, pg.port);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut body = vec![0u8; (chat_load::MAX_FILE / SHRINK) as usize + 1];
    let mut rng = Rng::new(23);
    for chunk in body.chunks_mut(8) {
        let r = rng.next().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    let body = Arc::new(body);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let users = a.users.min(50);
    let mean_gap = users as f64 / a.rate;
    let target = (
        prosody.c2s_addr(),
        prosody.domain.clone(),
        prosody.component_jid.clone(),
    );
    let tasks: Vec<_> = (0..users)
        .map(|u| {
            rt.spawn(user_loop(
                u,
                target.clone(),
                mean_gap,
                body.clone(),
                tally.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let t0 = Instant::now();
    let mut faults = Faults {
        sshd,
        pg,
        prosody,
        link,
        log: Vec::new(),
    };
    let mut samples = Vec::new();
    let mut next_fault = t0 + fault_every;
    let mut fault_rng = Rng::new(2323);
    while t0.elapsed() < duration {
        samples.push(sample(t0, pid, ssh_port, pg_port, &admin));
        if Instant::now() >= next_fault && t0.elapsed() + fault_every / 2 < duration {
            faults.inject(t0, &mut fault_rng);
            let jitter = 0.5 + fault_rng.unit();
            next_fault = Instant::now() + fault_every.mul_f64(jitter);
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(120), t).await;
        }
    });
    // Settled: in-flight rows committed, a sample of the quiet state.
    std::thread::sleep(Duration::from_secs(5));
    samples.push(sample(t0, pid, ssh_port, pg_port, &admin));

    // Every 201 has its POST row, and its file or a recorded removal.
    let answered: HashSet<String> = tally
        .resources
        .lock()
        .expect("lock")
        .iter()
        .cloned()
        .collect();
    let pg = &faults.pg;
    let rows: HashSet<String> = pg
        .psql("SELECT filename FROM aft_log WHERE method = 'POST' AND http_status = 201")
        .lines()
        .map(str::to_owned)
        .collect();
    // Live files whose bytes are on the file server.
    let node_dir = faults.sshd.node_root().join("node_1");
    let live: HashSet<String> = pg
        .psql("SELECT resource || '|' || storage_path FROM files WHERE deleted IS NULL")
        .lines()
        .filter_map(|l| l.split_once('|'))
        .filter(|(_, path)| node_dir.join(path).is_file())
        .map(|(r, _)| r.to_owned())
        .collect();
    let removed: HashSet<String> = pg
        .psql("SELECT resource FROM files WHERE deleted IS NOT NULL")
        .lines()
        .map(str::to_owned)
        .collect();
    let without_row = answered.difference(&rows).count();
    let lost = answered
        .iter()
        .filter(|r| !live.contains(*r) && !removed.contains(*r))
        .count();
    let verify = std::process::Command::new(xmpp_tests::mftd::binary())
        .args(["verify", "--all", "--config"])
        .arg(mftd.config_path())
        .output()
        .unwrap();
    let verify_text = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let verify_ok = verify.status.success();

    std::fs::write(a.out.with_extension("svg"), plot(&samples, &faults.log)).unwrap();
    let mut csv =
        String::from("seconds,rss_mib,fds,ssh_sessions,db_connections,log_queue,in_flight\n");
    for s in &samples {
        let _ = writeln!(
            csv,
            "{:.0},{:.1},{},{},{},{},{}",
            s.at_s, s.rss_mib, s.fds, s.ssh_sessions, s.db_connections, s.log_queue, s.in_flight
        );
    }
    std::fs::write(a.out.with_extension("csv"), csv).unwrap();

    let _ = writeln!(
        report,
        "## Soak (issue 23)\n\n{minutes} min, {users} users through Prosody, offered {:.1} uploads/s (chat mix / {SHRINK}), each followed by 1–3 GETs; \
         mftd on the SFTP store through a forwarding link, PostgreSQL log, retention im = 10 min swept every 2 min. \
         A fault every ~{:.0} s at random: {} faults ({}).\n",
        a.rate,
        fault_every.as_secs_f64(),
        faults.log.len(),
        faults.log.iter().map(|(at, w)| format!("{at:.0} s {w}")).collect::<Vec<_>>().join("; ")
    );
    let _ = writeln!(
        report,
        "- uploads answered 201: {}; GETs answered 200: {}; requests that failed during faults: {}; sessions made again: {}",
        tally.stored.load(Ordering::Relaxed),
        tally.gets.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.relogins.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        report,
        "- 201s without their POST row: **{without_row}**; 201s with neither their file nor a recorded removal: **{lost}**; files removed by retention meanwhile: {}",
        removed.len()
    );
    let _ = writeln!(
        report,
        "- `mftd verify --all`: **{}** ({})\n",
        if verify_ok { "clean" } else { "FINDINGS" },
        verify_text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
    );
    // Flat after warm-up: the last quarter against the second.
    let q = samples.len() / 4;
    let _ = writeln!(
        report,
        "| curve | 2nd quarter mean | last quarter mean | max | last/2nd |\n|---|---|---|---|---|"
    );
    for (name, f) in CURVES {
        let second: Vec<f64> = samples[q..2 * q].iter().map(f).collect();
        let last: Vec<f64> = samples[samples.len() - q..].iter().map(f).collect();
        let max = samples.iter().map(f).fold(0.0, f64::max);
        let (m2, ml) = (mean(&second), mean(&last));
        let _ = writeln!(
            report,
            "| {name} | {m2:.1} | {ml:.1} | {max:.0} | {} |",
            if m2 > 0.0 {
                format!("{:.2}", ml / m2)
            } else {
                "—".into()
            }
        );
    }
    let _ = writeln!(
        report,
        "\nPlot: `{}` (faults as dashed red lines); samples every {} s: `{}`.\n",
        a.out.with_extension("svg").display(),
        SAMPLE_EVERY.as_secs(),
        a.out.with_extension("csv").display()
    );
    if !verify_ok {
        eprintln!("{verify_text}");
    }
    drop(mftd);
}
