//! The chat workload's load generator: N users, each with its own c2s
//! session, asking one upload service for slots, PUTting a file from a fixed
//! seeded size mix and having 1–3 other users GET it. Closed loop (every
//! user uploads again as soon as the last one is answered: saturation) or
//! open loop (uploads arrive at a given rate whatever the server does, and
//! latency counts from the arrival, so a slow server is not excused by the
//! client waiting: no coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::chat_client::{HttpConn, XmppSession};

/// Where and how the users log in, and whom they ask for slots.
pub struct Target {
    pub c2s: String,
    pub domain: String,
    pub user: String,
    pub password: String,
    pub service: String,
}

/// The workload's shape.
#[derive(Clone, Copy)]
pub struct Workload {
    pub users: usize,
    pub seed: u64,
    /// Divides every file size (the quick variant uses small files).
    pub shrink: u64,
    pub warmup: Duration,
    pub window: Duration,
}

/// Closed loop (saturation) or an offered rate in uploads per second.
#[derive(Clone, Copy)]
pub enum Mode {
    Closed,
    Open(f64),
}

/// A seeded generator (splitmix64): the same seed gives the same files.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// The chat mix: 70 % 100 KiB–3 MiB, 20 % 5–20 MiB, 10 % 20 KiB–2 MiB.
pub fn file_size(rng: &mut Rng) -> u64 {
    match rng.range(0, 99) {
        0..=69 => rng.range(100 * KIB, 3 * MIB),
        70..=89 => rng.range(5 * MIB, 20 * MIB),
        _ => rng.range(20 * KIB, 2 * MIB),
    }
}

/// The largest file of the mix.
pub const MAX_FILE: u64 = 20 * MIB;

/// One user: a c2s session, a connection for its uploads and one for its downloads.
pub struct User {
    xmpp: XmppSession,
    put: HttpConn,
    get: HttpConn,
}

/// Logs `n` users in (16 at a time).
pub async fn login(target: &Arc<Target>, n: usize) -> Vec<User> {
    let mut users = Vec::with_capacity(n);
    for batch in (0..n).collect::<Vec<_>>().chunks(16) {
        let sessions = batch.iter().map(|&i| {
            let t = target.clone();
            async move {
                XmppSession::login(
                    &t.c2s,
                    &t.domain,
                    &t.user,
                    &t.password,
                    &format!("bench{i}"),
                )
                .await
            }
        });
        for s in futures_join(sessions).await {
            users.push(User {
                xmpp: s.unwrap_or_else(|e| panic!("login at {}: {e}", target.c2s)),
                put: HttpConn::default(),
                get: HttpConn::default(),
            });
        }
    }
    users
}

async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("login task"));
    }
    out
}

/// What one phase measured (only work that ended inside the window counts).
#[derive(Default)]
pub struct Outcome {
    pub files: u64,
    pub gets: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Seconds from the slot request (or the arrival, open loop) to the 201.
    pub send_to_201: Vec<f64>,
    /// Where each `send_to_201` went, in seconds: queued behind the
    /// user's previous upload (open loop), the slot request's round trip
    /// through the router, the PUT's round trip to its 201.
    pub legs: Vec<[f64; 3]>,
    /// Seconds from the 201 to the first byte of each GET's response.
    pub get_ttfb: Vec<f64>,
    pub window: Duration,
    /// CPU seconds of each watched process over the window.
    pub cpu: Vec<f64>,
    /// CPU seconds the whole machine was busy over the window (every
    /// process and the kernel's own threads, the load client included).
    pub machine_cpu: f64,
}

#[derive(Default)]
struct Shared {
    files: AtomicU64,
    gets: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    send_to_201: Mutex<Vec<f64>>,
    legs: Mutex<Vec<[f64; 3]>>,
    get_ttfb: Mutex<Vec<f64>>,
}

impl Shared {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().expect("lock").get_or_insert(e);
    }
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; `after` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds the machine has been busy so far (`/proc/stat`: user,
/// nice, system, irq, softirq and steal time of all CPUs; not idle or
/// iowait). Counts what no process's own figure does: the kernel's
/// writeback threads, which write a server's files out when it does not
/// fsync them itself.
pub fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    let f: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal
    (at(0) + at(1) + at(2) + at(5) + at(6) + at(7)) / 100.0
}

