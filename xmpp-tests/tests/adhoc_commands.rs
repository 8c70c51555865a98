//! Users manage their own files over XMPP, administrators manage holds —
//! XEP-0050 ad-hoc commands on the component, run by a real client
//! (slixmpp's xep_0050, through the harness client's `adhoc` action)
//! through a real Prosody, against a real PostgreSQL; holds checked with
//! the `mftd hold` command itself.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::{json, Value};
use xmpp_tests::client;
use xmpp_tests::http::status;
use xmpp_tests::mftd::{binary, stored_files, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};

const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");
const BOB: (&str, &str) = ("bob@example.test", "bob-pw");
const CAROL: (&str, &str) = ("carol@example.test", "carol-pw");
const MALLORY: (&str, &str) = ("mallory@other.test", "mallory-pw");

struct World {
    prosody: Prosody,
    pg: Postgres,
    mftd: Mftd,
    dir: tempfile::TempDir,
}

fn world() -> World {
    let mut opts = ProsodyOptions::default();
    opts.users.push((CAROL.0.into(), CAROL.1.into()));
    let prosody = Prosody::start(opts);
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut m = MftdOptions::for_prosody(&prosody);
    m.extra = format!(
        "[database]\nurl = \"{}\"\n[retention]\nminimum = \"1d\"\nim = \"30d\"\n\
         [adhoc]\nadmins = [\"carol@example.test\"]\nsession_timeout = \"2m\"\n",
        pg.url()
    );
    let mftd = Mftd::start(&m);
    mftd.wait_connected(1);
    World {
        prosody,
        pg,
        mftd,
        dir,
    }
}

impl World {
    /// Uploads `content` as `name` as `who`; the GET URL.
    fn upload(&self, who: (&str, &str), name: &str, content: &str) -> String {
        let file = self.dir.path().join(name);
        std::fs::write(&file, content).unwrap();
        let out = client::run(
            &self.prosody,
            who.0,
            who.1,
            &["upload", "--file", file.to_str().unwrap()],
        );
        assert_eq!(out["put_status"], 201, "{out}\n{}", self.mftd.log());
        out["get_url"].as_str().unwrap().to_owned()
    }

