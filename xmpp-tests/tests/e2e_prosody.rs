//! End to end through a real Prosody with a real client (slixmpp): discovery
//! through the domain's disco#items, slot requests, PUT and GET, the file in
//! the MFT layout, every slot error through the router, reconnection and a
//! clean stop.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mft_common::utc::UtcTime;
use xmpp_tests::client;
use xmpp_tests::mftd::{stored_files, Mftd, MftdOptions};
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");

fn setup() -> (Prosody, Mftd) {
    let prosody = Prosody::start(ProsodyOptions::default());
    let mftd = Mftd::start(&MftdOptions::for_prosody(&prosody));
    mftd.wait_connected(1);
    (prosody, mftd)
}

fn iq(prosody: &Prosody, who: (&str, &str), payload: &str) -> String {
    let out = client::run(
        prosody,
        who.0,
        who.1,
        &["iq", "--to", &prosody.component_jid, payload],
    );
    out["reply"]
        .as_str()
        .unwrap_or_else(|| panic!("no reply: {out}"))
        .to_owned()
}

#[test]
fn client_discovers_uploads_and_downloads_through_prosody() {
    let (prosody, mftd) = setup();

    let found = client::run(&prosody, ALICE.0, ALICE.1, &["discover"]);
    let services = found["services"].as_array().unwrap();
    assert_eq!(
        services.len(),
        1,
        "upload service not in disco#items: {found}"
    );
    assert_eq!(services[0]["jid"], prosody.component_jid.as_str());
    assert_eq!(services[0]["max_file_size"], 10 * 1024 * 1024);
    assert_eq!(
        services[0]["identities"][0],
        serde_json::json!(["store", "file"])
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("photo.bin");
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let before = UtcTime::now();
    let out = client::run(
        &prosody,
        ALICE.0,
        ALICE.1,
        &[
            "upload",
            "--file",
            file.to_str().unwrap(),
            "--name",
            "Résumé 100%.jpg",
            "--content-type",
            "image/jpeg",
        ],
    );
    let after = UtcTime::now();
    assert_eq!(out["put_status"], 201, "{out}\n{}", mftd.log());
    assert_eq!(out["get_status"], 200, "{out}");
    assert_eq!(out["sha256_sent"], out["sha256_got"]);
    assert_eq!(out["get_content_type"], "image/jpeg");
    assert_eq!(out["put_headers"], serde_json::json!(["Authorization"]));
    let get_url = out["get_url"].as_str().unwrap();
    assert!(
        get_url.ends_with("/R%C3%A9sum%C3%A9%20100%25.jpg"),
        "{get_url}"
    );

    // The file sits at files/im/<today UTC>/<hour>/<resource name>.
    let resource = get_url.rsplit('/').nth(1).unwrap();
    let files: Vec<String> = stored_files(&mftd.node_dir())
        .into_iter()
        .filter(|f| !f.ends_with(".meta"))
        .collect();
    let expected: Vec<String> = [before, after]
        .iter()
        .map(|t| format!("files/im/{}/{:02}/{resource}", t.compact_date(), t.hour))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        expected.contains(&files[0]),
        "{files:?} not in {expected:?}"
    );
    assert_eq!(
        std::fs::read(mftd.node_dir().join(&files[0])).unwrap(),
        content
    );
    // Slot tokens ("v1.<claims>.<mac>") never reach the log.
    assert!(!mftd.log().contains("v1."), "token in log:\n{}", mftd.log());
}