/// Runs one phase with `users` (returned afterwards for the next phase).
/// `watch` are process groups whose CPU is measured over the window.
pub async fn run(
    target: Arc<Target>,
    users: Vec<User>,
    load: Workload,
    mode: Mode,
    body: Arc<Vec<u8>>,
    watch: Vec<Vec<u32>>,
) -> (Vec<User>, Outcome) {
    let n = users.len();
    let shared = Arc::new(Shared::default());
    let t0 = Instant::now();
    let (start, end) = (t0 + load.warmup, t0 + load.warmup + load.window);
    // Each user's downloads: URLs with the instant the file was answered 201.
    let mut get_tx = Vec::new();
    let mut get_rx = Vec::new();
    for _ in 0..n {
        let (tx, rx) = mpsc::channel::<(String, Instant)>(64);
        get_tx.push(tx);
        get_rx.push(rx);
    }
    let mut job_tx = Vec::new();
    let mut tasks = Vec::new();
    let mut downloaders = Vec::new();
    for (u, (mut user, mut gets)) in users.into_iter().zip(get_rx).enumerate() {
        let (tx, mut jobs) = mpsc::unbounded_channel::<Instant>();
        job_tx.push(tx);
        let shared2 = shared.clone();
        let mut get_conn = std::mem::take(&mut user.get);
        let downloader = tokio::spawn(async move {
            while let Some((url, answered)) = gets.recv().await {
                let issued = Instant::now();
                match get_conn.request("GET", &url, &[], &[]).await {
                    Ok(a) if a.status == 200 => {
                        let now = Instant::now();
                        if now >= start && now <= end {
                            shared2.gets.fetch_add(1, Ordering::Relaxed);
                            // From the 201: time queued behind this user's
                            // previous download counts too.
                            shared2
                                .get_ttfb
                                .lock()
                                .expect("lock")
                                .push((issued - answered + a.first_byte).as_secs_f64());
                        }
                    }
                    Ok(a) => shared2.error(format!("GET {url}: {}", a.status)),
                    Err(e) => shared2.error(format!("GET {url}: {e}")),
                }
            }
            get_conn
        });
        let shared = shared.clone();
        let target = target.clone();
        let body = body.clone();
        let peers = get_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(load.seed ^ (u as u64).wrapping_mul(0x1000_0001));
            let mut i = 0u64;
            loop {
                let arrived = match mode {
                    Mode::Closed if Instant::now() >= end => break,
                    Mode::Closed => Instant::now(),
                    Mode::Open(_) => match jobs.recv().await {
                        Some(at) => at,
                        None => break,
                    },
                };
                i += 1;
                let size = (file_size(&mut rng) / load.shrink).max(1);
                let name = format!("u{u}-{i}.bin");
                let began = Instant::now();
                let slot = match user.xmpp.slot(&target.service, &name, size).await {
                    Ok(s) => s,
                    Err(e) => {
                        shared.error(format!("slot: {e}"));
                        continue;
                    }
                };
                let slotted = Instant::now();
                let answer = user
                    .put
                    .request("PUT", &slot.put, &slot.headers, &body[..size as usize])
                    .await;
                let now = Instant::now();
                match answer {
                    Ok(a) if a.status == 201 || a.status == 200 => {
                        if now >= start && now <= end {
                            shared.files.fetch_add(1, Ordering::Relaxed);
                            shared
                                .send_to_201
                                .lock()
                                .expect("lock")
                                .push((now - arrived).as_secs_f64());
                            shared.legs.lock().expect("lock").push([
                                (began - arrived).as_secs_f64(),
                                (slotted - began).as_secs_f64(),
                                (now - slotted).as_secs_f64(),
                            ]);
                        }
                        let k = rng.range(1, 3) as usize;
                        for j in 1..=k.min(n.saturating_sub(1)) {
                            let to = (u + j * (1 + rng.range(0, 6) as usize)) % n;
                            let to = if to == u { (u + 1) % n } else { to };
                            let _ = peers[to].send((slot.get.clone(), now)).await;
                        }
                    }
                    Ok(a) => shared.error(format!("PUT {}: {}", slot.put, a.status)),
                    Err(e) => shared.error(format!("PUT {}: {e}", slot.put)),
                }
            }
            drop(peers);
            user
        }));
        downloaders.push(downloader);
    }
    drop(get_tx);
    // The CPU of the watched processes over the window.
    let cpu_task = tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        let before: Vec<Vec<f64>> = watch
            .iter()
            .map(|g| g.iter().map(|&p| cpu_seconds(p)).collect())
            .collect();
        let machine_before = machine_busy_seconds();
        tokio::time::sleep_until(end.into()).await;
        let machine = machine_busy_seconds() - machine_before;
        let each = watch
            .iter()
            .zip(before)
            .map(|(g, b)| {
                // A process that ended within the window counts nothing
                // (its figure is gone), never less than nothing.
                g.iter()
                    .zip(b)
                    .map(|(&p, b)| (cpu_seconds(p) - b).max(0.0))
                    .sum::<f64>()
            })
            .collect::<Vec<f64>>();
        (each, machine)
    });
    if let Mode::Open(rate) = mode {
        // Poisson arrivals, spread over the users at random.
        let mut rng = Rng::new(load.seed ^ 0xA11CE);
        let mut at = t0;
        while at < end {
            at += Duration::from_secs_f64(-(1.0 - rng.unit()).ln() / rate);
            tokio::time::sleep_until(at.into()).await;
            let u = rng.range(0, n as u64 - 1) as usize;
            let _ = job_tx[u].send(at);
        }
    }
    drop(job_tx);
    let (cpu, machine_cpu) = cpu_task.await.expect("cpu task");
    let mut users = Vec::new();
    for (up, down) in tasks.into_iter().zip(downloaders) {
        let user = up.await.expect("user task");
        let get = down.await.expect("downloader task");
        users.push(User { get, ..user });
    }
    let out = Outcome {
        files: shared.files.load(Ordering::Relaxed),
        gets: shared.gets.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        first_error: shared.first_error.lock().expect("lock").take(),
        send_to_201: std::mem::take(&mut *shared.send_to_201.lock().expect("lock")),
        legs: std::mem::take(&mut *shared.legs.lock().expect("lock")),
        get_ttfb: std::mem::take(&mut *shared.get_ttfb.lock().expect("lock")),
        window: load.window,
        cpu,
        machine_cpu,
    };
    (users, out)
}
