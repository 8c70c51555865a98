//! What every scenario uses: shell helpers, test files, curl as the one
//! HTTP client, slot minting, and the peers started for a run.

use crate::report::Series;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use mft_storage::ChatType;
use xmpp_tests::client;
use xmpp_tests::mftd::{Mftd, MftdOptions};
use xmpp_tests::process::free_port;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

pub const MIB: u64 = 1 << 20;
pub const TOKEN_KEY: &[u8] = b"test-token-key-0123456789abcdef";

/// The file sizes of the transfer scenarios.
pub fn sizes(a: &crate::Args) -> Vec<u64> {
    if a.smoke {
        vec![8 * MIB]
    } else {
        vec![100 * MIB, 1024 * MIB]
    }
}

pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
        + String::from_utf8_lossy(&out.stderr).trim()
}

pub fn make_file(dir: &Path, size: u64) -> PathBuf {
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

/// curl with the bench's options: quiet, the status code on stdout. HTTPS
/// URLs are verified against `$CURL_CA_BUNDLE` (the https scenario sets it).
fn curl() -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"]);
    cmd
}

/// curl PUT; returns seconds, panics on a non-2xx.
pub fn curl_put(url: &str, file: &Path, headers: &[(String, String)]) -> f64 {
    let mut cmd = curl();
    cmd.arg("-T").arg(file);
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

pub fn curl_get(url: &str) -> f64 {
    let started = Instant::now();
    let out = curl().arg(url).output().unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "GET {url}");
    secs
}

pub fn mint(port: u16, size: u64, chat: ChatType) -> (String, Vec<(String, String)>) {
    mint_at("http", port, size, chat)
}

/// A signed slot for an mftd listening with `scheme` on `port`.
pub fn mint_at(
    scheme: &str,
    port: u16,
    size: u64,
    chat: ChatType,
) -> (String, Vec<(String, String)>) {
    let (path, token) = xmpp_tests::mftd::mint_slot(size, "bench.bin", chat);
    (
        format!("{scheme}://127.0.0.1:{port}{path}"),
        vec![("Authorization".into(), format!("Bearer {token}"))],
    )
}

pub fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

pub fn mftd_local(extra: &str) -> Mftd {
    mftd_local_binary(extra, xmpp_tests::mftd::binary())
}

/// Options for an HTTP-only benchmark mftd: no router to reach, no size
/// limit, the local store unless `store` is given.
pub fn bench_options(store: Option<String>, extra: &str) -> MftdOptions {
    MftdOptions {
        router: format!("127.0.0.1:{}", free_port()),
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: "max_file_size = \"0\"\n".into(),
        store,
        extra: extra.into(),
        http_port: None,
    }
}

/// Runs `ours` and `theirs` once per run, alternating which goes first, so
/// neither always inherits the other's dirty page cache.
pub fn interleaved(runs: usize, mut ours: impl FnMut(), mut theirs: impl FnMut()) {
    for run in 0..runs {
        if run % 2 == 0 {
            ours();
            theirs();
        } else {
            theirs();
            ours();
        }
    }
}

/// A local-store mftd from a given build.
pub fn mftd_local_binary(extra: &str, binary: PathBuf) -> Mftd {
    Mftd::start_binary(&bench_options(None, extra), binary)
}

/// Scrapes an admin listener's `/metrics` once a second (a busy Prometheus)
/// until dropped, so transfers are measured with metrics being read.
pub struct Scraper {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Scraper {
    /// Starts scraping `http://127.0.0.1:{port}/metrics`.
    pub fn start(port: u16) -> Scraper {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut scrapes = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) =
                    xmpp_tests::http::get_with(&format!("http://127.0.0.1:{port}/metrics"), &[]);
                assert_eq!(status, 200, "metrics scrape failed: {body}");
                scrapes += 1;
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            scrapes
        });
        Scraper {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns how many scrapes succeeded.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap())
    }
}

/// The `[admin]` section for a benchmark mftd on `port`.
pub fn admin_section(port: u16) -> String {
    format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n")
}

pub fn mftd_upload_download(mftd: &Mftd, file: &Path, size: u64, runs: usize) -> (Series, Series) {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (url, headers) = mint(mftd.http_port, size, ChatType::Im);
        up.push(mb_s(size, curl_put(&url, file, &headers)));
        down.push(mb_s(size, curl_get(&url)));
    }
    (Series(up), Series(down))
}

pub fn prosody_share(read_size: u32, file: &Path, size: u64, runs: usize) -> (Series, Series) {
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
pub fn ejabberd_upload(file: &Path, size: u64, runs: usize) -> (Series, Series) {
    ejabberd_transfers(&xmpp_tests::ejabberd::Ejabberd::start(), file, size, runs)
}

/// Uploads and downloads through an ejabberd's mod_http_upload.
pub fn ejabberd_transfers(
    ej: &xmpp_tests::ejabberd::Ejabberd,
    file: &Path,
    size: u64,
    runs: usize,
) -> (Series, Series) {
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
pub fn hwm_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

pub fn mftd_pid(mftd: &Mftd) -> u32 {
    mftd.pid()
}

/// Removes every file below `dir` (the bench's stored uploads: the disk is
/// small, and a full run stores tens of GiB).
pub fn clear_files(dir: &Path) {
    sh(&format!("find '{}' -type f -delete", dir.display()));
}