    /// Runs ad-hoc command `steps` as `who` in one client session; the
    /// answer to each step.
    fn adhoc(&self, who: (&str, &str), steps: Value) -> Vec<Value> {
        let steps = steps.to_string();
        let out = client::run(
            &self.prosody,
            who.0,
            who.1,
            &[
                "adhoc",
                "--to",
                &self.prosody.component_jid,
                "--steps",
                &steps,
            ],
        );
        out["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("no steps: {out}"))
            .clone()
    }

    fn sql(&self, query: &str) -> String {
        self.pg.psql(query).trim().to_owned()
    }

    fn mftd_cli(&self, args: &[&str]) -> String {
        let out = Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(self.mftd.config_path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "mftd {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `mftd <args> --json`: one JSON object a line.
    fn mftd_json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = args.to_vec();
        all.push("--json");
        self.mftd_cli(&all)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    fn on_store(&self, resource: &str) -> bool {
        stored_files(&self.mftd.node_dir())
            .iter()
            .any(|p| p.ends_with(resource))
    }

    /// What the database holds that a command could change: live files,
    /// removals, deletion steps, holds and hold events.
    fn state(&self) -> String {
        self.sql(
            "SELECT (SELECT count(*) FROM files WHERE deleted IS NULL) || '/' || \
             (SELECT count(*) FROM removals) || '/' || (SELECT count(*) FROM user_deletions) \
             || '/' || (SELECT count(*) FROM holds) || '/' || (SELECT count(*) FROM hold_events)",
        )
    }
}

fn resource(url: &str) -> String {
    client::resource_of(url)
}

/// The one note of a completed step.
fn note(step: &Value) -> (String, String) {
    let n = &step["notes"][0];
    (
        n["type"].as_str().unwrap_or("").to_owned(),
        n["text"].as_str().unwrap_or("").to_owned(),
    )
}

fn conditions(step: &Value) -> String {
    assert_eq!(step["type"], "error", "{step}");
    step["conditions"].to_string()
}

fn option_values(step: &Value, var: &str) -> Vec<String> {
    step["form"]["fields"][var]["options"]
        .as_array()
        .unwrap_or_else(|| panic!("no options for {var}: {step}"))
        .iter()
        .map(|o| o["value"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn users_list_and_delete_only_their_own_uploads_and_policy_refuses_with_the_reason() {
    let w = world();
    let old = w.upload(ALICE, "old.txt", "alpha");
    let held = w.upload(ALICE, "held.txt", "held bytes");
    let fresh = w.upload(ALICE, "fresh.txt", "fresh");
    let bobs = w.upload(BOB, "bobs.txt", "bob's bytes");
    let (old_r, held_r, fresh_r, bobs_r) = (
        resource(&old),
        resource(&held),
        resource(&fresh),
        resource(&bobs),
    );
    // Past the floor (1 day) except fresh.txt.
    w.sql(&format!(
        "UPDATE files SET created = created - interval '2 days' \
         WHERE resource IN ('{old_r}', '{held_r}', '{bobs_r}')"
    ));
    w.mftd_cli(&[
        "hold",
        "add",
        "--file",
        &held_r,
        "--reason",
        "matter 11",
        "--by",
        "legal",
    ]);

    // Discovery: the feature, and the users' commands only.
    let listed = w.adhoc(ALICE, json!([{"list": true}]));
    let mut nodes: Vec<&str> = listed[0]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["node"].as_str().unwrap())
        .collect();
    nodes.sort_unstable(); // slixmpp keeps items in a set
    assert_eq!(nodes, ["delete-upload", "list-uploads"], "{}", listed[0]);
    assert!(
        listed[0]["features"]
            .to_string()
            .contains("http://jabber.org/protocol/commands"),
        "{}",
        listed[0]
    );

    // Alice's list: her three files, newest first, the held one marked.
    let list = w.adhoc(ALICE, json!([{"node": "list-uploads"}]));
    assert_eq!(list[0]["status"], "completed", "{}", list[0]);
    let items = list[0]["form"]["items"].as_array().unwrap().clone();
    let names: Vec<&str> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{}", list[0]);
    assert!(!names.contains(&"bobs.txt"), "{names:?}");
    let held_item = items.iter().find(|i| i["name"] == "held.txt").unwrap();
    assert_eq!(held_item["status"], "held", "{held_item}");
    assert!(held_item["size"].as_str().unwrap().contains("10 bytes"));
    assert_eq!(note(&list[0]).0, "info");
    // The same list as text, for clients that show notes or fixed fields
    // but no tables: in the first note (after the count) and in the form.
    let text = list[0]["notes"][0]["text"].as_str().unwrap_or("");
    assert_eq!(text.lines().count(), 4, "{}", list[0]);
    assert!(list[0]["raw"]
        .as_str()
        .unwrap()
        .contains("held.txt — 10 bytes"));
    assert!(
        list[0]["raw"].as_str().unwrap().contains("var=\"file-3\""),
        "{}",
        list[0]
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("held.txt — 10 bytes") && l.ends_with("held")),
        "{text}"
    );
    assert!(!text.contains("bobs.txt"), "{text}");

    // Bob sees only his; his delete form offers only his; a delete naming
    // Alice's file is refused and changes nothing.
    let before = w.state();
    let bob = w.adhoc(
        BOB,
        json!([
            {"node": "list-uploads"},
            {"node": "delete-upload"},
            {"node": "delete-upload", "action": "complete", "fields": {"resource": old_r}},
        ]),
    );
    let bob_names: Vec<&str> = bob[0]["form"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(bob_names, ["bobs.txt"]);
    assert_eq!(bob[1]["status"], "executing", "{}", bob[1]);
    assert_eq!(
        option_values(&bob[1], "resource"),
        std::slice::from_ref(&bobs_r)
    );
    assert!(conditions(&bob[2]).contains("item-not-found"), "{}", bob[2]);
    assert_eq!(w.state(), before);
    assert!(w.on_store(&old_r));
    assert_eq!(status(&old), 200);

    // Alice deletes old.txt.
    let del = w.adhoc(
        ALICE,
        json!([
            {"node": "delete-upload"},
            {"node": "delete-upload", "action": "complete", "fields": {"resource": old_r}},
        ]),
    );
    assert_eq!(del[0]["execute"], "complete", "{}", del[0]);
    let offered = option_values(&del[0], "resource");
    assert!(
        offered.contains(&old_r) && !offered.contains(&bobs_r),
        "{offered:?}"
    );
    assert_eq!(del[1]["status"], "completed", "{}", del[1]);
    let (kind, text) = note(&del[1]);
    assert_eq!(kind, "info", "{text}");
    assert!(text.contains("Deleted old.txt"), "{text}");
    // Gone from the store, recorded as the user's deletion, 410 and logged.
    assert!(
        !w.on_store(&old_r),
        "{:?}",
        stored_files(&w.mftd.node_dir())
    );
    assert_eq!(
        w.sql(&format!(
            "SELECT reason || ' ' || removed_by || ' ' || before_floor FROM removals WHERE resource = '{old_r}'"
        )),
        "user-deletion alice@example.test false"
    );
    let steps = w.sql(&format!(
        "SELECT string_agg(step || ' ' || split_part(requested_by, '/', 1), ',' ORDER BY step_id) \
         FROM user_deletions WHERE resource = '{old_r}'"
    ));
    assert_eq!(steps, "intent alice@example.test,done alice@example.test");
    // The auditor's tool shows the deletion: who, why, whose file.
    let removed: Vec<Value> = w
        .mftd_cli(&["log", "--removals", "--jid", ALICE.0, "--format", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0]["reason"], "user-deletion", "{}", removed[0]);
    assert_eq!(removed[0]["removed_by"], ALICE.0, "{}", removed[0]);
    assert_eq!(removed[0]["filename"], old_r.as_str(), "{}", removed[0]);
    assert_eq!(removed[0]["real_filename"], "old.txt", "{}", removed[0]);
    let bobs_view = w.mftd_cli(&["log", "--removals", "--jid", BOB.0]);
    assert!(
        !bobs_view.contains(&old_r) && bobs_view.contains("(0 rows)"),
        "{bobs_view}"
    );
    assert_eq!(
        w.sql(&format!(
            "SELECT deleted IS NOT NULL FROM files WHERE resource = '{old_r}'"
        )),
        "t"
    );
    assert_eq!(status(&old), 410);
    assert_eq!(
        w.pg.psql_eventually(
            &format!(
                "SELECT count(*) FROM aft_log WHERE method = 'GET' AND filename = '{old_r}' AND http_status = 410"
            ),
            "1"
        ),
        "1"
    );

    // A held file and a file inside the floor: refused, with the reason.
    let before = w.state();
    let refused = w.adhoc(
        ALICE,
        json!([
            {"node": "delete-upload"},
            {"node": "delete-upload", "action": "complete", "fields": {"resource": held_r}},
            {"node": "delete-upload"},
            {"node": "delete-upload", "action": "complete", "fields": {"resource": fresh_r}},
        ]),
    );
    let (kind, text) = note(&refused[1]);
    assert_eq!(
        (kind.as_str(), refused[1]["status"].as_str()),
        ("error", Some("completed")),
        "{}",
        refused[1]
    );
    assert!(text.contains("legal hold"), "{text}");
    assert!(
        !text.contains("matter 11"),
        "a hold's reason is not told to its subject: {text}"
    );
    let (kind, text) = note(&refused[3]);
    assert_eq!(kind, "error", "{}", refused[3]);
    assert!(
        text.contains("retention policy") && text.contains("at least 1 day"),
        "{text}"
    );
    assert_eq!(w.state(), before);
    assert!(w.on_store(&held_r) && w.on_store(&fresh_r));
    assert_eq!((status(&held), status(&fresh)), (200, 200));
}

#[test]
fn administrators_manage_holds_and_read_usage_and_nobody_else_can() {
    let w = world();
    let url = w.upload(BOB, "report.pdf", "quarterly");
    // A non-admin: not listed, and forbidden when executed directly.
    let alice = w.adhoc(
        ALICE,
        json!([{"list": true}, {"node": "admin-holds"}, {"node": "admin-usage"}]),
    );
    assert!(
        !alice[0]["commands"].to_string().contains("admin-"),
        "{}",
        alice[0]
    );
    assert!(conditions(&alice[1]).contains("forbidden"), "{}", alice[1]);
    assert!(conditions(&alice[2]).contains("forbidden"), "{}", alice[2]);
    // A user of a domain the service does not serve: nothing at all.
    let mallory = w.adhoc(MALLORY, json!([{"list": true}, {"node": "list-uploads"}]));
    assert_eq!(mallory[0]["commands"], json!([]), "{}", mallory[0]);
    assert!(
        conditions(&mallory[1]).contains("forbidden"),
        "{}",
        mallory[1]
    );

    // Carol places a hold on Bob over ad-hoc commands.
    let carol = w.adhoc(
        CAROL,
        json!([
            {"list": true},
            {"node": "admin-holds"},
            {"node": "admin-holds", "action": "next", "fields": {"action": "add"}},
            {"node": "admin-holds", "action": "complete",
             "fields": {"kind": "user", "subject": "Bob@Example.test", "reason": "matter 7"}},
        ]),
    );
    assert!(
        carol[0]["commands"].to_string().contains("admin-holds"),
        "{}",
        carol[0]
    );
    assert_eq!(
        carol[1]["actions"],
        json!(["next", "complete"]),
        "{}",
        carol[1]
    );
    assert_eq!(carol[2]["status"], "executing", "{}", carol[2]);
    assert!(
        carol[2]["actions"].to_string().contains("prev"),
        "{}",
        carol[2]
    );
    let (kind, text) = note(&carol[3]);
    assert_eq!(kind, "info", "{}", carol[3]);
    assert!(
        text.contains("user bob@example.test") && text.contains("covers 1 stored file"),
        "{text}"
    );
    // Recorded exactly as `mftd hold` records it, Carol as the actor.
    let holds = w.mftd_json(&["hold", "list"]);
    let hold = &holds[0];
    assert_eq!(
        (
            &hold["kind"],
            &hold["subject"],
            &hold["reason"],
            &hold["placed_by"]
        ),
        (
            &json!("user"),
            &json!("bob@example.test"),
            &json!("matter 7"),
            &json!("carol@example.test")
        ),
        "{holds:?}"
    );
    let id = hold["id"].as_i64().unwrap();
    assert!(w
        .mftd_cli(&["hold", "check", &resource(&url)])
        .contains("matter 7"));

    // A bad subject: the form again, with the reason; nothing placed.
    let bad = w.adhoc(
        CAROL,
        json!([
            {"node": "admin-holds"},
            {"node": "admin-holds", "action": "next", "fields": {"action": "add"}},
            {"node": "admin-holds", "action": "complete",
             "fields": {"kind": "sha256", "subject": "abc", "reason": "x"}},
            {"node": "admin-holds", "action": "prev"},
            {"node": "admin-holds", "action": "cancel"},
        ]),
    );
    assert_eq!(bad[2]["status"], "executing", "{}", bad[2]);
    assert_eq!(note(&bad[2]).0, "error");
    assert!(note(&bad[2]).1.contains("not a SHA-256"), "{}", bad[2]);
    assert_eq!(
        bad[3]["form"]["fields"]["action"]["type"], "list-single",
        "{}",
        bad[3]
    );
    assert_eq!(bad[4]["status"], "canceled", "{}", bad[4]);
    assert_eq!(w.sql("SELECT count(*) FROM holds"), "1");

    // Usage of Bob, then the list, then lifting the hold.
    let more = w.adhoc(
        CAROL,
        json!([
            {"node": "admin-usage"},
            {"node": "admin-usage", "action": "complete", "fields": {"jid": "bob@example.test"}},
            {"node": "admin-holds"},
            {"node": "admin-holds", "action": "complete", "fields": {"action": "list"}},
            {"node": "admin-holds"},
            {"node": "admin-holds", "action": "next", "fields": {"action": "remove"}},
            {"node": "admin-holds", "action": "complete",
             "fields": {"hold": id.to_string(), "reason": "matter closed"}},
        ]),
    );
    let usage = &more[1]["form"]["fields"];
    assert_eq!(usage["files"]["values"], json!(["1"]), "{}", more[1]);
    assert_eq!(usage["held"]["values"], json!(["1"]), "{}", more[1]);
    assert_eq!(usage["day-files"]["values"], json!(["1"]), "{}", more[1]);
    assert_eq!(usage["bytes"]["values"], json!(["9 bytes"]), "{}", more[1]);
    let table = &more[3]["form"]["items"];
    assert_eq!(table[0]["subject"], "bob@example.test", "{}", more[3]);
    assert_eq!(table[0]["placed_by"], "carol@example.test", "{}", more[3]);
    // The table as text for clients without result tables: the first note
    // and a fixed field.
    let (_, listed) = note(&more[3]);
    assert!(
        listed.starts_with("1 holds in force.\n")
            && listed.contains("Subject: bob@example.test, Reason: matter 7"),
        "{listed}"
    );
    assert_eq!(
        more[3]["form"]["fields"]["hold-1"]["values"][0]
            .as_str()
            .unwrap_or_default(),
        listed.lines().nth(1).unwrap_or_default(),
        "{}",
        more[3]
    );
    assert_eq!(option_values(&more[5], "hold"), [id.to_string()]);
    assert!(note(&more[6]).1.contains("lifted"), "{}", more[6]);
    let events = w.mftd_json(&["hold", "history"]);
    let last = events.last().unwrap().clone();
    assert_eq!(
        (&last["action"], &last["actor"], &last["reason"]),
        (
            &json!("remove"),
            &json!("carol@example.test"),
            &json!("matter closed")
        ),
        "{events:?}"
    );
    assert!(w.mftd_json(&["hold", "list"]).is_empty());
}

#[test]
fn malformed_and_foreign_command_payloads_get_xep_errors_and_change_nothing() {
    let w = world();
    let alices = w.upload(ALICE, "mine.txt", "mine");
    let bobs = w.upload(BOB, "his.txt", "his");
    w.sql("UPDATE files SET created = created - interval '2 days'");
    let (alice_r, bob_r) = (resource(&alices), resource(&bobs));
    let before = w.state();

    let huge = "x".repeat(20_000);
    let submit = |fields: &str| format!("<x xmlns='jabber:x:data' type='submit'>{fields}</x>");
    let steps = w.adhoc(
        ALICE,
        json!([
            {"node": "no-such-command"},
            {"node": "list-uploads", "action": "explode"},
            {"node": "delete-upload", "action": "complete", "fields": {"resource": alice_r}},
            // A session: no form, wrong types, huge and odd values.
            {"node": "delete-upload"},
            {"node": "delete-upload", "action": "complete"},
            {"node": "delete-upload", "action": "complete", "raw": submit(&format!(
                "<field var='resource'><value>{alice_r}</value><value>{bob_r}</value></field>"))},
            {"node": "delete-upload", "action": "complete",
             "raw": "<x xmlns='jabber:x:data' type='form'/>"},
            {"node": "delete-upload", "action": "complete", "fields": {"resource": huge}},
            {"node": "delete-upload", "action": "complete", "fields": {"resource": "../../etc/passwd"}},
            {"node": "delete-upload", "action": "complete", "raw": submit(&format!(
                "<field var='resource'><value>{alice_r}</value></field><field var='resource'/>"))},
            {"node": "delete-upload", "action": "prev", "fields": {"resource": alice_r}},
            {"node": "list-uploads", "action": "complete", "fields": {"resource": alice_r}},
            {"node": "delete-upload", "action": "cancel"},
            // Replayed after cancel.
            {"node": "delete-upload", "action": "complete", "fields": {"resource": alice_r}},
            {"node": "delete-upload", "action": "complete", "sessionid": "0123456789abcdef",
             "fields": {"resource": alice_r}},
        ]),
    );
    assert!(
        conditions(&steps[0]).contains("item-not-found"),
        "{}",
        steps[0]
    );
    let c = conditions(&steps[1]);
    assert!(
        c.contains("bad-request") && c.contains("malformed-action"),
        "{c}"
    );
    assert!(
        conditions(&steps[2]).contains("bad-sessionid"),
        "{}",
        steps[2]
    );
    assert_eq!(steps[3]["status"], "executing", "{}", steps[3]);
    // Errors name the command and session they answer, so a client can
    // show them in the command's window (nothing else is echoed).
    assert_eq!(
        steps[4]["command"],
        json!({"node": "delete-upload", "sessionid": steps[3]["sessionid"]}),
        "{}",
        steps[4]
    );
    for (i, step) in steps.iter().enumerate().take(10).skip(4) {
        let c = conditions(step);
        assert!(
            c.contains("bad-request") && c.contains("bad-payload"),
            "step {i}: {step}"
        );
        assert!(
            step["raw"].as_str().unwrap().len() < 4096,
            "step {i}: no echo of the payload"
        );
    }
    assert!(
        conditions(&steps[10]).contains("bad-action"),
        "{}",
        steps[10]
    );
    // Another node's name on this session: not this session.
    assert!(
        conditions(&steps[11]).contains("bad-sessionid"),
        "{}",
        steps[11]
    );
    assert_eq!(steps[12]["status"], "canceled", "{}", steps[12]);
    assert!(
        conditions(&steps[13]).contains("bad-sessionid"),
        "{}",
        steps[13]
    );
    assert!(
        conditions(&steps[14]).contains("bad-sessionid"),
        "{}",
        steps[14]
    );

    // Raw commands no client would send: no node, markup and size in the
    // attributes, an unknown element inside.
    let raw = |payload: &str| {
        client::run(
            &w.prosody,
            ALICE.0,
            ALICE.1,
            &[
                "iq",
                "--to",
                &w.prosody.component_jid,
                "--type",
                "set",
                payload,
            ],
        )["reply"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let no_node = raw("<command xmlns='http://jabber.org/protocol/commands'/>");
    assert!(no_node.contains("item-not-found"), "{no_node}");
    let odd = raw(&format!(
        "<command xmlns='http://jabber.org/protocol/commands' xmlns:p='urn:p' p:x='1'          node='delete-upload' action='complete' sessionid='&lt;{}&gt;'><evil xmlns='urn:e'/></command>",
        "s".repeat(5000)
    ));
    assert!(odd.contains("bad-sessionid") && odd.len() < 4096, "{odd}");

    // A replay after a completed deletion, and Bob's open session used by
    // Alice: neither is a way in.
    let bob = w.adhoc(BOB, json!([{"node": "delete-upload"}]));
    let bob_session = bob[0]["sessionid"].as_str().unwrap().to_owned();
    let foreign = w.adhoc(
        ALICE,
        json!([{"node": "delete-upload", "action": "complete", "sessionid": bob_session,
                "fields": {"resource": bob_r}}]),
    );
    assert!(
        conditions(&foreign[0]).contains("bad-sessionid"),
        "{}",
        foreign[0]
    );
    assert_eq!(w.state(), before, "nothing changed");
    assert!(w.on_store(&alice_r) && w.on_store(&bob_r));

    // Submitted the way poezio submits: `next` where the step offers only
    // `complete`, and the step's note sent back as a field without a name.
    let replay = w.adhoc(
        ALICE,
        json!([
            {"node": "delete-upload"},
            {"node": "delete-upload", "action": "next", "raw": submit(&format!(
                "<field var='resource'><value>{alice_r}</value></field>\
                 <field type='fixed'><value>Choose a file.</value></field><field/>"))},
            {"node": "delete-upload", "action": "complete", "fields": {"resource": alice_r}},
        ]),
    );
    assert_eq!(replay[1]["status"], "completed", "{}", replay[1]);
    assert_eq!(note(&replay[1]).0, "info", "{}", replay[1]);
    assert!(
        conditions(&replay[2]).contains("bad-sessionid"),
        "{}",
        replay[2]
    );
    assert_eq!(
        w.sql("SELECT count(*) FROM removals WHERE reason = 'user-deletion'"),
        "1"
    );
    // Still serving: a list answers, and the process never panicked.
    let list = w.adhoc(ALICE, json!([{"node": "list-uploads"}]));
    assert_eq!(
        note(&list[0]).1,
        "You have no uploads stored.",
        "{}",
        list[0]
    );
    assert!(!w.mftd.log().contains("panicked"), "{}", w.mftd.log());
}

/// A deletion a crash interrupted — its intent committed, the file still
/// there (killed before the store's delete) or already gone (killed before
/// the record) — is finished when mftd starts again: the file is removed
/// and its removal names the user, exactly once.
#[test]
fn a_users_deletion_interrupted_by_a_crash_is_finished_at_the_next_start() {
    let mut w = world();
    let kept = w.upload(ALICE, "kept-bytes.txt", "still on disk");
    let lost = w.upload(ALICE, "lost-bytes.txt", "already deleted");
    let (kept_r, lost_r) = (resource(&kept), resource(&lost));
    w.mftd.kill9();
    // The states a kill between the steps leaves: intents, one file's
    // bytes already gone from the store.
    for r in [&kept_r, &lost_r] {
        w.sql(&format!(
            "INSERT INTO user_deletions (resource, requested_by, step) \
             VALUES ('{r}', 'alice@example.test/phone', 'intent')"
        ));
    }
    let node = w.mftd.node_dir();
    for p in stored_files(&node) {
        if p.contains(&lost_r) {
            std::fs::remove_file(node.join(p)).unwrap();
        }
    }
    w.mftd.restart();
    w.mftd.wait_connected(2);
    assert!(
        w.mftd
            .log()
            .contains("finished users' deletions a crash interrupted"),
        "{}",
        w.mftd.log()
    );
    assert!(!w.on_store(&kept_r) && !w.on_store(&lost_r));
    assert_eq!(
        w.sql(
            "SELECT string_agg(reason || ' ' || removed_by, ',') FROM removals \
             GROUP BY reason"
        ),
        "user-deletion alice@example.test,user-deletion alice@example.test"
    );
    assert_eq!(
        w.sql("SELECT count(*) FROM user_deletions WHERE step = 'done'"),
        "2"
    );
    assert_eq!((status(&kept), status(&lost)), (410, 410));
}
