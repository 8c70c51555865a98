//! File lifecycle against real parts: retention per chat type and
//! XEP-0363 1.2 purposes, with Prosody as router, slixmpp clients, OpenSSH
//! sshd as file server and PostgreSQL as transfer log. `mftd purge
//! --retention --now <time>` is the controllable clock: the same sweep the
//! service runs, evaluated as of a later moment.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use mft_common::utc::UtcTime;
use xmpp_tests::client;
use xmpp_tests::http::status;
use xmpp_tests::mftd::{binary, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};
use xmpp_tests::sshd::Sshd;

const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");
const DAY: u64 = 86_400;

struct World {
    prosody: Prosody,
    pg: Postgres,
    sshd: Sshd,
    mftd: Mftd,
    dir: tempfile::TempDir,
}

fn world(retention: &str) -> World {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = sshd.node_key(dir.path(), "node_1");
    let mut m = MftdOptions::for_prosody(&prosody);
    m.store = Some(sshd.store_toml("node_1", &key));
    m.extra = format!(
        "[database]\nurl = \"{}\"\n[chat]\ngroupchat_services = [\"conference.example.test\"]\n\
         persistent_services = [\"rooms.example.test\"]\n[retention]\n{retention}\n",
        pg.url()
    );
    let mftd = Mftd::start(&m);
    mftd.wait_connected(1);
    World {
        prosody,
        pg,
        sshd,
        mftd,
        dir,
    }
}

impl World {
    /// Uploads through Prosody; `extra` adds client options.
    fn upload(&self, name: &str, extra: &[&str]) -> serde_json::Value {
        let file = self.dir.path().join(name);
        std::fs::write(&file, name.repeat(100)).unwrap();
        let mut args = vec!["upload", "--file", file.to_str().unwrap()];
        args.extend(extra);
        client::run(&self.prosody, ALICE.0, ALICE.1, &args)
    }

    fn stored(&self, name: &str, extra: &[&str]) -> String {
        let out = self.upload(name, extra);
        assert_eq!(out["put_status"], 201, "{out}\n{}", self.mftd.log());
        out["get_url"].as_str().unwrap().to_owned()
    }

