//! `mft-bench`: mftd against its peers on this machine, in one run, with the
//! same HTTP client (curl) and the same files. Writes a Markdown report with
//! median, min and max over the runs and the ratio to the baseline measured
//! in the same run. `--smoke` runs every scenario once on small sizes so the
//! suite cannot rot (CI runs it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mft_storage::transfer_log::{TransferLog, TransferRecord};
use mft_storage::utc::{unix_now, UtcTime};
use mft_storage::ChatType;
use mft_upload_http::SlotSigner;
use xmpp_tests::client;
use xmpp_tests::mftd::{Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::free_port;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};
use xmpp_tests::sshd::{Sshd, USER};

const MIB: u64 = 1 << 20;
const TOKEN_KEY: &[u8] = b"test-token-key-0123456789abcdef";

struct Args {
    smoke: bool,
    runs: usize,
    out: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        smoke: false,
        runs: 3,
        out: PathBuf::from("target/bench-report.md"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => a.smoke = true,
            "--runs" => a.runs = it.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--out" => a.out = PathBuf::from(it.next().expect("--out FILE")),
            other => panic!("unknown argument {other}; use --smoke, --runs N, --out FILE"),
        }
    }
    if a.smoke {
        a.runs = 1;
    }
    a
}

/// Figures of one measurement series.
struct Series(Vec<f64>);

impl Series {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }
    fn median(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        v[v.len() / 2]
    }
    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

struct Table {
    title: String,
    unit: String,
    rows: Vec<(String, Series, Option<String>)>,
    baseline: Option<usize>,
    note: String,
}

impl Table {
    fn new(title: &str, unit: &str) -> Table {
        Table {
            title: title.into(),
            unit: unit.into(),
            rows: Vec::new(),
            baseline: None,
            note: String::new(),
        }
    }
    fn add(&mut self, name: &str, s: Series) {
        self.rows.push((name.into(), s, None));
    }
    fn add_failed(&mut self, name: &str, why: String) {
        self.rows.push((name.into(), Series(vec![]), Some(why)));
    }
    fn render(&self) -> String {
        let mut out = format!(
            "### {}\n\n| | median {u} | min | max | ratio to baseline |\n|---|---|---|---|---|\n",
            self.title,
            u = self.unit
        );
        let base = self.baseline.map(|i| self.rows[i].1.median());
        for (i, (name, s, failed)) in self.rows.iter().enumerate() {
            if let Some(why) = failed {
                let _ = writeln!(out, "| {name} | failed: {why} | | | |");
                continue;
            }
            let ratio = match (base, self.baseline == Some(i)) {
                (_, true) => "baseline".to_owned(),
                (Some(b), false) if b > 0.0 => format!("{:.2}×", s.median() / b),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| {name} | {:.1} | {:.1} | {:.1} | {ratio} |",
                s.median(),
                s.min(),
                s.max()
            );
        }
        if !self.note.is_empty() {
            let _ = writeln!(out, "\n{}", self.note);
        }
        out.push('\n');
        out
    }
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
        + String::from_utf8_lossy(&out.stderr).trim()
}

fn make_file(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join(format!("data-{size}"));
    if !path.exists() {
        let status = Command::new("dd")
            .args([
                "if=/dev/urandom",
                &format!("of={}", path.display()),
                "bs=1M",
                &format!("count={}", size / MIB),
            ])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

/// curl PUT; returns seconds, panics on a non-2xx.
fn curl_put(url: &str, file: &Path, headers: &[(String, String)]) -> f64 {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(file);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(url);
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let code = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        code.starts_with('2'),
        "PUT {url}: {code} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn curl_get(url: &str) -> f64 {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", url])
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "GET {url}");
    secs
}

fn mint(port: u16, size: u64, chat: ChatType) -> (String, Vec<(String, String)>) {
    let (path, token) = xmpp_tests::mftd::mint_slot(size, "bench.bin", chat);
    (
        format!("http://127.0.0.1:{port}{path}"),
        vec![("Authorization".into(), format!("Bearer {token}"))],
    )
}

fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn mftd_local(extra: &str) -> Mftd {
    Mftd::start(&MftdOptions {
        router: format!("127.0.0.1:{}", free_port()),
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: "max_file_size = \"0\"\n".into(),
        store: None,
        extra: extra.into(),
    })
}

fn mftd_upload_download(mftd: &Mftd, file: &Path, size: u64, runs: usize) -> (Series, Series) {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (url, headers) = mint(mftd.http_port, size, ChatType::Im);
        up.push(mb_s(size, curl_put(&url, file, &headers)));
        down.push(mb_s(size, curl_get(&url)));
    }
    (Series(up), Series(down))
}

