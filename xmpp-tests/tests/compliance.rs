//! Policy beats the user, holds beat policy, and every removal says who
//! and why — against real parts: Prosody as router, the slixmpp client,
//! OpenSSH sshd as file server, PostgreSQL as transfer log, and the `mftd`
//! binary's own `purge` and `hold` commands. `mftd purge --now <time>` is the
//! controllable clock (the same sweep the service runs, as of a later moment).

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use mft_common::utc::UtcTime;
use xmpp_tests::client;
use xmpp_tests::http::status;
use xmpp_tests::mftd::{binary, stored_files, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};
use xmpp_tests::sshd::Sshd;

const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");
const BOB: (&str, &str) = ("bob@example.test", "bob-pw");
const DAY: u64 = 86_400;
const ROOM: &str = "room@conference.example.test";

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
         [retention]\n{retention}\n",
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

/// An XEP-0082 time `secs` from now.
fn in_secs(secs: u64) -> String {
    UtcTime::from_system(SystemTime::now() + Duration::from_secs(secs)).xep0082()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl World {
    /// Uploads `content` as `name` through Prosody as `who`.
    fn upload(
        &self,
        who: (&str, &str),
        name: &str,
        content: &str,
        extra: &[&str],
    ) -> serde_json::Value {
        let file = self.dir.path().join(name);
        std::fs::write(&file, content).unwrap();
        let mut args = vec!["upload", "--file", file.to_str().unwrap()];
        args.extend(extra);
        client::run(&self.prosody, who.0, who.1, &args)
    }

    /// Uploads and expects it stored; the GET URL.
    fn stored(&self, who: (&str, &str), name: &str, content: &str, extra: &[&str]) -> String {
        let out = self.upload(who, name, content, extra);
        assert_eq!(out["put_status"], 201, "{out}\n{}", self.mftd.log());
        out["get_url"].as_str().unwrap().to_owned()
    }

    /// Runs `mftd <args> --config …` as an operator whose login name is
    /// `op-login` (no sudo).
    fn mftd(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(self.mftd.config_path())
            .env_remove("SUDO_USER")
            .env("LOGNAME", "op-login")
            .output()
            .unwrap()
    }

    fn mftd_ok(&self, args: &[&str]) -> String {
        let out = self.mftd(args);
        assert!(out.status.success(), "mftd {args:?}: {}", text(&out));
        text(&out)
    }

    /// `mftd purge <args>` as of `days_ahead` days from now; its report.
    fn purge(&self, days_ahead: u64, args: &[&str]) -> String {
        let at = UtcTime::from_system(SystemTime::now() + Duration::from_secs(days_ahead * DAY))
            .xep0082();
        let mut all = vec!["purge", "--now", &at];
        all.extend(args);
        self.mftd_ok(&all)
    }

    fn sql(&self, query: &str) -> String {
        self.pg.psql(query).trim().to_owned()
    }

    /// Files (data and description) on the file server.
    fn on_file_server(&self) -> usize {
        stored_files(&self.sshd.node_root().join("node_1")).len()
    }

    /// The resource of a GET URL.
    fn resource(url: &str) -> String {
        url.rsplit('/').nth(1).unwrap().to_owned()
    }
}

#[test]
fn the_floor_refuses_early_ephemeral_expiry_and_holds_off_purges_unless_an_operator_says_why() {
    let w = world(
        "im = \"30d\"\nminimum = \"7d\"\nminimum_groupchat = \"14d\"\nallow_permanent = false",
    );
    // Disco offers exactly what the configuration allows.
    let found = client::run(&w.prosody, ALICE.0, ALICE.1, &["discover"]);
    let features = found["services"][0]["features"].to_string();
    for offered in ["message", "profile", "ephemeral"] {
        assert!(
            features.contains(&format!("urn:xmpp:http:upload:purpose:0#{offered}")),
            "{features}"
        );
    }
    assert!(!features.contains("#permanent"), "{features}");
    let refused = w.upload(ALICE, "p.txt", "p", &["--purpose", "permanent"]);
    assert!(
        refused.to_string().contains("feature-not-implemented"),
        "{refused}"
    );

    // An ephemeral upload asking to be gone before the floor: refused, with
    // the XEP's modify/not-acceptable and the earliest time that would do.
    let early = w.upload(
        ALICE,
        "early.txt",
        "early",
        &["--purpose", "ephemeral", "--expire-before", &in_secs(3600)],
    );
    let why = early.to_string();
    assert!(
        why.contains("not-acceptable") && why.contains("at least 7 days"),
        "{why}"
    );
    // The floor of the chat type the upload is for: 14 days in group chats.
    let group = w.upload(
        ALICE,
        "group.txt",
        "group",
        &[
            "--purpose",
            "ephemeral",
            "--expire-before",
            &in_secs(8 * DAY),
            "--destination",
            ROOM,
        ],
    );
    assert!(
        group.to_string().contains("at least 14 days (groupchat"),
        "{group}"
    );
    assert_eq!(w.sql("SELECT count(*) FROM files"), "0");
    // After the floor: accepted as asked (not stretched).
    let eph = w.stored(
        ALICE,
        "eph.txt",
        "ephemeral",
        &[
            "--purpose",
            "ephemeral",
            "--expire-before",
            &in_secs(8 * DAY),
        ],
    );
    let msg = w.stored(ALICE, "msg.txt", "message", &[]);

    // Two days on, an ordinary purge of everything older than a day keeps
    // both: they are younger than the floor.
    let out = w.purge(2, &["--older-than", "1d"]);
    assert!(out.starts_with("removed 0 files"), "{out}");
    assert!(
        out.contains("kept 2 files younger than the retention floor"),
        "{out}"
    );
    assert_eq!((status(&eph), status(&msg)), (200, 200));
    // Nine days on, the ephemeral file is past its time and the floor: gone,
    // recorded as expired, by the operator who ran the sweep.
    let out = w.purge(9, &["--retention", "--by", "ops-erin"]);
    assert!(out.starts_with("removed 1 files"), "{out}");
    assert_eq!(status(&eph), 410);
    assert_eq!(status(&msg), 200);

    // Below the floor only with a reason on record.
    let out = w.mftd(&[
        "purge",
        "--now",
        &in_secs(2 * DAY),
        "--older-than",
        "1d",
        "--before-floor",
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--reason"), "{}", text(&out));
    let out = w.purge(
        2,
        &[
            "--older-than",
            "1d",
            "--before-floor",
            "--reason",
            "court order 12",
            "--by",
            "carol",
        ],
    );
    assert!(out.starts_with("removed 1 files"), "{out}");
    assert!(
        out.contains("1 of them younger than the retention floor"),
        "{out}"
    );
    assert_eq!(status(&msg), 410);
    assert_eq!(
        w.sql(
            "SELECT string_agg(reason || ':' || removed_by || ':' || note || ':' || before_floor, ',' \
             ORDER BY removal_id) FROM removals"
        ),
        "expired:ops-erin::false,purge:carol:court order 12:true"
    );
}

#[test]
fn a_purpose_the_configuration_does_not_allow_is_not_offered_and_is_refused() {
    let w = world("allow_ephemeral = false\nallow_permanent = true\nim = \"1d\"");
    let found = client::run(&w.prosody, ALICE.0, ALICE.1, &["discover"]);
    let features = found["services"][0]["features"].to_string();
    assert!(!features.contains("#ephemeral"), "{features}");
    assert!(features.contains("purpose:0#permanent"), "{features}");
    let refused = w.upload(
        ALICE,
        "e.txt",
        "e",
        &["--purpose", "ephemeral", "--expire-before", &in_secs(3600)],
    );
    assert!(
        refused.to_string().contains("feature-not-implemented"),
        "{refused}"
    );
    let perm = w.stored(ALICE, "perm.txt", "perm", &["--purpose", "permanent"]);
    assert_eq!(
        w.sql("SELECT purpose FROM files"),
        "permanent",
        "only the permanent upload was stored"
    );
    assert!(w
        .purge(30, &["--retention", "--by", "x"])
        .starts_with("removed 0 files"));
    assert_eq!(status(&perm), 200);
}

#[test]
fn held_files_survive_sweeps_expiry_and_purge_and_go_once_the_hold_is_lifted() {
    let w = world("im = \"1d\"\ngroupchat = \"1d\"\nsweep_interval = \"1h\"");
    // Held as sender: bob's upload. Held as recipient: a file meant for dave.
    let by_bob = w.stored(BOB, "by-bob.txt", "from bob", &[]);
    let for_dave = w.stored(
        ALICE,
        "for-dave.txt",
        "for dave",
        &["--destination", "Dave@Example.test/desk"],
    );
    let in_room = w.stored(ALICE, "room.txt", "in the room", &["--destination", ROOM]);
    // Held by content: two copies, one of them ephemeral (expiring in an hour).
    let evidence = w.upload(ALICE, "evidence.txt", "the evidence", &[]);
    assert_eq!(evidence["put_status"], 201, "{evidence}");
    let sha = evidence["sha256_sent"].as_str().unwrap().to_owned();
    let evidence = evidence["get_url"].as_str().unwrap().to_owned();
    let copy = w.stored(
        ALICE,
        "copy.txt",
        "the evidence",
        &["--purpose", "ephemeral", "--expire-before", &in_secs(3600)],
    );
    let free = w.stored(ALICE, "free.txt", "nobody holds this", &[]);
    assert_eq!(w.on_file_server(), 12, "six files and their descriptions");

    // Holds, each with its reason and who placed it (default: the login user).
    let placed = w.mftd_ok(&[
        "hold",
        "add",
        "--user",
        BOB.0,
        "--reason",
        "case 1: bob's files",
        "--by",
        "legal-anna",
    ]);
    assert!(placed.contains("covers 1 files now"), "{placed}");
    let placed = w.mftd_ok(&[
        "hold",
        "add",
        "--user",
        "dave@example.test",
        "--reason",
        "case 2",
    ]);
    assert!(placed.contains("by op-login"), "{placed}");
    assert!(placed.contains("covers 1 files now"), "{placed}");
    w.mftd_ok(&["hold", "add", "--room", ROOM, "--reason", "case 3"]);
    let placed = w.mftd_ok(&["hold", "add", "--sha256", &sha, "--reason", "case 4"]);
    assert!(placed.contains("covers 2 files now"), "{placed}");
    // A hold on nothing is refused, saying why.
    let bad = w.mftd(&["hold", "add", "--file", "no-such-file", "--reason", "x"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("resource name"), "{}", text(&bad));
    // No reason, no hold.
    let bad = w.mftd(&["hold", "add", "--user", BOB.0, "--reason", " "]);
    assert!(!bad.status.success(), "{}", text(&bad));

    // Two days on: the retention sweep (and the ephemeral copy's expiry)
    // removes only the free file, and says what it kept.
    let out = w.purge(2, &["--retention", "--by", "ops-erin"]);
    assert!(out.starts_with("removed 1 files"), "{out}");
    assert!(out.contains("kept 5 files under legal hold"), "{out}");
    // An operator's purge of everything does no more.
    let out = w.purge(2, &["--older-than", "0s", "--by", "ops-erin"]);
    assert!(out.starts_with("removed 0 files"), "{out}");
    assert!(out.contains("kept 5 files under legal hold"), "{out}");
    assert_eq!(status(&free), 410);
    for url in [&by_bob, &for_dave, &in_room] {
        assert_eq!(status(url), 200, "{url}");
    }
    // The ephemeral copy answers 410 past its time, but its bytes are kept.
    assert_eq!(status(&copy), 200, "not yet expired in real time");
    assert_eq!(
        w.sql("SELECT count(*) FROM files WHERE deleted IS NULL"),
        "5"
    );
    assert_eq!(w.on_file_server(), 10);
    let check = w.mftd(&["hold", "check", &copy]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(text(&check).contains("case 4"), "{}", text(&check));
    let check = w.mftd(&["hold", "check", &free]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));

    // Lifting bob's hold lets his file go; the others stay.
    let ids = w.sql("SELECT string_agg(hold_id::text, ',' ORDER BY hold_id) FROM holds");
    let ids: Vec<&str> = ids.split(',').collect();
    w.mftd_ok(&[
        "hold",
        "remove",
        ids[0],
        "--reason",
        "case 1 closed",
        "--by",
        "legal-anna",
    ]);
    let again = w.mftd(&["hold", "remove", ids[0], "--reason", "twice"]);
    assert!(
        text(&again).contains("already released"),
        "{}",
        text(&again)
    );
    let out = w.purge(2, &["--retention", "--by", "ops-erin"]);
    assert!(out.starts_with("removed 1 files"), "{out}");
    assert!(out.contains("kept 4 files under legal hold"), "{out}");
    assert_eq!(status(&by_bob), 410);
    // Lifting the rest lets everything go, by the operator's login name.
    for id in &ids[1..] {
        w.mftd_ok(&["hold", "remove", id, "--reason", "matter closed"]);
    }
    let out = w.purge(2, &["--retention"]);
    assert!(out.starts_with("removed 4 files"), "{out}");
    assert!(!out.contains("legal hold"), "{out}");
    assert_eq!(w.on_file_server(), 0);
    assert_eq!(
        w.sql(
            "SELECT string_agg(resource || ':' || reason || ':' || removed_by, ',' ORDER BY removal_id) \
             FROM removals"
        ),
        [
            (&free, "retention", "ops-erin"),
            (&by_bob, "retention", "ops-erin"),
            (&for_dave, "retention", "op-login"),
            (&in_room, "retention", "op-login"),
            (&evidence, "retention", "op-login"),
            (&copy, "expired", "op-login"),
        ]
        .iter()
        .map(|(url, reason, by)| format!("{}:{reason}:{by}", World::resource(url)))
        .collect::<Vec<_>>()
        .join(",")
    );

    // The hold history: every placing and lifting, who and why.
    assert_eq!(
        w.sql(
            "SELECT string_agg(hold_id || ':' || action || ':' || actor || ':' || reason, ',' \
             ORDER BY event_id) FROM hold_events"
        ),
        format!(
            "{a}:add:legal-anna:case 1: bob's files,{b}:add:op-login:case 2,{c}:add:op-login:case 3,\
             {d}:add:op-login:case 4,{a}:remove:legal-anna:case 1 closed,{b}:remove:op-login:matter closed,\
             {c}:remove:op-login:matter closed,{d}:remove:op-login:matter closed",
            a = ids[0],
            b = ids[1],
            c = ids[2],
            d = ids[3]
        )
    );
    // Every query docs/compliance.md gives an auditor runs, on this history;
    // none finds a removal that contradicted a hold in force at the time.
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/compliance.md"),
    )
    .unwrap();
    let queries: Vec<&str> = docs
        .split("```sql\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(queries.len() >= 6, "{queries:?}");
    let bob_resource = World::resource(&by_bob);
    for query in &queries {
        let query = query
            .replace("20261126-08-im-Qm9hcmQgbWludXRlcw", &bob_resource)
            .replace(":'res'", &format!("'{bob_resource}'"))
            .replace("hold_id = 3", &format!("hold_id = {}", ids[0]));
        let out = w.sql(&query);
        if query.contains("contradicted") || query.contains("h.placed_at <= r.removed_at") {
            assert_eq!(out, "", "a removal under a hold: {out}");
        } else if query.contains("UNION ALL") {
            let story: Vec<&str> = out.lines().map(|l| l.split('|').nth(1).unwrap()).collect();
            // The upload, then the downloads (the client's and this test's,
            // before and after the removal) and the removal, in time order.
            assert_eq!(story.first(), Some(&"POST"), "{out}");
            let removed = story.iter().position(|m| *m == "REMOVED retention");
            assert!(removed.is_some(), "{out}");
            assert!(
                story[1..]
                    .iter()
                    .all(|m| *m == "GET" || *m == "REMOVED retention"),
                "{out}"
            );
            assert_eq!(story.iter().filter(|m| m.starts_with("REMOVED")).count(), 1);
            assert!(out.contains("ops-erin"), "{out}");
        }
    }
    let history = w.mftd_ok(&["hold", "history", "--id", ids[0]]);
    assert_eq!(history.lines().count(), 3, "{history}");
    assert!(
        history.contains("add") && history.contains("remove"),
        "{history}"
    );
    assert!(history.contains("legal-anna"), "{history}");
    let all = w.mftd_ok(&["hold", "list", "--all"]);
    assert!(all.contains("released"), "{all}");
    assert_eq!(
        w.mftd_ok(&["hold", "list"]).lines().count(),
        1,
        "no hold in force"
    );
}

#[test]
fn the_audit_record_is_append_only() {
    let w = world("im = \"1d\"");
    let url = w.stored(ALICE, "a.txt", "a", &[]);
    w.mftd_ok(&["hold", "add", "--file", &url, "--reason", "case 9"]);
    let refused = |sql: &str| {
        let out = Command::new("psql")
            .args([&w.pg.url(), "-c", sql])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sql} was allowed");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("audit record")
                || String::from_utf8_lossy(&out.stderr).contains("only ever released"),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    refused("DELETE FROM holds");
    refused("DELETE FROM hold_events");
    refused("UPDATE holds SET reason = 'nothing'");
    refused("TRUNCATE hold_events");
    let id = w.sql("SELECT hold_id FROM holds");
    w.mftd_ok(&["hold", "remove", &id, "--reason", "done"]);
    refused("UPDATE holds SET released_at = NULL");
    assert!(w.purge(2, &["--retention"]).starts_with("removed 1 files"));
    refused("DELETE FROM removals");
    refused("UPDATE removals SET removed_by = 'someone else'");
    assert_eq!(w.sql("SELECT removed_by FROM removals"), "op-login");
}

#[test]
fn the_service_sweeper_keeps_a_held_expired_file_and_signs_its_removals() {
    let w = world("sweep_interval = \"1s\"");
    let eph = w.upload(
        ALICE,
        "eph.txt",
        "short-lived",
        &["--purpose", "ephemeral", "--expire-before", &in_secs(8)],
    );
    assert_eq!(eph["put_status"], 201, "{eph}");
    let sha = eph["sha256_sent"].as_str().unwrap();
    w.mftd_ok(&["hold", "add", "--sha256", sha, "--reason", "case 5"]);
    // Past its time, the sweeper finds it due and keeps it, saying so.
    assert!(
        w.mftd.wait_for_log(
            "files due for removal kept: under legal hold",
            1,
            Duration::from_secs(30)
        ),
        "{}",
        w.mftd.log()
    );
    assert_eq!(w.sql("SELECT count(*) FROM removals"), "0");
    assert_eq!(w.on_file_server(), 2);
    let id = w.sql("SELECT hold_id FROM holds");
    w.mftd_ok(&["hold", "remove", &id, "--reason", "case 5 closed"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.sql("SELECT count(*) FROM removals") != "1" {
        assert!(Instant::now() < deadline, "{}", w.mftd.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        w.sql("SELECT reason || ':' || removed_by FROM removals"),
        "expired:sweeper"
    );
    assert_eq!(w.on_file_server(), 0);
}

#[test]
fn the_compliance_migration_applies_on_a_database_that_holds_data_and_keeps_every_row() {
    let pg = Postgres::start();
    // The schema as the previous release left it, with its rows.
    pg.psql(
        "CREATE TABLE mftd_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    );
    let compliance = mft_storage::db::MIGRATIONS
        .iter()
        .find(|m| m.1 == "legal holds and audited removals")
        .unwrap()
        .0;
    for (version, name, sql) in mft_storage::db::MIGRATIONS
        .iter()
        .filter(|m| m.0 < compliance)
    {
        pg.psql(sql);
        pg.psql(&format!(
            "INSERT INTO mftd_schema_migrations (version, name) VALUES ({version}, '{name}')"
        ));
    }
    pg.psql(
        "INSERT INTO files (resource, storage_path, file_server, node, size, content_type, sha256, \
           uploader, to_jid, chat_type, real_filename, created) VALUES \
         ('20260101-00-im-AAAAAAAAAAAAAAAAAAAAAA', 'files/im/20260101/00/x', 'fs', 'node_1', 1, \
           'text/plain', 'ab', 'alice@example.test', 'bob@example.test', 'im', 'a.txt', now()), \
         ('20260101-00-im-BBBBBBBBBBBBBBBBBBBBBB', 'files/im/20260101/00/y', 'fs', 'node_1', 1, \
           'text/plain', 'cd', 'alice@example.test', '', 'im', 'b.txt', now()); \
         INSERT INTO removals (resource, storage_path, file_server, node, chat_type, purpose, size, \
           sha256, created, reason, removed_by) VALUES \
         ('20251201-00-im-CCCCCCCCCCCCCCCCCCCCCC', 'files/im/20251201/00/z', 'fs', 'node_1', 'im', \
           'message', 1, 'ef', now(), 'retention', 'node_1');",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mftd.toml");
    std::fs::write(
        &config,
        format!(
            "[xmpp]\ncomponent_jid = \"upload.example.test\"\nsecret = \"s\"\n[http]\nlisten = \"127.0.0.1:1\"\n\
             public_url = \"http://127.0.0.1:1/\"\ntoken_key = \"0123456789abcdef0123\"\n[node]\nname = \"node_1\"\n\
             [store]\nkind = \"local\"\npath = \"{}\"\n[database]\nurl = \"{}\"\n",
            dir.path().join("node_1").display(),
            pg.url()
        ),
    )
    .unwrap();
    let mftd = |args: &[&str]| {
        let out = Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "mftd {args:?}: {}", text(&out));
        text(&out)
    };
    assert!(
        mftd(&["db", "migrate"]).contains(&format!("applied migrations [{compliance}")),
        "the compliance migration runs on the existing schema"
    );
    // The old record is as it was, with the new columns' neutral values.
    assert_eq!(
        pg.psql("SELECT removed_by || ':' || note || ':' || before_floor FROM removals")
            .trim(),
        "node_1::false"
    );
    assert_eq!(pg.psql("SELECT count(*) FROM files").trim(), "2");
    // Holds work on the files that were there.
    let placed = mftd(&[
        "hold",
        "add",
        "--user",
        "bob@example.test",
        "--reason",
        "case 7",
        "--by",
        "anna",
    ]);
    assert!(placed.contains("covers 1 files now"), "{placed}");
    assert_eq!(
        pg.psql(
            "SELECT resource FROM files f WHERE EXISTS (SELECT 1 FROM mftd_file_holds(f.resource))"
        )
        .trim(),
        "20260101-00-im-AAAAAAAAAAAAAAAAAAAAAA"
    );
}
