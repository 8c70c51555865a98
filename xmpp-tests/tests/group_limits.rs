//! Limits per group of users (`[[limits.group]]`) through a real Prosody,
//! PostgreSQL and the slixmpp client: alice is in a big-files group, the
//! users of other.test in a partners group, bob in none. disco#info's
//! `max-file-size` is the asker's; a file above the default but within the
//! group's limit is granted to alice and refused to bob with the XEP's
//! `file-too-large` and bob's own maximum; purposes, slot rate and quota
//! (at slot time and again on PUT) follow the group; `check-config --for`
//! says which group matched. Hostile: a resource that spells a member's
//! JID, and a look-alike local part, gain nothing.

#![allow(clippy::unwrap_used)]

use xmpp_tests::client;
use xmpp_tests::http::put;
use xmpp_tests::mftd::{binary, mint_slot_by, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

const MIB: u64 = 1 << 20;

const LIMITS: &str = r#"max_file_size = "1 MiB"
allowed_domains = ["example.test", "other.test"]

[[limits.group]]
name = "big-files"
match = ["alice@example.test"]
max_file_size = "8 MiB"
per_user_daily = "100 MiB"
allow_permanent = true
allow_ephemeral = false

[[limits.group]]
name = "partners"
match = ["*@other.test"]
max_file_size = "512 KiB"
slots_per_minute = 2
slot_burst = 2
"#;

/// A look-alike of alice: Cyrillic а (U+0430) for the Latin a.
const LOOKALIKE: &str = "\u{0430}lice@example.test";

struct Setup {
    prosody: Prosody,
    mftd: Mftd,
    _pg: Postgres,
}

fn setup() -> Setup {
    setup_with(LIMITS)
}

fn setup_with(limits: &str) -> Setup {
    let pg = Postgres::start();
    let prosody = Prosody::start(ProsodyOptions::default());
    prosody.register(LOOKALIKE, "lookalike-pw");
    let mut opts = MftdOptions::for_prosody(&prosody);
    opts.limits = limits.into();
    opts.extra = format!(
        "[database]\nurl = \"{}\"\n[quotas]\nper_user_daily = \"1536 KiB\"\n[retention]\nallow_permanent = false\n",
        pg.url()
    );
    let mftd = Mftd::start(&opts);
    mftd.wait_connected(1);
    Setup {
        prosody,
        mftd,
        _pg: pg,
    }
}

fn password(jid: &str) -> String {
    let local = jid.split('@').next().unwrap().to_lowercase();
    match local.as_str() {
        "\u{0430}lice" => "lookalike-pw".into(),
        l => format!("{l}-pw"),
    }
}

/// One IQ from `jid` to the component; the reply as text.
fn iq(s: &Setup, jid: &str, payload: &str) -> String {
    let out = client::run(
        &s.prosody,
        jid,
        &password(jid),
        &["iq", "--to", &s.prosody.component_jid, payload],
    );
    out["reply"]
        .as_str()
        .unwrap_or_else(|| panic!("{jid}: {out}"))
        .to_owned()
}

/// Several IQs from `jid` in one session; the replies.
fn iqs(s: &Setup, jid: &str, payloads: &[String]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payloads.json");
    std::fs::write(&file, serde_json::to_string(payloads).unwrap()).unwrap();
    let out = client::run(
        &s.prosody,
        jid,
        &password(jid),
        &[
            "iqs",
            "--to",
            &s.prosody.component_jid,
            file.to_str().unwrap(),
        ],
    );
    out["replies"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect()
}

fn request(size: u64, purpose: &str) -> String {
    format!(
        "<request xmlns='urn:xmpp:http:upload:0' filename='f.bin' size='{size}' \
         content-type='application/octet-stream'>{purpose}</request>"
    )
}

/// What disco#info tells `jid`: (max-file-size, purposes offered).
fn disco(s: &Setup, jid: &str) -> (u64, Vec<String>) {
    let reply = iq(
        s,
        jid,
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    );
    let after = reply
        .split("max-file-size")
        .nth(1)
        .unwrap_or_else(|| panic!("no max-file-size: {reply}"));
    let value = after
        .split("<value>")
        .nth(1)
        .and_then(|v| v.split('<').next())
        .unwrap();
    let purposes = reply
        .split("urn:xmpp:http:upload:purpose:0#")
        .skip(1)
        .map(|p| p.split('"').next().unwrap().to_owned())
        .collect();
    (value.parse().unwrap(), purposes)
}

fn check_config_for(s: &Setup, jid: &str) -> String {
    let out = std::process::Command::new(binary())
        .args(["check-config", "--config"])
        .arg(s.mftd.config_path())
        .args(["--for", jid])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_group_gets_its_own_limits_through_prosody() {
    let s = setup();

    // disco#info: the asker's own maximum and purposes.
    let (alice_max, alice_purposes) = disco(&s, "alice@example.test");
    assert_eq!(alice_max, 8 * MIB);
    assert_eq!(alice_purposes, ["message", "profile", "permanent"]);
    let (bob_max, bob_purposes) = disco(&s, "bob@example.test");
    assert_eq!(bob_max, MIB);
    assert_eq!(bob_purposes, ["message", "profile", "ephemeral"]);
    assert_eq!(disco(&s, "mallory@other.test").0, 512 * 1024);

    // 2 MiB: above the default, within the big-files group.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, vec![7u8; 2 * MIB as usize]).unwrap();
    let out = client::run(
        &s.prosody,
        "alice@example.test",
        "alice-pw",
        &["upload", "--file", file.to_str().unwrap()],
    );
    assert_eq!(out["put_status"], 201, "{out}\n{}", s.mftd.log());
    let bob = iq(&s, "bob@example.test", &request(2 * MIB, ""));
    assert!(
        bob.contains("type=\"error\"")
            && bob.contains("<not-acceptable")
            && bob.contains("<file-too-large")
            && bob.contains(&format!("<max-file-size>{MIB}</max-file-size>")),
        "{bob}"
    );
    let partner = iq(&s, "mallory@other.test", &request(600 * 1024, ""));
    assert!(
        partner.contains(&format!("<max-file-size>{}</max-file-size>", 512 * 1024)),
        "{partner}"
    );

    // Purposes per group: permanent for alice only, ephemeral for bob only.
    let permanent = "<permanent xmlns='urn:xmpp:http:upload:purpose:0'/>";
    let ephemeral =
        "<ephemeral xmlns='urn:xmpp:http:upload:purpose:0' expire-before='2099-01-01T00:00:00Z'/>";
    assert!(iq(&s, "alice@example.test", &request(100, permanent)).contains("<slot"));
    let refused = iq(&s, "bob@example.test", &request(100, permanent));
    assert!(refused.contains("<feature-not-implemented"), "{refused}");
    assert!(iq(&s, "bob@example.test", &request(100, ephemeral)).contains("<slot"));
    let refused = iq(&s, "alice@example.test", &request(100, ephemeral));
    assert!(refused.contains("<feature-not-implemented"), "{refused}");

    // Slot rate: the partners' 2 at once (the refused 600 KiB request above
    // took one); bob's default is 30.
    let three = vec![request(10, ""), request(10, ""), request(10, "")];
    let replies = iqs(&s, "mallory@other.test", &three);
    assert!(replies[0].contains("<slot"), "{replies:?}");
    for reply in &replies[1..] {
        assert!(
            reply.contains("<resource-constraint") && reply.contains("Too many upload requests"),
            "{replies:?}"
        );
    }
    assert!(iqs(&s, "bob@example.test", &three)
        .iter()
        .all(|r| r.contains("<slot")));

    // Quota at slot time: bob's default 1.5 MiB a day; alice's group has 100 MiB.
    let replies = iqs(
        &s,
        "bob@example.test",
        &[request(MIB, ""), request(MIB, "")],
    );
    assert!(replies[0].contains("<slot"), "{replies:?}");
    assert!(
        replies[1].contains("<resource-constraint")
            && replies[1].contains("daily quota of 1572864 bytes"),
        "{replies:?}"
    );
    assert!(iq(&s, "alice@example.test", &request(4 * MIB, "")).contains("<slot"));

    // And again on PUT, for slots granted elsewhere (no reservation here):
    // alice's 2 MiB already stored plus 2 MiB fits her group's quota only.
    let body = vec![1u8; 2 * MIB as usize];
    let (path, token) = mint_slot_by("alice@example.test/laptop", body.len() as u64, "a.bin");
    let (status, text) = put(s.mftd.http_port, &path, &token, &body, None);
    assert_eq!(status, 201, "{text}\n{}", s.mftd.log());
    let (path, token) = mint_slot_by("bob@example.test/phone", body.len() as u64, "b.bin");
    let (status, text) = put(s.mftd.http_port, &path, &token, &body, None);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("daily quota of 1572864 bytes"), "{text}");

    // check-config --for names the group and the pattern that matched.
    let alice = check_config_for(&s, "Alice@Example.test/desk");
    assert!(
        alice.contains(
            "limits for alice@example.test/desk: group \"big-files\" (matched by bare JID \"alice@example.test\")"
        ) && alice.contains("max_file_size: 8388608 bytes")
            && alice.contains("per_user_daily: 104857600 bytes")
            && alice.contains("purposes: message, profile, permanent"),
        "{alice}"
    );
    let partner = check_config_for(&s, "carol@other.test");
    assert!(
        partner.contains("group \"partners\" (matched by domain \"other.test\")")
            && partner.contains("slot requests: 2 a minute, 2 at once"),
        "{partner}"
    );
    let bob = check_config_for(&s, "bob@example.test");
    assert!(
        bob.contains("limits for bob@example.test: no group")
            && bob.contains("max_file_size: 1048576 bytes")
            && bob.contains("per_user_daily: 1572864 bytes")
            && bob.contains("purposes: message, profile, ephemeral"),
        "{bob}"
    );
}

#[test]
fn a_resource_or_a_look_alike_does_not_buy_a_groups_limits() {
    let s = setup();
    // bob signs in with a resource that spells alice's JID (and a domain
    // of the partners group): he stays in no group.
    let tricky = "bob@example.test/alice@example.test";
    assert_eq!(disco(&s, tricky).0, MIB);
    let reply = iq(&s, tricky, &request(2 * MIB, ""));
    assert!(
        reply.contains(&format!("<max-file-size>{MIB}</max-file-size>")),
        "{reply}"
    );
    assert_eq!(disco(&s, "bob@example.test/x@other.test").0, MIB);
    let out = check_config_for(&s, tricky);
    assert!(out.contains("no group"), "{out}");

    // A different account whose name looks like alice's.
    assert_eq!(disco(&s, LOOKALIKE).0, MIB);
    let reply = iq(&s, LOOKALIKE, &request(2 * MIB, ""));
    assert!(reply.contains("<file-too-large"), "{reply}");
    let out = check_config_for(&s, LOOKALIKE);
    assert!(out.contains("no group"), "{out}");
    // Case is not a trick: the router folds it, and so does mftd.
    assert_eq!(disco(&s, "ALICE@example.test").0, 8 * MIB);
}

/// Written with the DNS root label's dot, and naming a domain that is not
/// allowed: the same people, and `check-config --for` says what the
/// service does.
const DOTTED: &str = r#"max_file_size = "1 MiB"
allowed_domains = ["Example.TEST."]

[[limits.group]]
name = "big-files"
match = ["alice@example.test."]
max_file_size = "8 MiB"

[[limits.group]]
name = "partners"
match = ["*@other.test"]
max_file_size = "512 KiB"
"#;

#[test]
fn check_config_for_says_what_the_service_does_with_dots_and_unallowed_domains() {
    let s = setup_with(DOTTED);
    // Prosody strips the root label's dot; so must the configuration:
    // example.test is allowed and alice is in her group.
    assert_eq!(disco(&s, "alice@example.test").0, 8 * MIB);
    // Above the default size, within the group's (and the 1.5 MiB quota).
    let reply = iq(&s, "alice@example.test", &request(MIB + 4096, ""));
    assert!(reply.contains("<slot"), "{reply}");
    assert_eq!(disco(&s, "bob@example.test").0, MIB);
    for asked in ["alice@example.test", "Alice@Example.TEST./desk"] {
        let out = check_config_for(&s, asked);
        assert!(
            out.contains("group \"big-files\" (matched by bare JID \"alice@example.test\")"),
            "{asked}: {out}"
        );
    }
    // other.test is not allowed: the service refuses mallory before any
    // group applies, and check-config --for says so instead of showing
    // the partners' limits.
    let reply = iq(&s, "mallory@other.test", &request(100, ""));
    assert!(reply.contains("<forbidden"), "{reply}");
    let out = std::process::Command::new(binary())
        .args(["check-config", "--config"])
        .arg(s.mftd.config_path())
        .args(["--for", "mallory@other.test"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("limits for mallory@other.test: none: its domain \"other.test\" is not in limits.allowed_domains (example.test), so every slot request from it is refused (forbidden); group \"partners\""),
        "{stdout}"
    );
    assert!(!stdout.contains("max_file_size: 524288"), "{stdout}");
    assert!(
        stderr.contains("warning: limits.group \"partners\" matches other.test, whose domain is not in limits.allowed_domains"),
        "{stderr}"
    );
}

#[test]
fn a_domain_in_a_labels_and_in_unicode_is_one_domain_through_prosody() {
    // Prosody serves the host under its Unicode name and stamps its users'
    // stanzas so; the configuration writes it with A-labels.
    let host = "b\u{fc}cher.test";
    let pg = Postgres::start();
    let mut popts = ProsodyOptions::default();
    popts.hosts.push(host.into());
    popts
        .users
        .push((format!("carol@{host}"), "carol-pw".into()));
    let prosody = Prosody::start(popts);
    let mut opts = MftdOptions::for_prosody(&prosody);
    opts.limits = "max_file_size = \"1 MiB\"\nallowed_domains = [\"example.test\", \"xn--bcher-kva.test\"]\n\n[[limits.group]]\nname = \"books\"\nmatch = [\"*@xn--bcher-kva.test\"]\nmax_file_size = \"3 MiB\"\n".into();
    opts.extra = format!("[database]\nurl = \"{}\"\n", pg.url());
    let mftd = Mftd::start(&opts);
    mftd.wait_connected(1);
    let s = Setup {
        prosody,
        mftd,
        _pg: pg,
    };
    let carol = format!("carol@{host}");
    assert_eq!(disco(&s, &carol).0, 3 * MIB);
    let reply = iq(&s, &carol, &request(2 * MIB, ""));
    assert!(reply.contains("<slot"), "{reply}");
    let out = check_config_for(&s, &carol);
    assert!(out.contains("group \"books\""), "{out}");
}
