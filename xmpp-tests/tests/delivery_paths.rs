//! The paths a message carrying a file's URL can take after it is sent,
//! each with real clients (slixmpp), a real router with its stock delivery
//! modules, mftd and PostgreSQL: XEP-0280 message carbons to the sender's
//! and the recipient's other resources, offline storage delivered at the
//! next login (Prosody's mod_offline, ejabberd's mod_offline) and XEP-0313
//! archive results (Prosody's mod_mam). Each time: the person who fetches is
//! the person the row names, exactly one share is recorded (by the send), and
//! its time is the time the message was sent.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use xmpp_tests::client::{self, listen_with, resource_of};
use xmpp_tests::mftd::{Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::free_port;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

const KEY: &str = "router-share-key-0123456789abcdef";
const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";

/// A router (Prosody or ejabberd) with mod_mftd, mftd and PostgreSQL.
struct World {
    prosody: Option<Prosody>,
    ejabberd: Option<xmpp_tests::ejabberd::Ejabberd>,
    pg: Postgres,
    mftd: Mftd,
    c2s: String,
    dir: tempfile::TempDir,
}

fn mftd_extra(pg: &Postgres) -> String {
    format!(
        "[database]\nurl = \"{}\"\n[recipients]\nshare_key = \"{KEY}\"\n",
        pg.url()
    )
}

fn prosody_world() -> World {
    let port = free_port();
    let prosody = Prosody::start(ProsodyOptions {
        mftd_module: Some((format!("http://127.0.0.1:{port}/"), KEY.into())),
        delivery_modules: true,
        ..ProsodyOptions::default()
    });
    let pg = Postgres::start();
    let mut m = MftdOptions::for_prosody(&prosody);
    m.http_port = Some(port);
    m.extra = mftd_extra(&pg);
    let mftd = Mftd::start(&m);
    mftd.wait_connected(1);
    World {
        c2s: prosody.c2s_addr(),
        prosody: Some(prosody),
        ejabberd: None,
        pg,
        mftd,
        dir: tempfile::tempdir().unwrap(),
    }
}

fn ejabberd_world() -> World {
    use xmpp_tests::ejabberd::{Ejabberd, RouterOptions};
    let port = free_port();
    let ejabberd = Ejabberd::start_router(&RouterOptions {
        secret: "ejabberd-component-secret".into(),
        users: vec![
            ("alice".into(), "alice-pw".into()),
            ("bob".into(), "bob-pw".into()),
        ],
        mftd_module: Some((format!("http://127.0.0.1:{port}/"), KEY.into())),
    });
    let pg = Postgres::start();
    let mftd = Mftd::start(&MftdOptions {
        router: ejabberd.component_addr(),
        component_jid: "upload.example.test".into(),
        secret: "ejabberd-component-secret".into(),
        limits: "max_file_size = \"10 MiB\"\n".into(),
        store: None,
        extra: mftd_extra(&pg),
        http_port: Some(port),
    });
    mftd.wait_connected(1);
    World {
        c2s: ejabberd.c2s_addr(),
        prosody: None,
        ejabberd: Some(ejabberd),
        pg,
        mftd,
        dir: tempfile::tempdir().unwrap(),
    }
}

fn password(jid: &str) -> &'static str {
    if jid.starts_with("alice") {
        "alice-pw"
    } else {
        "bob-pw"
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl World {
    /// alice uploads a file (her client checks it with an unclaimed GET,
    /// the one anonymous download row); its URL.
    fn upload(&self, name: &str) -> String {
        let file = self.dir.path().join(name);
        std::fs::write(&file, name.repeat(500)).unwrap();
        let out = client::run_at(
            &self.c2s,
            ALICE,
            "alice-pw",
            &["upload", "--file", file.to_str().unwrap()],
        );
        assert_eq!(out["put_status"], 201, "{out}\n{}", self.mftd.log());
        out["get_url"].as_str().unwrap().to_owned()
    }

    /// Starts `jid` (a full JID: one resource) listening for `count` messages.
    fn listen(&self, jid: &str, extra: &[&str], count: usize) -> std::process::Child {
        listen_with(
            &self.c2s,
            self.dir.path(),
            (jid, password(jid)),
            extra,
            count,
        )
    }

    /// `from` (a full JID) sends `url` in the body and as XEP-0066 to `to`.
    fn send(&self, from: &str, to: &str, url: &str) {
        client::run_at(
            &self.c2s,
            from,
            password(from),
            &["send", "--to", to, "--body", url, "--oob", url],
        );
    }

    fn router_log(&self) -> String {
        match (&self.prosody, &self.ejabberd) {
            (Some(p), _) => p.log(),
            (_, Some(e)) => e.log(),
            _ => String::new(),
        }
    }

    /// The one share of `resource`: (sender's bare JID, recipient, chat
    /// type, its time in Unix seconds).
    fn only_share(&self, resource: &str) -> (String, String, String, i64) {
        let out = self.pg.psql(&format!(
            "SELECT split_part(sender, '/', 1), recipient, chat_type, \
             extract(epoch FROM date_time)::bigint FROM shares WHERE resource = '{resource}'"
        ));
        let rows: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(rows.len(), 1, "exactly one share: {out}");
        let f: Vec<&str> = rows[0].split('|').collect();
        (f[0].into(), f[1].into(), f[2].into(), f[3].parse().unwrap())
    }

    /// The download rows of `resource` as (who, HTTP status) sorted, once
    /// there are `want` of them.
    fn gets(&self, resource: &str, want: usize) -> Vec<String> {
        let sql = format!(
            "SELECT count(*) FROM aft_log WHERE method = 'GET' AND filename = '{resource}'"
        );
        self.pg.psql_eventually(&sql, &want.to_string());
        self.pg
            .psql(&format!(
                "SELECT jid || ' ' || http_status FROM aft_log WHERE method = 'GET' \
                 AND filename = '{resource}' ORDER BY 1"
            ))
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The messages a client reported, asserting each fetch was a 200.
fn messages(got: &Value) -> Vec<Value> {
    assert!(got.get("error").is_none(), "the client failed: {got}");
    let list = got["messages"].as_array().cloned().unwrap_or_default();
    for m in &list {
        for f in m["fetched"].as_array().unwrap() {
            assert_eq!(f["status"], 200, "{got}");
        }
    }
    list
}

/// Every URL `m` carried names `who` in its claim (`?for=`).
fn claimed_for(m: &Value, url: &str, who: &str) -> bool {
    use base64::Engine;
    let claim = format!(
        "{url}?for={}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(who)
    );
    m["body"].as_str().unwrap().starts_with(&claim)
        && m["oob"].as_str().unwrap().starts_with(&claim)
        && !m["fetched"].as_array().unwrap().is_empty()
}

/// Carbons: alice (resources a1, a2) sends to bob's resource b1; bob's b2
/// gets a `received` carbon, alice's a2 a `sent` carbon. Everyone fetches.
fn carbons(w: &World) {
    let url = w.upload("carbon.txt");
    let resource = resource_of(&url);
    let b1 = w.listen(&format!("{BOB}/b1"), &["--carbons"], 1);
    let b2 = w.listen(&format!("{BOB}/b2"), &["--carbons"], 1);
    let a2 = w.listen(&format!("{ALICE}/a2"), &["--carbons"], 1);
    w.send(&format!("{ALICE}/a1"), &format!("{BOB}/b1"), &url);
    let (b1, b2, a2) = (client::wait(b1), client::wait(b2), client::wait(a2));
    let log = w.router_log();

    let b1 = messages(&b1);
    assert_eq!(b1.len(), 1, "{b1:?}\n{log}");
    assert_eq!(b1[0]["via"], "direct");
    assert!(claimed_for(&b1[0], &url, BOB), "{b1:?}");
    let b2 = messages(&b2);
    assert_eq!(b2.len(), 1, "bob's other resource: {b2:?}\n{log}");
    assert_eq!(b2[0]["via"], "carbon-received");
    assert!(claimed_for(&b2[0], &url, BOB), "{b2:?}");
    let a2 = messages(&a2);
    assert_eq!(a2.len(), 1, "alice's other resource: {a2:?}\n{log}");
    assert_eq!(a2[0]["via"], "carbon-sent");
    // The sender's own copy names her: her fetch is hers, not a recipient's.
    assert!(claimed_for(&a2[0], &url, ALICE), "{a2:?}");

    // Upload check (anonymous), b1, b2 as bob, a2 as alice: nothing else.
    assert_eq!(
        w.gets(&resource, 4),
        [
            " 200",
            "alice@example.test 200",
            "bob@example.test 200",
            "bob@example.test 200"
        ],
        "{}",
        w.mftd.log()
    );
    let (sender, recipient, chat, _) = w.only_share(&resource);
    assert_eq!(
        (sender.as_str(), recipient.as_str(), chat.as_str()),
        (ALICE, BOB, "im")
    );
}

/// Offline: bob is away when alice sends; he logs in a few seconds later,
/// gets the stored copy and fetches. The share is dated when alice sent.
fn offline(w: &World) -> String {
    let url = w.upload("offline.txt");
    let resource = resource_of(&url);
    let before = unix_now();
    w.send(&format!("{ALICE}/a1"), BOB, &url);
    let after = unix_now();
    // The share is recorded when alice sends, not when bob reads.
    w.pg.psql_eventually(
        &format!("SELECT count(*) FROM shares WHERE resource = '{resource}'"),
        "1",
    );
    std::thread::sleep(Duration::from_secs(3));
    let login = unix_now();
    let got = client::wait(w.listen(&format!("{BOB}/later"), &[], 1));
    let got = messages(&got);
    assert_eq!(
        got.len(),
        1,
        "the offline message: {got:?}\n{}",
        w.router_log()
    );
    assert!(
        got[0]["delay"].is_string(),
        "delivered from storage: {got:?}"
    );
    assert!(
        claimed_for(&got[0], &url, BOB),
        "{got:?}\n{}",
        w.router_log()
    );
    assert_eq!(
        w.gets(&resource, 2),
        [" 200", "bob@example.test 200"],
        "{}",
        w.mftd.log()
    );
    let (sender, recipient, _, at) = w.only_share(&resource);
    assert_eq!((sender.as_str(), recipient.as_str()), (ALICE, BOB));
    assert!(
        (before - 1..=after + 1).contains(&at) && at < login,
        "share dated {at}, sent in [{before}, {after}], bob logged in at {login}"
    );
    url
}

#[test]
fn prosody_carbons_name_the_recipient_and_the_sender_as_themselves() {
    let w = prosody_world();
    carbons(&w);
}

#[test]
fn prosody_offline_delivery_is_attributed_with_the_original_time() {
    let w = prosody_world();
    offline(&w);
}

/// The messages in `jid`'s archive that carry `resource`, each fetched.
fn archived(w: &World, jid: &str, resource: &str) -> Vec<Value> {
    let got = client::run_at(&w.c2s, jid, password(jid), &["mam", "--fetch"]);
    messages(&got)
        .into_iter()
        .filter(|m| m["body"].as_str().unwrap_or("").contains(resource))
        .collect()
}

/// Archives: bob is offline when alice sends, so the message goes to
/// offline storage and to both archives. bob reads his archive (without
/// presence: nothing comes from offline storage), alice hers from another
/// device; each fetches.
fn archive(w: &World) {
    let url = w.upload("archive.txt");
    let resource = resource_of(&url);
    let before = unix_now();
    w.send(&format!("{ALICE}/a1"), BOB, &url);
    w.pg.psql_eventually(
        &format!("SELECT count(*) FROM shares WHERE resource = '{resource}'"),
        "1",
    );
    std::thread::sleep(Duration::from_secs(2));

    let bob = archived(w, &format!("{BOB}/phone"), &resource);
    assert_eq!(bob.len(), 1, "bob's archive: {bob:?}\n{}", w.router_log());
    assert_eq!(bob[0]["via"], "mam");
    assert!(claimed_for(&bob[0], &url, BOB), "{bob:?}");

    // alice's own sent copy names her.
    let alice = archived(w, &format!("{ALICE}/tablet"), &resource);
    assert_eq!(
        alice.len(),
        1,
        "alice's archive: {alice:?}\n{}",
        w.router_log()
    );
    assert!(claimed_for(&alice[0], &url, ALICE), "{alice:?}");

    assert_eq!(
        w.gets(&resource, 3),
        [" 200", "alice@example.test 200", "bob@example.test 200"],
        "{}",
        w.mftd.log()
    );
    // Still the one share, dated when alice sent.
    let (_, recipient, _, at) = w.only_share(&resource);
    assert_eq!(recipient, BOB);
    assert!(
        (before - 1..=before + 2).contains(&at),
        "share dated {at}, sent at {before}"
    );
}

#[test]
fn prosody_archive_copies_are_claimed_and_never_a_new_share() {
    let w = prosody_world();
    archive(&w);
}

#[test]
fn ejabberd_carbons_offline_delivery_and_archives_are_attributed() {
    let w = ejabberd_world();
    carbons(&w);
    offline(&w);
    archive(&w);
}
