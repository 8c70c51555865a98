//! The audit trail names people, with the router module
//! (`router/prosody/mod_mftd.lua`) in a real Prosody, real slixmpp clients
//! and a real PostgreSQL: who a file was sent to (1:1, a group chat, a
//! persistent room), every forward as its own share, and who fetched it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use xmpp_tests::client::{self, listen_at, resource_of};
use xmpp_tests::mftd::{Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::free_port;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

const KEY: &str = "router-share-key-0123456789abcdef";
const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");
const BOB: (&str, &str) = ("bob@example.test", "bob-pw");
const CAROL: (&str, &str) = ("carol@example.test", "carol-pw");

struct World {
    prosody: Prosody,
    pg: Postgres,
    mftd: Mftd,
    dir: tempfile::TempDir,
}

fn world(module: bool) -> World {
    let port = free_port();
    let mut opts = ProsodyOptions::default();
    opts.users
        .push(("carol@example.test".into(), "carol-pw".into()));
    opts.muc = true;
    if module {
        opts.mftd_module = Some((format!("http://127.0.0.1:{port}/"), KEY.into()));
    }
    let prosody = Prosody::start(opts);
    let pg = Postgres::start();
    let mut m = MftdOptions::for_prosody(&prosody);
    m.http_port = Some(port);
    m.extra = format!(
        "[database]\nurl = \"{}\"\n[chat]\ngroupchat_services = [\"conference.example.test\"]\npersistent_services = [\"rooms.example.test\"]\n",
        pg.url()
    );
    if module {
        m.extra
            .push_str(&format!("[recipients]\nshare_key = \"{KEY}\"\n"));
    }
    let mftd = Mftd::start(&m);
    mftd.wait_connected(1);
    World {
        prosody,
        pg,
        mftd,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl World {
    fn upload(&self, name: &str) -> String {
        let file = self.dir.path().join(name);
        std::fs::write(&file, name.repeat(1000)).unwrap();
        let out = client::run(
            &self.prosody,
            ALICE.0,
            ALICE.1,
            &["upload", "--file", file.to_str().unwrap()],
        );
        assert_eq!(out["put_status"], 201, "{out}\n{}", self.mftd.log());
        out["get_url"].as_str().unwrap().to_owned()
    }

    /// Starts `who` listening (in `room` as `nick` if given) for `count` messages.
    fn listen(
        &self,
        who: (&str, &str),
        room: Option<(&str, &str)>,
        count: usize,
    ) -> std::process::Child {
        listen_at(&self.prosody.c2s_addr(), self.dir.path(), who, room, count)
    }

    fn send(&self, to: &str, body: &str, oob: Option<&str>, nick: Option<&str>) {
        let mut args = vec!["send", "--to", to, "--body", body];
        if let Some(url) = oob {
            args.extend(["--oob", url]);
        }
        if let Some(n) = nick {
            args.extend(["--nick", n]);
        }
        client::run(&self.prosody, ALICE.0, ALICE.1, &args);
    }
}

#[test]
fn one_to_one_shares_forwards_and_downloads_name_people() {
    let w = world(true);
    let url = w.upload("minutes.txt");
    let resource = resource_of(&url);

    // alice sends the URL to bob (body + XEP-0066, as Conversations does).
    let bob = w.listen(BOB, None, 1);
    w.send(BOB.0, &url, Some(&url), None);
    let got = client::wait(bob);
    let msg = &got["messages"][0];
    let delivered = msg["oob"]
        .as_str()
        .unwrap_or_else(|| panic!("{got}\n{}", w.prosody.log()));
    assert!(delivered.starts_with(&format!("{url}?for=")), "{got}");
    assert!(
        msg["body"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{url}?for=")),
        "{got}"
    );
    assert!(
        msg["fetched"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["status"] == 200),
        "{got}"
    );

    // The POST row names bob and the chat type; the share is its own row.
    let post = w.pg.psql_eventually(
        &format!("SELECT to_jid, chat_type FROM aft_log WHERE method = 'POST' AND filename = '{resource}'"),
        "bob@example.test|im",
    );
    assert_eq!(post, "bob@example.test|im", "{}", w.mftd.log());
    let share = w.pg.psql(&format!(
        "SELECT split_part(sender, '/', 1), recipient, chat_type, reported_by FROM shares WHERE resource = '{resource}'"
    ));
    assert_eq!(
        share.trim(),
        "alice@example.test|bob@example.test|im|example.test"
    );
    // bob's fetch is logged as bob's.
    let gets = w.pg.psql_eventually(
        &format!("SELECT DISTINCT jid FROM aft_log WHERE method = 'GET' AND filename = '{resource}' AND jid <> ''"),
        "bob@example.test",
    );
    assert_eq!(gets, "bob@example.test");

    // alice forwards the same URL to carol: a second share; the POST row keeps bob.
    let carol = w.listen(CAROL, None, 1);
    w.send(CAROL.0, &format!("see {url}"), None, None);
    let got = client::wait(carol);
    assert_eq!(got["messages"][0]["fetched"][0]["status"], 200, "{got}");
    assert_eq!(
        w.pg.psql_eventually(
            &format!("SELECT count(*) FROM shares WHERE resource = '{resource}'"),
            "2"
        ),
        "2"
    );
    assert_eq!(
        w.pg.psql(&format!(
            "SELECT to_jid FROM aft_log WHERE method = 'POST' AND filename = '{resource}'"
        ))
        .trim(),
        "bob@example.test"
    );
    assert_eq!(
        w.pg.psql_eventually(
            &format!("SELECT count(DISTINCT jid) FROM aft_log WHERE method = 'GET' AND filename = '{resource}' AND jid <> ''"),
            "2"
        ),
        "2"
    );

    // `mftd log` shows the recipient; `--shares` every share.
    let log = |args: &[&str]| {
        let out = std::process::Command::new(xmpp_tests::mftd::binary())
            .args(["log", "--config"])
            .arg(w.mftd.config_path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let posts = log(&["--method", "post", "--format", "json"]);
    assert!(posts.contains("\"to_jid\":\"bob@example.test\""), "{posts}");
    let shares = log(&["--shares", "--jid", "alice@example.test", "--format", "csv"]);
    assert_eq!(shares.lines().count(), 3, "{shares}");
    assert!(
        shares.contains(",carol@example.test,im,") && shares.contains("minutes.txt"),
        "{shares}"
    );
    let table = log(&["--shares", "--to", "bob@example.test"]);
    assert!(table.ends_with("(1 rows)\n"), "{table}");

    // The compliance queries of docs/operations.md answer as documented.
    let sent = w.pg.psql(
        "SELECT f.real_filename FROM shares s JOIN files f USING (resource) \
         WHERE split_part(s.sender, '/', 1) = 'alice@example.test' AND s.recipient = 'carol@example.test' \
         AND s.date_time > now() - interval '7 days'",
    );
    assert_eq!(sent.trim(), "minutes.txt");
    let fetched = w.pg.psql(
        "SELECT string_agg(DISTINCT g.jid, ',' ORDER BY g.jid) FROM aft_log g WHERE g.method = 'GET' AND g.jid <> '' \
         AND g.filename IN (SELECT filename FROM aft_log WHERE method = 'POST' AND real_filename = 'minutes.txt')",
    );
    assert_eq!(fetched.trim(), "bob@example.test,carol@example.test");

    // A claim altered to name someone else is refused; no claim is anonymous.
    let carols_url = got["messages"][0]["fetched"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (base, claim) = carols_url.split_once("?for=").unwrap();
    let (_, mac) = claim.split_once('.').unwrap();
    let forged = format!("{base}?for=Ym9iQGV4YW1wbGUudGVzdA.{mac}");
    assert_eq!(xmpp_tests::http::status(&forged), 403);
    assert_eq!(xmpp_tests::http::status(base), 200);

    // A message without mftd URLs arrives exactly as sent.
    let bob = w.listen(BOB, None, 1);
    let plain = "see the minutes & <tags> ?for=x in the usual place";
    w.send(BOB.0, plain, None, None);
    let got = client::wait(bob);
    assert_eq!(got["messages"][0]["body"], plain, "{got}");

    // A user cannot report a share: forbidden, nothing written.
    let before = w.pg.psql("SELECT count(*) FROM shares");
    let forged_share = format!(
        "<share xmlns='urn:mftd:share:0' resource='{resource}' sender='mallory@example.test' recipient='eve@example.test' chat-type='im'/>"
    );
    let out = client::run(
        &w.prosody,
        ALICE.0,
        ALICE.1,
        &[
            "iq",
            "--to",
            &w.prosody.component_jid,
            "--type",
            "set",
            &forged_share,
        ],
    );
    assert!(
        out["reply"].as_str().unwrap().contains("forbidden"),
        "{out}"
    );
    assert_eq!(w.pg.psql("SELECT count(*) FROM shares"), before);
}

#[test]
fn rooms_give_group_chat_or_persistent_and_each_occupant_their_own_url() {
    let w = world(true);
    for (room, kind) in [
        ("lunch@conference.example.test", "groupchat"),
        ("board@rooms.example.test", "persistent"),
    ] {
        let url = w.upload(&format!("{kind}.txt"));
        let resource = resource_of(&url);
        // The room exists once someone is in it: bob first, then carol.
        let bob = w.listen(BOB, Some((room, "bob")), 1);
        let carol = w.listen(CAROL, Some((room, "carol")), 1);
        w.send(room, &url, Some(&url), Some("alice"));
        let (b, c) = (client::wait(bob), client::wait(carol));
        for (got, who) in [(&b, "bob"), (&c, "carol")] {
            let oob = got["messages"][0]["oob"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(oob.contains("?for="), "{who}: {got}");
            assert!(
                got["messages"][0]["fetched"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|f| f["status"] == 200),
                "{got}"
            );
        }
        assert_ne!(
            b["messages"][0]["oob"], c["messages"][0]["oob"],
            "each occupant has their own URL"
        );
        assert_eq!(
            w.pg.psql_eventually(
                &format!("SELECT to_jid, chat_type FROM aft_log WHERE method = 'POST' AND filename = '{resource}'"),
                &format!("{room}|{kind}")
            ),
            format!("{room}|{kind}"),
            "{}",
            w.mftd.log()
        );
        assert_eq!(
            w.pg.psql_eventually(
                &format!("SELECT string_agg(DISTINCT jid, ',' ORDER BY jid) FROM aft_log WHERE method = 'GET' AND filename = '{resource}' AND jid <> ''"),
                "bob@example.test,carol@example.test"
            ),
            "bob@example.test,carol@example.test"
        );
        // Every download row carries the room's chat type, as the upload's.
        // (The share may arrive after the fetches: rows written before it
        // take the room's type when it does.)
        assert_eq!(
            w.pg.psql_eventually(
                &format!("SELECT string_agg(DISTINCT chat_type, ',') FROM aft_log WHERE method = 'GET' AND filename = '{resource}'"),
                kind
            ),
            kind
        );
    }
}

/// Attempts are rows too: a download with an altered claim (403) and one of
/// a removed file (410) each leave a GET row with that status and no bytes;
/// a name that is no file leaves none.
#[test]
fn refused_downloads_of_logged_files_are_rows() {
    let w = world(true);
    let url = w.upload("attempts.txt");
    let resource = resource_of(&url);
    let bob = w.listen(BOB, None, 1);
    w.send(BOB.0, &url, Some(&url), None);
    let got = client::wait(bob);
    let bobs = got["messages"][0]["oob"].as_str().unwrap().to_owned();
    // eve alters bob's claim to read as hers.
    let (base, claim) = bobs.split_once("?for=").unwrap();
    let (_, mac) = claim.split_once('.').unwrap();
    let eve = base64_url("eve@example.test");
    let forged = format!("{base}?for={eve}.{mac}");
    assert_eq!(xmpp_tests::http::status(&forged), 403);
    assert_eq!(
        w.pg.psql_eventually(
            &format!("SELECT http_status, bytes_sent, jid FROM aft_log WHERE method = 'GET' AND filename = '{resource}' AND http_status = 403"),
            "403|0|",
        ),
        "403|0|"
    );
    // The file is removed (as retention would); bob's fetch is a 410 row naming him.
    w.pg.psql(&format!(
        "UPDATE files SET deleted = now() WHERE resource = '{resource}'"
    ));
    assert_eq!(xmpp_tests::http::status(&bobs), 410);
    assert_eq!(
        w.pg.psql_eventually(
            &format!("SELECT http_status, bytes_sent, jid FROM aft_log WHERE method = 'GET' AND filename = '{resource}' AND http_status = 410"),
            "410|0|bob@example.test",
        ),
        "410|0|bob@example.test"
    );
    // An unknown name is no attempt on a file: no row.
    let unknown = url.replace(&resource, "20261204-10-im-AAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(xmpp_tests::http::status(&unknown), 404);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        w.pg.psql(
            "SELECT count(*) FROM aft_log WHERE filename = '20261204-10-im-AAAAAAAAAAAAAAAAAAAAAA'"
        )
        .trim(),
        "0"
    );
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn without_the_module_everything_works_as_before() {
    let w = world(false);
    let url = w.upload("plain.txt");
    let resource = resource_of(&url);
    let bob = w.listen(BOB, None, 1);
    w.send(BOB.0, &url, Some(&url), None);
    let got = client::wait(bob);
    assert_eq!(got["messages"][0]["oob"], url.as_str(), "{got}");
    assert_eq!(got["messages"][0]["fetched"][0]["status"], 200);
    assert_eq!(
        w.pg.psql(&format!("SELECT to_jid, chat_type FROM aft_log WHERE method = 'POST' AND filename = '{resource}'")).trim(),
        "|im"
    );
    assert_eq!(w.pg.psql("SELECT count(*) FROM shares").trim(), "0");
}

#[test]
fn ejabberd_with_its_module_names_recipients_and_downloaders() {
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
        extra: format!(
            "[database]\nurl = \"{}\"\n[recipients]\nshare_key = \"{KEY}\"\n[chat]\ngroupchat_services = [\"conference.example.test\"]\n",
            pg.url()
        ),
        http_port: Some(port),
    });
    mftd.wait_connected(1);
    let c2s = ejabberd.c2s_addr();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.txt");
    std::fs::write(&file, "quarterly ".repeat(500)).unwrap();
    let out = client::run_at(
        &c2s,
        ALICE.0,
        ALICE.1,
        &["upload", "--file", file.to_str().unwrap()],
    );
    assert_eq!(out["put_status"], 201, "{out}\n{}", mftd.log());
    let url = out["get_url"].as_str().unwrap().to_owned();
    let resource = resource_of(&url);

    let bob = listen_at(&c2s, dir.path(), BOB, None, 1);
    client::run_at(
        &c2s,
        ALICE.0,
        ALICE.1,
        &["send", "--to", BOB.0, "--body", &url, "--oob", &url],
    );
    let got = client::wait(bob);
    let oob = got["messages"][0]["oob"].as_str().unwrap_or_default();
    assert!(
        oob.starts_with(&format!("{url}?for=")),
        "{got}\n{}",
        ejabberd.log()
    );
    assert_eq!(got["messages"][0]["fetched"][0]["status"], 200, "{got}");

    let post = pg.psql_eventually(
        &format!("SELECT to_jid, chat_type FROM aft_log WHERE method = 'POST' AND filename = '{resource}'"),
        "bob@example.test|im",
    );
    let gets = pg.psql_eventually(
        &format!("SELECT DISTINCT jid FROM aft_log WHERE method = 'GET' AND filename = '{resource}' AND jid <> ''"),
        "bob@example.test",
    );
    assert_eq!(post.trim(), "bob@example.test|im", "{}", mftd.log());
    assert_eq!(gets.trim(), "bob@example.test");
    assert_eq!(
        pg.psql(&format!("SELECT split_part(sender, '/', 1), reported_by FROM shares WHERE resource = '{resource}'")).trim(),
        "alice@example.test|example.test"
    );

    // A group chat on ejabberd's MUC: the room is the recipient, bob's copy is his.
    let room = "lunch@conference.example.test";
    let bob = listen_at(&c2s, dir.path(), BOB, Some((room, "bob")), 1);
    let file = dir.path().join("menu.txt");
    std::fs::write(&file, "soup ".repeat(500)).unwrap();
    let out = client::run_at(
        &c2s,
        ALICE.0,
        ALICE.1,
        &["upload", "--file", file.to_str().unwrap()],
    );
    let url = out["get_url"].as_str().unwrap().to_owned();
    let resource = resource_of(&url);
    client::run_at(
        &c2s,
        ALICE.0,
        ALICE.1,
        &[
            "send", "--to", room, "--nick", "alice", "--body", &url, "--oob", &url,
        ],
    );
    let got = client::wait(bob);
    assert!(
        got["messages"][0]["oob"]
            .as_str()
            .unwrap_or_default()
            .contains("?for="),
        "{got}\n{}",
        ejabberd.log()
    );
    let post = pg.psql_eventually(
        &format!("SELECT to_jid, chat_type FROM aft_log WHERE method = 'POST' AND filename = '{resource}'"),
        &format!("{room}|groupchat"),
    );
    assert_eq!(post.trim(), format!("{room}|groupchat"), "{}", mftd.log());
}

/// mftd away while people share files: the Prosody module queues each
/// report in Prosody's storage and delivers it when mftd is back, dated
/// with the message's own time; the uploader's share still names the
/// recipient of the upload and each recipient's download is theirs.
#[test]
fn shares_sent_while_mftd_is_away_are_recorded_when_it_returns() {
    let mut w = world(true);
    let url = w.upload("while-away.txt");
    let resource = resource_of(&url);
    let room = "standup@conference.example.test";
    let room_url = w.upload("room-while-away.txt");
    let room_resource = resource_of(&room_url);
    let bob_in_room = w.listen(BOB, Some((room, "bob")), 1);

    w.mftd.kill9();
    let sent_before = w.pg.psql("SELECT extract(epoch FROM now())::bigint");
    let carol = w.listen(CAROL, None, 1);
    w.send(CAROL.0, &url, Some(&url), None);
    let got = client::wait(carol);
    let carols_url = got["messages"][0]["oob"]
        .as_str()
        .unwrap_or_else(|| panic!("{got}\n{}", w.prosody.log()))
        .to_owned();
    w.send(room, &room_url, Some(&room_url), Some("alice"));
    let in_room = client::wait(bob_in_room);
    let bobs_room_url = in_room["messages"][0]["oob"]
        .as_str()
        .unwrap_or_else(|| panic!("{in_room}"))
        .to_owned();
    assert!(
        w.prosody.log().contains("queued, will retry"),
        "{}",
        w.prosody.log()
    );
    // Long enough that "reported now" and "sent then" differ.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        w.pg.psql("SELECT count(*) FROM shares").trim(),
        "0",
        "nothing can be recorded while mftd is away"
    );

    w.mftd.restart();
    w.mftd.wait_connected(2);
    for (resource, recipient, kind) in [
        (&resource, "carol@example.test", "im"),
        (&room_resource, room, "groupchat"),
    ] {
        let share = w.pg.psql_eventually(
            &format!("SELECT recipient, chat_type FROM shares WHERE resource = '{resource}'"),
            &format!("{recipient}|{kind}"),
        );
        assert_eq!(
            share,
            format!("{recipient}|{kind}"),
            "{}\n{}",
            w.mftd.log(),
            w.prosody.log()
        );
        // Dated when it was sent, recorded when mftd came back.
        let dated = w.pg.psql(&format!(
            "SELECT extract(epoch FROM date_time)::bigint - {}, \
             extract(epoch FROM reported_at - date_time)::bigint >= 2 \
             FROM shares WHERE resource = '{resource}'",
            sent_before.trim()
        ));
        let (offset, later) = dated.trim().split_once('|').unwrap();
        let offset: i64 = offset.parse().unwrap();
        assert!((-1..=5).contains(&offset), "date_time off by {offset}s");
        assert_eq!(later, "t", "reported_at comes after date_time: {dated}");
        assert_eq!(
            w.pg.psql_eventually(
                &format!("SELECT to_jid, chat_type FROM aft_log WHERE method = 'POST' AND filename = '{resource}'"),
                &format!("{recipient}|{kind}"),
            ),
            format!("{recipient}|{kind}")
        );
    }
    // Each recipient's fetch, once mftd is back, is theirs.
    for (u, resource, who) in [
        (&carols_url, &resource, "carol@example.test"),
        (&bobs_room_url, &room_resource, "bob@example.test"),
    ] {
        assert_eq!(xmpp_tests::http::status(u), 200, "{u}");
        assert_eq!(
            w.pg.psql_eventually(
                &format!("SELECT DISTINCT jid FROM aft_log WHERE method = 'GET' AND filename = '{resource}' AND jid <> ''"),
                who,
            ),
            who
        );
    }
    assert!(
        w.prosody
            .log()
            .contains("all queued share reports delivered to mftd"),
        "{}",
        w.prosody.log()
    );
}
