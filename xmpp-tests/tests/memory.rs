//! Memory stays flat: a 1 GiB upload and download through the real `mftd`
//! binary must not grow its peak resident memory by more than 64 MiB.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;

use mft_storage::ChatType;
use xmpp_tests::mftd::{mint_slot, Mftd, MftdOptions};
use xmpp_tests::process::free_port;

const GIB: u64 = 1 << 30;

fn slot(size: u64) -> (String, String) {
    mint_slot(size, "big.bin", ChatType::Im)
}

fn status_of(s: &mut TcpStream) -> String {
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn one_gib_upload_and_download_keep_memory_flat() {
    let opts = MftdOptions {
        router: format!("127.0.0.1:{}", free_port()), // no router needed for HTTP
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: String::new(),
        store: None,
        extra: String::new(),
        http_port: None,
    };
    let mftd = Mftd::start(&opts);
    let addr = ("127.0.0.1", mftd.http_port);

    // Warm up with a small transfer so one-off allocations are counted in the baseline.
    let (path, token) = slot(4 << 20);
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", 4 << 20).unwrap();
    s.write_all(&vec![7u8; 4 << 20]).unwrap();
    assert!(status_of(&mut s).contains("201"));
    let (baseline, _) = mftd.memory_kib();

    let (path, token) = slot(GIB);
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {GIB}\r\nConnection: close\r\n\r\n").unwrap();
    let chunk: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    for _ in 0..(GIB >> 20) {
        s.write_all(&chunk).unwrap();
    }
    let status = status_of(&mut s);
    assert!(status.contains("201"), "{status}\n{}", mftd.log());
    let (after_upload, _) = mftd.memory_kib();

    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert!(total > GIB, "read {total} bytes");
    let (after_download, _) = mftd.memory_kib();

    let growth_mib = |kib: u64| kib.saturating_sub(baseline) / 1024;
    println!(
        "peak RSS: baseline {} MiB, after 1 GiB upload +{} MiB, after 1 GiB download +{} MiB",
        baseline / 1024,
        growth_mib(after_upload),
        growth_mib(after_download)
    );
    assert!(
        growth_mib(after_upload) <= 64,
        "upload grew peak RSS by {} MiB",
        growth_mib(after_upload)
    );
    assert!(
        growth_mib(after_download) <= 64,
        "download grew peak RSS by {} MiB",
        growth_mib(after_download)
    );
}
