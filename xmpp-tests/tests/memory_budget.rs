//! The memory budget: 512 downloads whose clients stopped reading and 512
//! uploads whose clients stopped sending, all at once, keep mftd's resident
//! memory within 256 MiB over idle on the local store (and within a looser
//! bound on the SFTP file server, where each opens an SSH session), and a
//! transfer started meanwhile still completes once the stalled ones are
//! gone.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mft_storage::ChatType;
use xmpp_tests::mftd::{mint_slot, put_minted, Mftd, MftdOptions};
use xmpp_tests::process::free_port;
use xmpp_tests::sshd::Sshd;

const MIB: usize = 1 << 20;
const STALLED: usize = 512;
const FILE: usize = 32 * MIB;

fn raise_descriptor_limit() {
    let me = std::process::id().to_string();
    let _ = std::process::Command::new("prlimit")
        .args(["--pid", &me, "--nofile=16384:16384"])
        .status();
}

fn options(store: Option<String>) -> MftdOptions {
    MftdOptions {
        router: format!("127.0.0.1:{}", free_port()), // HTTP needs no router
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: "max_file_size = \"64 MiB\"\n".into(),
        store,
        extra: String::new(),
        http_port: None,
    }
}

/// Stalled clients are kept for the whole test: no watchdog cuts them,
/// and one client address may hold them all.
fn start(store: Option<String>) -> Mftd {
    let env = [
        ("STALL_TIMEOUT", "600s"),
        ("BODY_IDLE_TIMEOUT", "600s"),
        ("MIN_RATE", "0"),
        ("MAX_TRANSFERS", "2048"),
        ("MAX_TRANSFERS_PER_CLIENT", "2048"),
    ];
    let env = env
        .iter()
        .map(|(k, v)| (format!("MFTD_HTTP__{k}"), (*v).to_owned()))
        .collect();
    Mftd::start_with(&options(store), xmpp_tests::mftd::binary(), env)
}

/// Uploads one file to download; returns its URL path.
fn stored_file(mftd: &Mftd) -> String {
    let (path, token) = mint_slot(FILE as u64, "big.bin", ChatType::Im);
    let mut s = TcpStream::connect(("127.0.0.1", mftd.http_port)).unwrap();
    write!(s, "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {FILE}\r\nConnection: close\r\n\r\n").unwrap();
    let chunk = vec![9u8; MIB];
    for _ in 0..FILE / MIB {
        s.write_all(&chunk).unwrap();
    }
    let mut reply = [0u8; 256];
    let n = s.read(&mut reply).unwrap();
    assert!(
        String::from_utf8_lossy(&reply[..n]).contains("201"),
        "{}",
        mftd.log()
    );
    path
}

/// Resident memory once it stopped growing (or after 30 s).
fn settled_rss_kib(mftd: &Mftd) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = mftd.memory_kib().1;
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now = mftd.memory_kib().1;
        if now <= last + 1024 || Instant::now() > deadline {
            return now.max(last);
        }
        last = now;
    }
}

/// The two tests take turns: together their stalled sockets hold more
/// than the kernel's TCP memory before it goes into pressure (`tcp_mem`,
/// about 1.1 GiB on a 24 GiB machine), and under pressure a write to a
/// stalled socket waits for memory only the other test can give back.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How long one stalled upload's body write may wait: a write that cannot
/// finish leaves that upload stalled with what went out, and later uploads
/// send headers only, so the test cannot hang on socket memory.
const WRITE_WAIT: Duration = Duration::from_secs(5);

fn stall_everything_and_measure(mftd: &Mftd, what: &str, limit_mib: u64) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    raise_descriptor_limit();
    let get_path = stored_file(mftd);
    // Warm: one of each kind, so one-off allocations are in the baseline.
    let (status, body) = put_minted(mftd.http_port, "warm.bin", 2 * MIB);
    assert_eq!(status, 201, "{body}");
    std::thread::sleep(Duration::from_secs(1));
    let idle = mftd.memory_kib().1;

    let mut held = Vec::new();
    let mut pressed = 0;
    for i in 0..STALLED {
        // A download nobody reads.
        let mut s = TcpStream::connect(("127.0.0.1", mftd.http_port)).unwrap();
        write!(s, "GET {get_path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        held.push(s);
        // An upload that stops after a bit less than one write's worth.
        let (path, token) = mint_slot(FILE as u64, &format!("stalled-{i}.bin"), ChatType::Im);
        let mut s = TcpStream::connect(("127.0.0.1", mftd.http_port)).unwrap();
        write!(s, "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {FILE}\r\n\r\n").unwrap();
        s.set_write_timeout(Some(WRITE_WAIT)).unwrap();
        if pressed == 0 {
            match s.write_all(&vec![3u8; MIB - 4096]) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    pressed = i + 1;
                }
                Err(e) => {
                    let mut answer = String::new();
                    let _ = s.read_to_string(&mut answer);
                    panic!("stalled upload {i} refused ({e}): {answer}\n{}", mftd.log());
                }
            }
        }
        held.push(s);
    }
    if pressed > 0 {
        println!(
            "{what}: socket memory under pressure from upload {pressed} on; later uploads sent headers only"
        );
    }
    let stalled = settled_rss_kib(mftd);
    let over = stalled.saturating_sub(idle) / 1024;
    println!(
        "{what}: idle {} MiB, with {STALLED} stalled downloads and {STALLED} stalled uploads {} MiB (+{over} MiB)",
        idle / 1024,
        stalled / 1024
    );

    // A transfer started now completes once room returns.
    let port = mftd.http_port;
    let late = std::thread::spawn(move || put_minted(port, "late.bin", 4 * MIB));
    std::thread::sleep(Duration::from_secs(2));
    drop(held);
    let (status, body) = late.join().unwrap();
    assert_eq!(status, 201, "{body}\n{}", mftd.log());
    assert!(
        over <= limit_mib,
        "{what}: stalled transfers held {over} MiB over idle (limit: {limit_mib})"
    );
}

#[test]
fn stalled_transfers_stay_within_the_memory_budget_on_the_local_store() {
    let mftd = start(None);
    stall_everything_and_measure(&mftd, "local store", 256);
}

#[test]
fn stalled_transfers_stay_within_the_memory_budget_on_the_sftp_store() {
    let sshd = Sshd::start();
    let keys = tempfile::tempdir().unwrap();
    let key = sshd.node_key(keys.path(), "node_1");
    let mftd = start(Some(sshd.store_toml("node_1", &key)));
    // A stalled transfer on the SFTP store gives its SSH session back once
    // its file was idle for PARK_AFTER, and writes in flight are granted
    // from the budget; what a burst of 1024 session set-ups leaves is still
    // above the 256 MiB (+269 to +320 MiB measured; +592 to +607 MiB
    // before, when each stalled transfer held its session and up to 2 MiB
    // in flight; see docs/performance.md). This bound catches a return of
    // either (before the budget: over 1.6 GiB on the local store alone).
    stall_everything_and_measure(&mftd, "SFTP store", 384);
}