    /// `mftd purge` with `args`, as of `days_ahead` days from now.
    fn purge(&self, days_ahead: u64, args: &[&str]) -> std::process::Child {
        let at = UtcTime::from_system(SystemTime::now() + Duration::from_secs(days_ahead * DAY));
        Command::new(binary())
            .arg("purge")
            .arg("--config")
            .arg(self.mftd.config_path())
            .args(args)
            .args(["--now", &at.xep0082(), "--by", "ops-erin"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn purge_ok(&self, days_ahead: u64, args: &[&str]) -> String {
        let out = self.purge(days_ahead, args).wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "purge failed: {text}");
        text
    }

    fn sql(&self, query: &str) -> String {
        self.pg.psql(query).trim().to_owned()
    }
}

#[test]
fn retention_removes_each_chat_type_after_its_own_age_and_records_it() {
    let w =
        world("im = \"1d\"\ngroupchat = \"3d\"\npersistent = \"forever\"\nsweep_interval = \"1h\"");
    let im = w.stored("im.txt", &[]);
    let group = w.stored(
        "group.txt",
        &["--destination", "room@conference.example.test"],
    );
    let kept = w.stored("kept.txt", &["--destination", "hall@rooms.example.test"]);
    assert_eq!(
        w.sql("SELECT string_agg(chat_type, ',' ORDER BY chat_type) FROM files"),
        "groupchat,im,persistent"
    );
    // Now: everything is of the current hour and younger than any limit.
    assert!(w.purge_ok(0, &["--retention"]).contains("removed 0 files"));
    // Even an operator's purge of everything never touches the current hour.
    assert!(w
        .purge_ok(0, &["--older-than", "0s"])
        .contains("removed 0 files"));
    // Two days on: the 1:1 file is past its day, the others are not.
    assert!(w.purge_ok(2, &["--retention"]).contains("removed 1 files"));
    assert_eq!(status(&im), 410);
    assert_eq!(status(&group), 200);
    assert_eq!(status(&kept), 200);
    // Four days on: the group chat file follows; the room's stays forever.
    assert!(w.purge_ok(4, &["--retention"]).contains("removed 1 files"));
    assert_eq!(status(&group), 410);
    assert!(w
        .purge_ok(4000, &["--retention"])
        .contains("removed 0 files"));
    assert_eq!(status(&kept), 200);
    // Each removal is on record for good; the log's history is untouched.
    assert_eq!(
        w.sql("SELECT string_agg(chat_type || ':' || reason || ':' || removed_by, ',' ORDER BY removal_id) FROM removals"),
        "im:retention:ops-erin,groupchat:retention:ops-erin"
    );
    assert_eq!(
        w.sql("SELECT count(*) FROM aft_log WHERE method = 'POST'"),
        "3"
    );
    // Gone from the file server too: only the room's file is left.
    let left: Vec<String> = xmpp_tests::mftd::stored_files(&w.sshd.node_root().join("node_1"));
    assert_eq!(left.len(), 2, "the data and its description: {left:?}");
    assert!(left[0].contains("/persistent/"), "{left:?}");
}

#[test]
fn a_dead_file_server_postpones_the_sweep_and_nothing_is_marked() {
    let mut w = world("im = \"1d\"");
    let url = w.stored("a.txt", &[]);
    w.sshd.kill();
    let out = w.purge(2, &["--retention"]).wait_with_output().unwrap();
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("nothing was marked deleted") || why.contains("file server"),
        "{why}"
    );
    assert_eq!(
        w.sql("SELECT count(*) FROM files WHERE deleted IS NOT NULL"),
        "0"
    );
    assert_eq!(w.sql("SELECT count(*) FROM removals"), "0");
    w.sshd.restart();
    assert!(w.purge_ok(2, &["--retention"]).contains("removed 1 files"));
    assert_eq!(status(&url), 410);
    assert_eq!(w.sql("SELECT count(*) FROM removals"), "1");
}

#[test]
fn two_sweepers_at_once_retire_each_file_once() {
    let w = world("im = \"1d\"");
    for i in 0..6 {
        w.stored(&format!("f{i}.txt"), &[]);
    }
    let a = w.purge(2, &["--retention"]);
    let b = w.purge(2, &["--retention"]);
    let outputs: Vec<String> = [a, b]
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .collect();
    let removed: u64 = outputs
        .iter()
        .filter_map(|o| {
            o.split("removed ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(removed, 6, "{outputs:?}");
    assert_eq!(
        w.sql("SELECT count(*), count(DISTINCT resource) FROM removals"),
        "6|6"
    );
    assert_eq!(
        w.sql("SELECT count(*) FROM files WHERE deleted IS NULL"),
        "0"
    );
}

#[test]
fn purposes_through_prosody_ephemeral_expires_and_permanent_follows_config() {
    let w = world("im = \"1d\"\nsweep_interval = \"1s\"");
    let found = client::run(&w.prosody, ALICE.0, ALICE.1, &["discover"]);
    let features = found["services"][0]["features"].to_string();
    for purpose in ["message", "profile", "ephemeral"] {
        assert!(
            features.contains(&format!("urn:xmpp:http:upload:purpose:0#{purpose}")),
            "{features}"
        );
    }
    assert!(
        !features.contains("#permanent"),
        "not allowed here: {features}"
    );
    // An old client without purposes: as before, a message upload.
    let plain = w.stored("plain.txt", &[]);
    // Ephemeral: gone (410) after its time, retired by the service's own sweeper.
    let soon = UtcTime::from_system(SystemTime::now() + Duration::from_secs(4)).xep0082();
    let eph = w.stored(
        "eph.txt",
        &["--purpose", "ephemeral", "--expire-before", &soon],
    );
    assert_eq!(status(&eph), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.sql("SELECT count(*) FROM removals WHERE reason = 'expired'") != "1" {
        assert!(Instant::now() < deadline, "{}", w.mftd.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(status(&eph), 410);
    assert_eq!(status(&plain), 200, "the message upload is untouched");
    assert_eq!(
        w.sql("SELECT purpose || ':' || (expires IS NOT NULL) FROM files ORDER BY created"),
        "message:false\nephemeral:true"
    );
    // Permanent is refused here, with the error the client can act on.
    let refused = w.upload("perm.txt", &["--purpose", "permanent"]);
    assert!(
        refused.to_string().contains("feature-not-implemented"),
        "{refused}"
    );
    // A malformed or past expiry is a bad request.
    for stamp in ["tomorrow", "2020-01-01T00:00:00Z"] {
        let out = w.upload(
            "bad.txt",
            &["--purpose", "ephemeral", "--expire-before", stamp],
        );
        assert!(out.to_string().contains("bad-request"), "{stamp}: {out}");
    }
}

#[test]
fn permanent_uploads_are_kept_when_allowed() {
    let w = world("im = \"1d\"\nallow_permanent = true");
    let found = client::run(&w.prosody, ALICE.0, ALICE.1, &["discover"]);
    assert!(found.to_string().contains("purpose:0#permanent"), "{found}");
    let perm = w.stored("perm.txt", &["--purpose", "permanent"]);
    let msg = w.stored("msg.txt", &[]);
    assert!(w.purge_ok(30, &["--retention"]).contains("removed 1 files"));
    assert_eq!(status(&msg), 410);
    assert_eq!(status(&perm), 200, "permanent is exempt from age limits");
}