fn prosody_share(read_size: u32, file: &Path, size: u64, runs: usize) -> (Series, Series) {
    let port = free_port();
    let prosody = Prosody::start(ProsodyOptions {
        read_size,
        file_share_port: Some(port),
        ..ProsodyOptions::default()
    });
    let service = format!("share.{}", prosody.domain);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let out = client::run(
            &prosody,
            "alice@example.test",
            "alice-pw",
            &[
                "slot",
                "--to",
                &service,
                "--filename",
                &format!("f{i}.bin"),
                "--size",
                &size.to_string(),
            ],
        );
        let put = out["put_url"]
            .as_str()
            .unwrap_or_else(|| panic!("no slot from Prosody: {out}"));
        let headers: Vec<(String, String)> = out["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        up.push(mb_s(size, curl_put(put, file, &headers)));
        down.push(mb_s(size, curl_get(out["get_url"].as_str().unwrap())));
    }
    (Series(up), Series(down))
}

/// ejabberd's mod_http_upload: slot over XMPP, then the same curl transfers.
fn ejabberd_upload(file: &Path, size: u64, runs: usize) -> (Series, Series) {
    let ej = xmpp_tests::ejabberd::Ejabberd::start();
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let out = client::run_at(
            &ej.c2s_addr(),
            "alice@example.test",
            "alice-pw",
            &[
                "slot",
                "--to",
                "upload.example.test",
                "--filename",
                &format!("f{i}.bin"),
                "--size",
                &size.to_string(),
            ],
        );
        let put = out["put_url"]
            .as_str()
            .unwrap_or_else(|| panic!("no slot from ejabberd: {out}"));
        up.push(mb_s(size, curl_put(put, file, &[])));
        down.push(mb_s(size, curl_get(out["get_url"].as_str().unwrap())));
    }
    (Series(up), Series(down))
}

