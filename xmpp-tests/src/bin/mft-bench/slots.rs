//! Scenario 6: slot round trips through Prosody, and the in-process cost.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::report::{Series, Table};
use crate::tools::*;
use crate::Args;
use mft_upload_http::SlotSigner;

use xmpp_tests::client;
use xmpp_tests::mftd::{Mftd, MftdOptions};
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

/// Scenario 6: slot round trips through Prosody, and the in-process cost.
pub fn run(a: &Args, _work: &Path, report: &mut String) {
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
