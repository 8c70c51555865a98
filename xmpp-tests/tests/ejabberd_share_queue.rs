//! ejabberd's router module (`router/ejabberd/mod_mftd.erl`) keeps the share
//! reports mftd could not take in its queue and delivers them when mftd is
//! back, dated with the message's own time; the queue survives an ejabberd
//! restart. Real ejabberd, slixmpp clients and PostgreSQL.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use xmpp_tests::client::{self, listen_at, resource_of};
use xmpp_tests::ejabberd::{Ejabberd, RouterOptions};
use xmpp_tests::mftd::{Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::free_port;

const KEY: &str = "router-share-key-0123456789abcdef";
const SECRET: &str = "ejabberd-component-secret";
const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");
const BOB: (&str, &str) = ("bob@example.test", "bob-pw");
const CAROL: (&str, &str) = ("carol@example.test", "carol-pw");

struct World {
    ejabberd: Ejabberd,
    pg: Postgres,
    mftd: Mftd,
    dir: tempfile::TempDir,
}

fn world() -> World {
    let port = free_port();
    let ejabberd = Ejabberd::start_router(&RouterOptions {
        secret: SECRET.into(),
        users: [ALICE, BOB, CAROL]
            .iter()
            .map(|(jid, pw)| (jid.split('@').next().unwrap().into(), (*pw).into()))
            .collect(),
        mftd_module: Some((format!("http://127.0.0.1:{port}/"), KEY.into())),
    });
    let pg = Postgres::start();
    let mftd = Mftd::start(&MftdOptions {
        router: ejabberd.component_addr(),
        component_jid: "upload.example.test".into(),
        secret: SECRET.into(),
        limits: "max_file_size = \"10 MiB\"\n".into(),
        store: None,
        extra: format!(
            "[database]\nurl = \"{}\"\n[recipients]\nshare_key = \"{KEY}\"\n[chat]\ngroupchat_services = [\"conference.example.test\"]\n",
            pg.url()
        ),
        http_port: Some(port),
    });
    mftd.wait_connected(1);
    World {
        ejabberd,
        pg,
        mftd,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl World {
    fn c2s(&self) -> String {
        self.ejabberd.c2s_addr()
    }

    fn upload(&self, name: &str) -> String {
        let file = self.dir.path().join(name);
        std::fs::write(&file, name.repeat(1000)).unwrap();
        let out = client::run_at(
            &self.c2s(),
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
        listen_at(&self.c2s(), self.dir.path(), who, room, count)
    }

    fn send(&self, to: &str, url: &str, nick: Option<&str>) {
        let mut args = vec!["send", "--to", to, "--body", url, "--oob", url];
        if let Some(n) = nick {
            args.extend(["--nick", n]);
        }
        client::run_at(&self.c2s(), ALICE.0, ALICE.1, &args);
    }

    /// Waits until ejabberd's log has `needle`.
    fn wait_for_ejabberd_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.ejabberd.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "ejabberd never logged {needle:?}:\n{}\nmftd:\n{}",
                self.ejabberd.log(),
                self.mftd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The share of `resource` is recorded once, for `recipient` as `kind`,
    /// dated within a few seconds after `sent_before` (epoch seconds) and
    /// reported at least 2 s later than it was sent; the upload's POST row
    /// names the recipient.
    fn assert_share_dated(&self, resource: &str, recipient: &str, kind: &str, sent_before: i64) {
        let share = self.pg.psql_eventually(
            &format!(
                "SELECT count(*), min(recipient), min(chat_type) FROM shares WHERE resource = '{resource}'"
            ),
            &format!("1|{recipient}|{kind}"),
        );
        assert_eq!(
            share,
            format!("1|{recipient}|{kind}"),
            "{}\n{}",
            self.mftd.log(),
            self.ejabberd.log()
        );
        let dated = self.pg.psql(&format!(
            "SELECT extract(epoch FROM date_time)::bigint - {sent_before}, \
             extract(epoch FROM reported_at - date_time)::bigint >= 2 \
             FROM shares WHERE resource = '{resource}'"
        ));
        let (offset, later) = dated.trim().split_once('|').unwrap();
        let offset: i64 = offset.parse().unwrap();
        assert!(
            (-1..=5).contains(&offset),
            "date_time off by {offset}s for {resource}"
        );
        assert_eq!(later, "t", "reported_at comes after date_time: {dated}");
        assert_eq!(
            self.pg.psql_eventually(
                &format!("SELECT to_jid, chat_type FROM aft_log WHERE method = 'POST' AND filename = '{resource}'"),
                &format!("{recipient}|{kind}"),
            ),
            format!("{recipient}|{kind}")
        );
    }

    /// `url` (a recipient's own) downloads, and the GET row names `who`.
    fn assert_fetch_attributed(&self, url: &str, resource: &str, who: &str) {
        assert_eq!(xmpp_tests::http::status(url), 200, "{url}");
        assert_eq!(
            self.pg.psql_eventually(
                &format!("SELECT DISTINCT jid FROM aft_log WHERE method = 'GET' AND filename = '{resource}' AND jid <> ''"),
                who,
            ),
            who
        );
    }

    fn now(&self) -> i64 {
        self.pg
            .psql("SELECT extract(epoch FROM now())::bigint")
            .trim()
            .parse()
            .unwrap()
    }
}

/// The URL a recipient got, from a listener's answer.
fn received_url(got: &serde_json::Value, ejabberd: &Ejabberd) -> String {
    got["messages"][0]["oob"]
        .as_str()
        .filter(|u| u.contains("?for="))
        .unwrap_or_else(|| panic!("{got}\n{}", ejabberd.log()))
        .to_owned()
}

/// mftd away while alice shares files with carol and with a room: each
/// report waits in ejabberd's queue, reaches mftd when it is back, dated
/// when it was sent; each recipient's download is theirs.
#[test]
fn shares_sent_through_ejabberd_while_mftd_is_away_are_recorded_when_it_returns() {
    let mut w = world();
    let url = w.upload("while-away.txt");
    let resource = resource_of(&url);
    let room = "standup@conference.example.test";
    let room_url = w.upload("room-while-away.txt");
    let room_resource = resource_of(&room_url);
    let bob_in_room = w.listen(BOB, Some((room, "bob")), 1);

    w.mftd.kill9();
    let sent_before = w.now();
    let carol = w.listen(CAROL, None, 1);
    w.send(CAROL.0, &url, None);
    let carols_url = received_url(&client::wait(carol), &w.ejabberd);
    w.send(room, &room_url, Some("alice"));
    let bobs_room_url = received_url(&client::wait(bob_in_room), &w.ejabberd);
    w.wait_for_ejabberd_log("queued, will retry", Duration::from_secs(10));
    // Long enough that "reported now" and "sent then" differ, and for a
    // few tries with back-off while mftd is away.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        w.pg.psql("SELECT count(*) FROM shares").trim(),
        "0",
        "nothing can be recorded while mftd is away"
    );

    w.mftd.restart();
    w.mftd.wait_connected(2);
    w.wait_for_ejabberd_log(
        "all queued share reports delivered to mftd",
        Duration::from_secs(45),
    );
    w.assert_share_dated(&resource, CAROL.0, "im", sent_before);
    w.assert_share_dated(&room_resource, room, "groupchat", sent_before);
    w.assert_fetch_attributed(&carols_url, &resource, CAROL.0);
    w.assert_fetch_attributed(&bobs_room_url, &room_resource, BOB.0);
}

/// The queue is in ejabberd's database: reports queued while mftd is away
/// are still delivered after ejabberd itself restarted.
#[test]
fn queued_share_reports_survive_an_ejabberd_restart() {
    let mut w = world();
    let url = w.upload("across-restart.txt");
    let resource = resource_of(&url);

    w.mftd.kill9();
    let sent_before = w.now();
    let carol = w.listen(CAROL, None, 1);
    w.send(CAROL.0, &url, None);
    let carols_url = received_url(&client::wait(carol), &w.ejabberd);
    w.wait_for_ejabberd_log("queued, will retry", Duration::from_secs(10));

    w.ejabberd.restart();
    w.wait_for_ejabberd_log(
        "1 share reports queued from before",
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_secs(2));
    w.mftd.restart();
    w.mftd.wait_connected(2);
    w.wait_for_ejabberd_log(
        "all queued share reports delivered to mftd",
        Duration::from_secs(45),
    );
    w.assert_share_dated(&resource, CAROL.0, "im", sent_before);
    w.assert_fetch_attributed(&carols_url, &resource, CAROL.0);
}
