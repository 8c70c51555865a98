//! SIGTERM while an upload is in flight: mftd stops accepting new
//! connections, lets the transfer finish (201), and exits 0.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mft_common::utc::{unix_now, UtcTime};
use mft_storage::{ChatType, Location};
use mft_upload_http::urls::encode_segment;
use mft_upload_http::{SlotClaims, SlotSigner};
use xmpp_tests::mftd::{stored_files, Mftd, MftdOptions};
use xmpp_tests::process::free_port;

#[test]
fn sigterm_lets_the_upload_in_flight_finish_and_exits_zero() {
    let opts = MftdOptions {
        router: format!("127.0.0.1:{}", free_port()),
        component_jid: "upload.example.test".into(),
        secret: "unused".into(),
        limits: String::new(),
        store: None,
        extra: String::new(),
        http_port: None,
    };
    let mut mftd = Mftd::start(&opts);
    let now = UtcTime::now();
    let loc = Location::new_random(
        ChatType::Im,
        &now.compact_date(),
        &format!("{:02}", now.hour),
    );
    let size: usize = 4 << 20;
    let claims = SlotClaims {
        resource: loc.resource().to_owned(),
        filename: "late.bin".into(),
        size: size as u64,
        content_type: None,
        uploader: "alice@example.test".into(),
        to: String::new(),
        expires: unix_now() + 300,
        purpose: None,
        expire_before: None,
    };
    let token = SlotSigner::new(b"test-token-key-0123456789abcdef").sign(&claims);
    let mut s = TcpStream::connect(("127.0.0.1", mftd.http_port)).unwrap();
    write!(
        s,
        "PUT /{}/{} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n",
        loc.resource(),
        encode_segment("late.bin")
    )
    .unwrap();
    let data = vec![5u8; size];
    s.write_all(&data[..size / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    mftd.process().signal(15);
    assert!(
        mftd.wait_for_log("no longer accepting", 1, Duration::from_secs(10)),
        "{}",
        mftd.log()
    );
    // New connections are refused now…
    assert!(TcpStream::connect(("127.0.0.1", mftd.http_port)).is_err());
    // …but the transfer in flight completes.
    s.write_all(&data[size / 2..]).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
    assert_eq!(
        mftd.process().wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        mftd.log()
    );
    let files = stored_files(&mftd.node_dir());
    assert!(
        files.iter().any(|f| f.ends_with(loc.resource())),
        "{files:?}"
    );
    // Tokens never reach the log.
    assert!(!mftd.log().contains(&token), "token leaked into the log");
}