/// Peak RSS (VmHWM) of a process in MiB.
fn hwm_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let a = args();
    let work = tempfile::tempdir_in("target").unwrap();
    let sizes: Vec<u64> = if a.smoke {
        vec![8 * MIB]
    } else {
        vec![100 * MIB, 1024 * MIB]
    };
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
    let _ = writeln!(report, "Every transfer uses the same client: `curl` over HTTP/1.1 on 127.0.0.1, files of random bytes.\n\n## Upload and download, local store\n");

    // 1 & 3: local store vs Prosody, with the disk as the ceiling.
    for &size in &sizes {
        let file = make_file(work.path(), size);
        let mut dd_w = Vec::new();
        let mut dd_r = Vec::new();
        for _ in 0..a.runs {
            let target = work.path().join("dd.out");
            let started = Instant::now();
            sh(&format!(
                "dd if={} of={} bs=1M conv=fdatasync 2>/dev/null",
                file.display(),
                target.display()
            ));
            dd_w.push(mb_s(size, started.elapsed().as_secs_f64()));
            sh("sync; echo 1 > /proc/sys/vm/drop_caches 2>/dev/null");
            let started = Instant::now();
            sh(&format!(
                "dd if={} of=/dev/null bs=1M 2>/dev/null",
                target.display()
            ));
            dd_r.push(mb_s(size, started.elapsed().as_secs_f64()));
        }
        let mftd = mftd_local("");
        let (m_up, m_down) = mftd_upload_download(&mftd, &file, size, a.runs);
        drop(mftd);
        let mut up = Table::new(&format!("Upload {} MiB (MB/s)", size / MIB), "MB/s");
        let mut down = Table::new(&format!("Download {} MiB (MB/s)", size / MIB), "MB/s");
        // Stock Prosody reads 4 KiB per wake-up (~3.5 MB/s here): a 1 GiB run
        // would take minutes per repetition, so it is measured on small files only.
        let stock = (size <= 100 * MIB).then(|| prosody_share(4096, &file, size, a.runs));
        let (t_up, t_down) = prosody_share(1 << 20, &file, size, a.runs);
        let (e_up, e_down) = ejabberd_upload(&file, size, a.runs);
        match &stock {
            Some((p_up, _)) => up.add(
                "Prosody 0.12 mod_http_file_share, stock (4 KiB reads)",
                Series(p_up.0.clone()),
            ),
            None => up.add_failed(
                "Prosody, stock (4 KiB reads)",
                "not run at this size (minutes per transfer)".into(),
            ),
        }
        up.add("Prosody mod_http_file_share, 1 MiB reads", t_up);
        up.add("ejabberd 23.01 mod_http_upload", e_up);
        up.add("**mftd**, local store (fsync before 201)", m_up);
        up.add("disk: `dd bs=1M conv=fdatasync`", Series(dd_w));
        up.baseline = Some(2);
        match stock {
            Some((_, p_down)) => down.add("Prosody, stock", p_down),
            None => down.add_failed("Prosody, stock", "not run at this size".into()),
        }
        down.add("Prosody, 1 MiB reads", t_down);
        down.add("ejabberd 23.01 mod_http_upload", e_down);
        down.add("**mftd**, local store", m_down);
        down.add(
            "disk: `dd` read (page cache dropped when allowed)",
            Series(dd_r),
        );
        down.baseline = Some(2);
        up.note =
            "Baseline: ejabberd. ejabberd and Prosody write without fsync; mftd fsyncs file and directory before answering 201.".into();
        report.push_str(&up.render());
        report.push_str(&down.render());
    }

    // 2: SFTP store vs OpenSSH sftp with the same cipher.
    let _ = writeln!(
        report,
        "## Upload and download, SFTP store (sshd on 127.0.0.1)\n"
    );
    let sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let key = sshd.node_key(keys.path(), "node_1");
    for &size in &sizes {
        let file = make_file(work.path(), size);
        for cipher in [
            "aes128-gcm@openssh.com",
            "chacha20-poly1305@openssh.com",
            "aes128-ctr",
        ] {
            let mut t = Table::new(
                &format!("{} MiB, cipher {cipher} (MB/s)", size / MIB),
                "MB/s",
            );
            let mut put = Vec::new();
            let mut get = Vec::new();
            for i in 0..a.runs {
                let remote = sshd.node_root().join(format!("sftp-{i}.bin"));
                let batch = work.path().join("batch");
                std::fs::write(
                    &batch,
                    format!("put -f {} {}\n", file.display(), remote.display()),
                )
                .unwrap();
                let sftp = |batch: &Path| {
                    let started = Instant::now();
                    let out = Command::new("sftp")
                        .args(["-q", "-b"])
                        .arg(batch)
                        .args(["-i"])
                        .arg(&key)
                        .args([
                            "-o",
                            "StrictHostKeyChecking=no",
                            "-o",
                            "UserKnownHostsFile=/dev/null",
                            "-o",
                        ])
                        .arg(format!("Ciphers={cipher}"))
                        .args(["-P", &sshd.port.to_string()])
                        .arg(format!("{USER}@127.0.0.1"))
                        .output()
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "sftp: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    started.elapsed().as_secs_f64()
                };
                put.push(mb_s(size, sftp(&batch)));
                std::fs::write(&batch, format!("get {} /dev/null\n", remote.display())).unwrap();
                get.push(mb_s(size, sftp(&batch)));
                let _ = std::fs::remove_file(&remote);
            }
            t.add(
                "OpenSSH `sftp put -f` (fsync@openssh.com, like mftd)",
                Series(put),
            );
            t.baseline = Some(0);
            let mut direct = Vec::new();
            let store = format!(
                "{}ciphers = \"{cipher}\"\n",
                sshd.store_toml("node_1", &key)
            );
            let mftd = Mftd::start(&MftdOptions {
                router: format!("127.0.0.1:{}", free_port()),
                component_jid: "upload.example.test".into(),
                secret: "unused".into(),
                limits: "max_file_size = \"0\"\n".into(),
                store: Some(store),
                extra: String::new(),
            });
            // libssh2 alone, no HTTP hop: `mftd fileserver transferspeed`.
            for _ in 0..a.runs {
                let out = Command::new(xmpp_tests::mftd::binary())
                    .args([
                        "fileserver",
                        "transferspeed",
                        "--size",
                        &format!("{}MiB", size / MIB),
                        "--config",
                    ])
                    .arg(mftd.config_path())
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                if let Some(w) = text
                    .strip_prefix("write ")
                    .and_then(|r| r.split(' ').next())
                    .and_then(|w| w.parse::<f64>().ok())
                {
                    direct.push(w);
                }
            }
            let (url, headers) = mint(mftd.http_port, size, ChatType::Im);
            let first = std::panic::catch_unwind(|| curl_put(&url, &file, &headers));
            match first {
                Ok(secs) => {
                    let mut up = vec![mb_s(size, secs)];
                    let mut down = vec![mb_s(size, curl_get(&url))];
                    let (u, d) = mftd_upload_download(&mftd, &file, size, a.runs - 1);
                    up.extend(u.0);
                    down.extend(d.0);
                    t.add(
                        "**mftd** HTTP PUT → SFTP store (fsync, rename before 201)",
                        Series(up),
                    );
                    t.add(
                        "mftd's libssh2 writer alone (`mftd fileserver transferspeed`, no HTTP)",
                        Series(direct.clone()),
                    );
                    t.add("OpenSSH `sftp get`", Series(get));
                    t.add("**mftd** HTTP GET ← SFTP store", Series(down));
                }
                Err(_) => t.add_failed("mftd", format!("libssh2 could not negotiate {cipher}")),
            }
            report.push_str(&t.render());
        }
    }

    // 4 & 5: memory and concurrency.
    let _ = writeln!(report, "## Memory and concurrency\n");
    let big = if a.smoke { 16 * MIB } else { 4096 * MIB };
    let big_file = make_file(work.path(), big);
    let mut mem = Table::new("Peak RSS of mftd (MiB)", "MiB");
    for (name, store) in [
        ("local", None),
        ("SFTP", Some(sshd.store_toml("node_1", &key))),
    ] {
        let mftd = Mftd::start(&MftdOptions {
            router: format!("127.0.0.1:{}", free_port()),
            component_jid: "upload.example.test".into(),
            secret: "unused".into(),
            limits: "max_file_size = \"0\"\n".into(),
            store,
            extra: String::new(),
        });
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
    let small = make_file(work.path(), each);
    let mftd = mftd_local("");
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

    // 6: slot round trips through Prosody.
    let prosody = Prosody::start(ProsodyOptions::default());
    let mut opts = MftdOptions::for_prosody(&prosody);
    // One benchmark client asks for thousands of slots: lift the per-user limit.
    opts.limits = "max_file_size = \"0\"\nslots_per_minute = 0\n".into();
    let mftd = Mftd::start(&opts);
    mftd.wait_connected(1);
    let count = if a.smoke { 50 } else { 2000 };
    let mut slots = Table::new(
        "Slot requests through Prosody (one client, 10 in flight)",
        "",
    );
    let (mut rate, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.runs {
        let out = client::run(
            &prosody,
            "alice@example.test",
            "alice-pw",
            &[
                "slots",
                "--to",
                &prosody.component_jid,
                "--count",
                &count.to_string(),
                "--parallel",
                "10",
            ],
        );
        rate.push(out["per_second"].as_f64().unwrap());
        p50.push(out["p50_ms"].as_f64().unwrap());
        p99.push(out["p99_ms"].as_f64().unwrap());
    }
    slots.add("slots per second", Series(rate));
    slots.add("p50 round trip (ms)", Series(p50));
    slots.add("p99 round trip (ms)", Series(p99));
    slots.note = "Measured by the slixmpp client (Python); see docs/performance.md.".into();
    report.push_str(&slots.render());
    report.push_str(&in_process_slots(if a.smoke { 2_000 } else { 200_000 }, a.runs).render());
    drop(mftd);

    // 7: transfer log rows per second.
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

    std::fs::write(&a.out, &report).unwrap();
    println!("{report}");
    eprintln!("report written to {}", a.out.display());
}

/// The component's own cost per slot request, in process: parse the stanza
/// from bytes, decide, sign, allocate, serialise the reply.
fn in_process_slots(n: usize, runs: usize) -> Table {
    use mft_component::link::{Inbound, StanzaReader, NS_COMPONENT};
    use mft_component::service::UploadService;
    let dir = tempfile::tempdir().unwrap();
    let mut service = UploadService::new(
        SlotSigner::new(TOKEN_KEY),
        mft_storage::Store::new(mft_storage::local::LocalBackend::new(dir.path()).unwrap()),
        "https://upload.example.test/",
        vec!["example.test".into()],
    );
    service.max_file_size = 1 << 30;
    let mut input = String::from(
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='x'>",
    );
    for i in 0..n {
        let _ = write!(
            input,
            "<iq type='get' id='{i}' from='alice@example.test/phone' to='upload.example.test'>\
             <request xmlns='urn:xmpp:http:upload:0' filename='photo {i}.jpg' size='123456' content-type='image/jpeg'/></iq>"
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut per_sec = Vec::new();
    let mut micros = Vec::new();
    for _ in 0..runs {
        let (count, secs) = rt.block_on(async {
            let mut reader = StanzaReader::new(input.as_bytes());
            let _ = reader.next().await;
            let started = Instant::now();
            let mut count = 0usize;
            while let Ok(Inbound::Stanza(stanza)) = reader.next().await {
                let reply = service.handle(&stanza).await.unwrap();
                assert!(reply.to_xml(NS_COMPONENT).contains("<slot"));
                count += 1;
            }
            (count, started.elapsed().as_secs_f64())
        });
        assert_eq!(count, n);
        per_sec.push(n as f64 / secs);
        micros.push(secs * 1e6 / n as f64);
    }
    let mut t = Table::new(
        &format!("Component's own cost per slot request, in process ({n} requests, one thread)"),
        "",
    );
    t.add("slots per second", Series(per_sec));
    t.add(
        "µs per slot (parse, check, allocate, sign, serialise)",
        Series(micros),
    );
    t
}

fn mftd_pid(mftd: &Mftd) -> u32 {
    mftd.pid()
}