fn error_of(reply: &str) -> (String, String) {
    let kind = reply
        .split("<error type=\"")
        .nth(1)
        .map(|s| s.split('"').next().unwrap().to_owned());
    let condition = reply
        .split("xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"")
        .next()
        .and_then(|s| s.rsplit('<').next())
        .map(|s| s.trim().to_owned());
    (kind.unwrap_or_default(), condition.unwrap_or_default())
}

#[test]
fn slot_errors_follow_xep_0363_through_the_router() {
    let (prosody, _mftd) = setup();
    let ns = "urn:xmpp:http:upload:0";
    let cases = [
        (
            format!("<request xmlns='{ns}' filename='a.txt'/>"),
            "modify",
            "bad-request",
        ),
        (
            format!("<request xmlns='{ns}' filename='a.txt' size='0'/>"),
            "modify",
            "bad-request",
        ),
        (
            format!("<request xmlns='{ns}' filename='a.txt' size='ten'/>"),
            "modify",
            "bad-request",
        ),
        (
            format!("<request xmlns='{ns}' size='10'/>"),
            "modify",
            "bad-request",
        ),
        (
            format!("<request xmlns='{ns}' filename='' size='10'/>"),
            "modify",
            "bad-request",
        ),
        (
            format!("<request xmlns='{ns}' filename='big.iso' size='10485761'/>"),
            "modify",
            "not-acceptable",
        ),
        (
            "<query xmlns='jabber:iq:version'/>".to_owned(),
            "cancel",
            "service-unavailable",
        ),
    ];
    for (payload, kind, condition) in &cases {
        let reply = iq(&prosody, ALICE, payload);
        assert!(reply.contains("type=\"error\""), "{payload}: {reply}");
        assert_eq!(
            error_of(&reply),
            (kind.to_string(), condition.to_string()),
            "{payload}: {reply}"
        );
        // A slot request is echoed; a payload we do not understand is not
        // repeated (RFC 6120 leaves it optional, and it is not ours to echo).
        if !payload.starts_with("<request") {
            assert!(!reply.contains("jabber:iq:version"), "{reply}");
            continue;
        }
        let echoed = payload
            .split_whitespace()
            .next()
            .unwrap()
            .trim_start_matches('<')
            .trim_end_matches("/>");
        assert!(
            reply.contains(&format!("<{echoed}")),
            "request not echoed: {reply}"
        );
    }
    let too_big = iq(&prosody, ALICE, &cases[5].0);
    assert!(
        too_big.contains("<file-too-large xmlns=\"urn:xmpp:http:upload:0\"><max-file-size>10485760</max-file-size>"),
        "{too_big}"
    );

    // A user of another domain on the same router is refused.
    let reply = iq(
        &prosody,
        ("mallory@other.test", "mallory-pw"),
        &format!("<request xmlns='{ns}' filename='a.txt' size='10'/>"),
    );
    assert_eq!(
        error_of(&reply),
        ("auth".into(), "forbidden".into()),
        "{reply}"
    );

    // A valid request without content-type gets a slot.
    let reply = iq(
        &prosody,
        ALICE,
        &format!("<request xmlns='{ns}' filename='a.txt' size='10'/>"),
    );
    assert!(
        reply.contains("type=\"result\"") && reply.contains("<put url=\"http://127.0.0.1:"),
        "{reply}"
    );
    assert!(
        reply.contains("<header name=\"Authorization\">Bearer v1."),
        "{reply}"
    );

    // Old clients (v0.2, Conversations namespace) get a slot with the token in the URL.
    let reply = iq(
        &prosody,
        ALICE,
        "<request xmlns='eu:siacs:conversations:http:upload'><filename>b.png</filename><size>5</size></request>",
    );
    assert!(
        reply.contains("<put>http://127.0.0.1:") && reply.contains("?token=v1."),
        "{reply}"
    );
}

#[test]
fn component_waits_for_the_router_and_reconnects_after_it_restarts() {
    // mftd first: the router is not there yet.
    let mut prosody = Prosody::start(ProsodyOptions::default());
    prosody.stop();
    let mftd = Mftd::start(&MftdOptions::for_prosody(&prosody));
    assert!(
        mftd.wait_for_log("XMPP: link down", 2, Duration::from_secs(20)),
        "{}",
        mftd.log()
    );
    prosody.restart();
    mftd.wait_connected(1);
    let ns = "urn:xmpp:http:upload:0";
    let payload = format!("<request xmlns='{ns}' filename='a.txt' size='10'/>");
    assert!(iq(&prosody, ALICE, &payload).contains("type=\"result\""));

    // The router dies and comes back: the component reconnects by itself.
    prosody.restart();
    mftd.wait_connected(2);
    assert!(
        iq(&prosody, ALICE, &payload).contains("type=\"result\""),
        "{}",
        mftd.log()
    );
}

#[test]
fn idle_link_stays_up_and_sigterm_stops_cleanly() {
    let (prosody, mut mftd) = setup();
    // Several keepalive intervals (2 s) of silence: still one connection.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        mftd.log()
            .matches("XMPP: connected and authenticated")
            .count(),
        1,
        "{}",
        mftd.log()
    );
    assert!(!mftd.log().contains("link down"), "{}", mftd.log());
    mftd.process().signal(15);
    assert_eq!(
        mftd.process().wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        mftd.log()
    );
    assert!(
        mftd.log().contains("XMPP: stream closed for shutdown"),
        "{}",
        mftd.log()
    );
    drop(prosody);
}
