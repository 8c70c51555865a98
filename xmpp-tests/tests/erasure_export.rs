//! Audited erasure and the e-discovery export against real parts: Prosody
//! as router and the slixmpp client for uploads, OpenSSH sshd as the file
//! server, PostgreSQL as the transfer log, and the `mftd` binary's `erase`,
//! `export`, `verify --export` and `hold` commands.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use xmpp_tests::client;
use xmpp_tests::http::status;
use xmpp_tests::mftd::{binary, stored_files, Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};
use xmpp_tests::sshd::Sshd;

const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");
const BOB: (&str, &str) = ("bob@example.test", "bob-pw");
const ROOM: &str = "room@conference.example.test";

struct World {
    prosody: Prosody,
    pg: Postgres,
    sshd: Sshd,
    mftd: Mftd,
    dir: tempfile::TempDir,
}

fn world() -> World {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = sshd.node_key(dir.path(), "node_1");
    let mut m = MftdOptions::for_prosody(&prosody);
    m.store = Some(sshd.store_toml("node_1", &key));
    m.extra = format!(
        "[database]\nurl = \"{}\"\n[chat]\ngroupchat_services = [\"conference.example.test\"]\n",
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

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl World {
    /// Uploads `content` as `name` through Prosody as `who` (to `to`, if
    /// given); the GET URL.
    fn stored(&self, who: (&str, &str), name: &str, content: &str, to: Option<&str>) -> String {
        let file = self.dir.path().join(name);
        std::fs::write(&file, content).unwrap();
        let mut args = vec!["upload", "--file", file.to_str().unwrap()];
        if let Some(to) = to {
            args.extend(["--destination", to]);
        }
        let out = client::run(&self.prosody, who.0, who.1, &args);
        assert_eq!(out["put_status"], 201, "{out}\n{}", self.mftd.log());
        out["get_url"].as_str().unwrap().to_owned()
    }

    /// `mftd <args> --config …` as an operator whose login name is `op-login`.
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

    fn sql(&self, query: &str) -> String {
        self.pg.psql(query).trim().to_owned()
    }

    /// Files (data and description) on the file server.
    fn on_file_server(&self) -> Vec<String> {
        stored_files(&self.sshd.node_root().join("node_1"))
    }

    /// Everything an erasure may touch, as one comparable string.
    fn state(&self) -> String {
        format!(
            "{}|{}|{:?}",
            self.sql(
                "SELECT (SELECT count(*) FROM aft_log) || ',' || (SELECT count(*) FROM removals) \
                 || ',' || (SELECT count(*) FROM erasures) || ',' || (SELECT count(*) FROM erasure_steps) \
                 || ',' || (SELECT count(*) FROM files WHERE deleted IS NULL)"
            ),
            self.sql("SELECT count(*) FROM holds"),
            self.on_file_server()
        )
    }
}

/// The resource of a GET URL.
fn resource(url: &str) -> String {
    url.rsplit('/').nth(1).unwrap().to_owned()
}

fn verify_export(dir: &Path) -> Output {
    Command::new(binary())
        .args(["verify", "--export"])
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn erasure_keeps_held_files_and_the_transfer_record_and_says_who_erased() {
    let w = world();
    let to_bob = w.stored(ALICE, "to-bob.txt", "for bob", Some(BOB.0));
    let to_room = w.stored(ALICE, "minutes.txt", "the minutes", Some(ROOM));
    let evidence = w.stored(ALICE, "evidence.txt", "the evidence", None);
    let from_bob = w.stored(BOB, "from-bob.txt", "from bob", Some(ALICE.0));
    assert_eq!(status(&to_bob), 200, "a download before the erasure");
    w.mftd_ok(&[
        "hold",
        "add",
        "--file",
        &evidence,
        "--reason",
        "matter 9",
        "--by",
        "legal-anna",
    ]);
    let before = w.state();
    let last_before = w.sql("SELECT max(aft_index) FROM aft_log");

    // A dry run lists what would go and what a hold keeps, and changes nothing.
    let dry = w.mftd_ok(&[
        "erase",
        "--user",
        "Alice@Example.test/phone",
        "--reason",
        "DSAR 7",
        "--dry-run",
    ]);
    assert!(dry.contains("would erase 2 files"), "{dry}");
    assert!(dry.contains(&resource(&to_bob)) && dry.contains(&resource(&to_room)));
    assert!(dry.contains("kept 1 files under legal hold"), "{dry}");
    assert!(
        dry.contains(&resource(&evidence)) && dry.contains("matter 9"),
        "{dry}"
    );
    assert_eq!(w.state(), before, "a dry run changed something");

    // The erasure: the held file survives, the rest of alice's files go.
    let out = w.mftd_ok(&[
        "erase", "--user", ALICE.0, "--reason", "DSAR 7", "--by", "dpo-jane",
    ]);
    assert!(out.contains("erased 2 files"), "{out}");
    assert!(out.contains("by dpo-jane"), "{out}");
    assert!(
        out.contains("kept 1 files under legal hold") && out.contains(&resource(&evidence)),
        "{out}"
    );
    assert_eq!(status(&evidence), 200);
    assert_eq!(
        status(&from_bob),
        200,
        "files alice received stay without --received"
    );
    let left = w.on_file_server();
    assert_eq!(left.len(), 4, "two files and their descriptions: {left:?}");
    assert!(!left.iter().any(|f| f.contains(&resource(&to_bob))));

    // Each removal names the erasure, the actor and the reason.
    assert_eq!(
        w.sql(
            "SELECT string_agg(resource || ':' || reason || ':' || removed_by || ':' || note, ',' \
             ORDER BY resource) FROM removals"
        ),
        {
            let mut v = [resource(&to_bob), resource(&to_room)];
            v.sort();
            v.iter()
                .map(|r| format!("{r}:erasure:dpo-jane:DSAR 7"))
                .collect::<Vec<_>>()
                .join(",")
        }
    );
    assert_eq!(
        w.sql("SELECT step || ':' || count(*) FROM erasure_steps GROUP BY step ORDER BY step")
            .replace('\n', " "),
        "done:2 held:1 intent:2"
    );
    // The log rows remain, every one, and say erased.
    let rows_before = before.split(',').next().unwrap();
    assert_eq!(
        w.sql(&format!(
            "SELECT count(*) FROM aft_log WHERE aft_index <= {last_before}"
        )),
        rows_before
    );
    // (The upload, the client's check after it and this test's download.)
    assert_eq!(
        w.sql(&format!(
            "SELECT string_agg(method || ':' || erased_by, ',' ORDER BY aft_index) \
             FROM aft_log_erasures WHERE filename = '{}'",
            resource(&to_bob)
        )),
        "POST:dpo-jane,GET:dpo-jane,GET:dpo-jane"
    );
    // A GET of an erased file is refused, and the attempt is a row.
    assert_eq!(status(&to_bob), 410);
    assert_eq!(
        w.sql(&format!(
            "SELECT count(*) FROM aft_log WHERE method = 'GET' AND http_status = 410 \
             AND filename = '{}'",
            resource(&to_bob)
        )),
        "1"
    );

    // With --received: the file bob sent her goes too, by the login user.
    let out = w.mftd_ok(&[
        "erase",
        "--user",
        ALICE.0,
        "--received",
        "--reason",
        "DSAR 7b",
    ]);
    assert!(out.contains("erased 1 files"), "{out}");
    assert!(out.contains("kept 1 files under legal hold"), "{out}");
    assert_eq!(status(&from_bob), 410);
    assert_eq!(
        w.sql(&format!(
            "SELECT removed_by || ':' || note FROM removals WHERE resource = '{}'",
            resource(&from_bob)
        )),
        "op-login:DSAR 7b"
    );
    // An erasure is a record nobody rewrites.
    for sql in [
        "DELETE FROM erasure_steps",
        "UPDATE erasures SET reason = 'x'",
    ] {
        let out = Command::new("psql")
            .args([&w.pg.url(), "-c", sql])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sql} was allowed");
    }
    // Without a reason, nothing happens.
    let bad = w.mftd(&["erase", "--user", BOB.0, "--reason", " "]);
    assert!(!bad.status.success(), "{}", text(&bad));
    assert!(text(&bad).contains("--reason"), "{}", text(&bad));
    // Path tricks in the JID name nobody's files.
    let trick = w.mftd(&[
        "erase",
        "--user",
        "../../etc/passwd",
        "--reason",
        "x",
        "--dry-run",
    ]);
    assert!(
        !trick.status.success() || text(&trick).contains("would erase 0 files"),
        "{}",
        text(&trick)
    );
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn an_export_reverifies_and_any_changed_byte_is_named() {
    let w = world();
    let to_bob = w.stored(ALICE, "report.txt", "quarterly report", Some(BOB.0));
    let to_room = w.stored(ALICE, "agenda.txt", "the agenda", Some(ROOM));
    let erased = w.stored(BOB, "gone.txt", "soon gone", Some(ALICE.0));
    assert_eq!(status(&to_bob), 200);
    w.mftd_ok(&[
        "erase", "--user", BOB.0, "--reason", "DSAR 3", "--by", "dpo",
    ]);

    let out_dir = w.dir.path().join("matter");
    let out = w.mftd_ok(&[
        "export",
        "--user",
        ALICE.0,
        "--out",
        out_dir.to_str().unwrap(),
        "--by",
        "reviewer",
    ]);
    assert!(out.contains("exported 2 files (1 removed"), "{out}");
    let m = manifest(&out_dir);
    assert_eq!(m["exported_by"], "reviewer");
    assert_eq!(m["scope"]["kind"], "user");
    let attachments = m["attachments"].as_array().unwrap();
    assert_eq!(attachments.len(), 3);
    for (url, content) in [(&to_bob, "quarterly report"), (&to_room, "the agenda")] {
        let a = attachments
            .iter()
            .find(|a| a["id"] == resource(url))
            .unwrap();
        assert_eq!(a["status"], "exported");
        assert_eq!(a["matches_log"], true);
        let path = out_dir.join(a["path"].as_str().unwrap());
        assert_eq!(std::fs::read_to_string(path).unwrap(), content);
    }
    // The erased file: events, no attachment, no bytes.
    let gone = attachments
        .iter()
        .find(|a| a["id"] == resource(&erased))
        .unwrap();
    assert_eq!(gone["status"], "removed");
    assert!(gone["path"].is_null());
    let events = m["events"].as_array().unwrap();
    let of = |res: &str, kind: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["resource"] == res && e["type"] == kind)
            .collect()
    };
    let removal = of(&resource(&erased), "removal");
    assert_eq!(removal.len(), 1, "{events:?}");
    assert_eq!(removal[0]["participant"], "dpo");
    assert_eq!(removal[0]["custom"]["reason"], "erasure");
    assert!(of(&resource(&erased), "upload")[0]["attachments"]
        .as_array()
        .unwrap()
        .is_empty());
    // The upload to the room links its attachment; the download is an event.
    let up = of(&resource(&to_room), "upload");
    assert_eq!(up[0]["conversation"], ROOM);
    assert_eq!(up[0]["attachments"][0]["id"], resource(&to_room));
    // The client's check after its upload and this test's download.
    assert_eq!(of(&resource(&to_bob), "download").len(), 2);
    let rooms = m["conversations"].to_string();
    assert!(rooms.contains(ROOM) && rooms.contains("channel"), "{rooms}");
    assert!(m["participants"].to_string().contains(BOB.0));
    for doc in [
        "aft_log", "shares", "removals", "erasures", "holds", "files",
    ] {
        assert!(
            out_dir.join(format!("records/{doc}.json")).exists(),
            "{doc}"
        );
    }
    // sha256sum agrees with the sidecar; mftd verify finds it intact.
    let sum = Command::new("sha256sum")
        .args(["-c", "manifest.json.sha256"])
        .current_dir(&out_dir)
        .output()
        .unwrap();
    assert!(sum.status.success(), "{}", text(&sum));
    let ok = verify_export(&out_dir);
    assert!(ok.status.success(), "{}", text(&ok));

    // One byte of an exported file changed: named, exit 1.
    let a = attachments
        .iter()
        .find(|a| a["id"] == resource(&to_bob))
        .unwrap();
    let rel = a["path"].as_str().unwrap();
    let path = out_dir.join(rel);
    let original = std::fs::read(&path).unwrap();
    let mut changed = original.clone();
    changed[0] ^= 1;
    std::fs::write(&path, &changed).unwrap();
    let bad = verify_export(&out_dir);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        text(&bad).contains(&format!("changed: {rel}")),
        "{}",
        text(&bad)
    );
    std::fs::write(&path, &original).unwrap();
    assert!(verify_export(&out_dir).status.success());

    // One byte of the manifest changed: named, exit 1.
    let mpath = out_dir.join("manifest.json");
    let original = std::fs::read(&mpath).unwrap();
    let at = original
        .windows(9)
        .position(|w| w == b"reviewer\"")
        .unwrap();
    let mut changed = original.clone();
    changed[at] = b'R';
    std::fs::write(&mpath, &changed).unwrap();
    let bad = verify_export(&out_dir);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        text(&bad).contains("changed: manifest.json"),
        "{}",
        text(&bad)
    );
    std::fs::write(&mpath, &original).unwrap();
    // A file slipped in, or a document removed: named too.
    std::fs::write(out_dir.join("attachments/extra.txt"), "x").unwrap();
    std::fs::remove_file(out_dir.join("records/shares.json")).unwrap();
    let bad = verify_export(&out_dir);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).contains("unexpected: attachments/extra.txt"),
        "{}",
        text(&bad)
    );
    assert!(
        text(&bad).contains("missing: records/shares.json"),
        "{}",
        text(&bad)
    );
    // Not an export at all: exit 4, nothing concluded.
    let none = verify_export(&w.dir.path().join("no-such-export"));
    assert_eq!(none.status.code(), Some(4), "{}", text(&none));

    // Room and single-file scopes.
    let room_dir = w.dir.path().join("room");
    w.mftd_ok(&[
        "export",
        "--room",
        ROOM,
        "--out",
        room_dir.to_str().unwrap(),
    ]);
    assert_eq!(
        manifest(&room_dir)["attachments"].as_array().unwrap().len(),
        1
    );
    assert!(verify_export(&room_dir).status.success());
    let id = w.sql(&format!(
        "SELECT aft_index FROM aft_log WHERE method = 'POST' AND filename = '{}'",
        resource(&to_bob)
    ));
    let one_dir = w.dir.path().join("one");
    w.mftd_ok(&["export", "--file", &id, "--out", one_dir.to_str().unwrap()]);
    assert_eq!(
        manifest(&one_dir)["attachments"][0]["id"],
        resource(&to_bob)
    );
    // A time range that holds no upload exports nothing but an empty manifest.
    let empty_dir = w.dir.path().join("empty");
    let out = w.mftd_ok(&[
        "export",
        "--user",
        ALICE.0,
        "--to",
        "2000-01-01T00:00:00Z",
        "--out",
        empty_dir.to_str().unwrap(),
    ]);
    assert!(out.contains("exported 0 files"), "{out}");
    assert!(verify_export(&empty_dir).status.success());
}

#[test]
fn path_tricks_in_arguments_and_in_the_store_stay_inside_the_export() {
    let w = world();
    let url = w.stored(ALICE, "plain.txt", "plain", Some(BOB.0));
    // A name chosen by the user, and rows edited by hand to point outside.
    w.sql(&format!(
        "UPDATE files SET real_filename = '../../../outside.txt' WHERE resource = '{}'",
        resource(&url)
    ));
    w.sql(
        "INSERT INTO files (resource, storage_path, file_server, node, size, content_type, sha256, \
         uploader, to_jid, chat_type, real_filename, created) VALUES \
         ('../../escape', '../../escape', 'fs', '../..', 5, '', '', 'alice@example.test', '', 'im', \
          '../x', now())",
    );

    // --out at an existing, non-empty directory: refused, nothing touched.
    let busy = w.dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    let out = w.mftd(&["export", "--user", ALICE.0, "--out", busy.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);
    // --out at a file: refused.
    let file = busy.join("keep.txt");
    let out = w.mftd(&["export", "--user", ALICE.0, "--out", file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");

    // The export goes into a directory of its own inside `parent`: nothing
    // appears beside it, whatever the rows say.
    let parent = w.dir.path().join("parent");
    std::fs::create_dir(&parent).unwrap();
    let out_dir = parent.join("export");
    let out = w.mftd_ok(&[
        "export",
        "--user",
        ALICE.0,
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.contains("1 not exported"), "{out}");
    let beside: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("export")]);
    assert!(!w.dir.path().join("outside.txt").exists());
    let m = manifest(&out_dir);
    let attachments = m["attachments"].as_array().unwrap();
    let bad = attachments
        .iter()
        .find(|a| a["id"] == "../../escape")
        .unwrap();
    assert_eq!(bad["status"], "not-exported");
    assert!(bad["path"].is_null());
    let good = attachments
        .iter()
        .find(|a| a["id"] == resource(&url))
        .unwrap();
    let path = good["path"].as_str().unwrap();
    assert!(
        path.starts_with(&format!("attachments/{}/", resource(&url)))
            && !path.split('/').any(|c| c == ".." || c == "."),
        "{path}"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join(path)).unwrap(),
        "plain"
    );
    assert!(verify_export(&out_dir).status.success());

    // A manifest edited to point outside the export is a finding, and
    // verify reads nothing there.
    let mpath = out_dir.join("manifest.json");
    let edited = std::fs::read_to_string(&mpath)
        .unwrap()
        .replace(path, "../../../../etc/passwd");
    std::fs::write(&mpath, edited).unwrap();
    let bad = verify_export(&out_dir);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad).contains("a path outside the export"),
        "{}",
        text(&bad)
    );

    // Erasing alice: the row that points outside the node directory is
    // recorded as erased without any file outside being touched.
    std::fs::write(w.sshd.node_root().join("escape"), "outside").unwrap();
    w.mftd_ok(&["erase", "--user", ALICE.0, "--reason", "DSAR 5"]);
    assert_eq!(
        std::fs::read_to_string(w.sshd.node_root().join("escape")).unwrap(),
        "outside"
    );
    assert!(w.on_file_server().is_empty(), "{:?}", w.on_file_server());
}

/// `mftd verify --export DIR`, killed (and the test failed) if it has not
/// finished within a minute: a verification that blocks is a defect.
fn verify_export_in_time(dir: &Path) -> Output {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = Command::new(binary())
        .args(["verify", "--export"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "verify --export {} did not finish within 60 s",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_domain_is_nobody_to_erase_export_or_hold() {
    let w = world();
    let url = w.stored(ALICE, "mine.txt", "mine", Some(BOB.0));
    let before = w.state();
    // A bare domain, and a domain with a resource that looks like a person
    // (it parses as the domain `example.test`): no JID of a person, so
    // each command refuses before it writes anything, instead of
    // recording an erasure or a hold that covers nobody.
    for domain in [
        "example.test",
        "Example.TEST/phone",
        "example.test/alice@example.test",
    ] {
        let erase = w.mftd(&["erase", "--user", domain, "--reason", "DSAR 11"]);
        assert!(!erase.status.success(), "{domain}: {}", text(&erase));
        assert!(
            text(&erase).contains("names the domain \"example.test\", not a user"),
            "{}",
            text(&erase)
        );
        let hold = w.mftd(&["hold", "add", "--user", domain, "--reason", "matter 2"]);
        assert!(!hold.status.success(), "{domain}: {}", text(&hold));
        let out_dir = w.dir.path().join("domain-export");
        let export = w.mftd(&[
            "export",
            "--user",
            domain,
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        assert!(!export.status.success(), "{domain}: {}", text(&export));
        assert!(!out_dir.exists());
        let room = w.mftd(&[
            "hold",
            "add",
            "--room",
            "conference.example.test",
            "--reason",
            "m",
        ]);
        assert!(!room.status.success(), "{}", text(&room));
    }
    assert_eq!(w.state(), before);
    assert_eq!(status(&url), 200);
}

#[test]
fn links_fifos_and_odd_names_in_an_export_are_findings_never_followed() {
    use std::os::unix::fs::symlink;
    let w = world();
    // A name Windows reserves for a device: renamed, so the export unpacks
    // (and re-verifies) on a reviewer's Windows machine too.
    w.stored(ALICE, "CON.txt", "console", Some(BOB.0));
    let out_dir = w.dir.path().join("matter");
    let printed = w.mftd_ok(&[
        "export",
        "--user",
        ALICE.0,
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let digest = printed
        .split("manifest SHA-256 ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let m = manifest(&out_dir);
    let rel = m["attachments"][0]["path"].as_str().unwrap().to_owned();
    assert!(rel.ends_with("/_CON.txt"), "{rel}");
    assert!(verify_export(&out_dir).status.success());
    let outside = w.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let report = |what: &str| {
        let out = verify_export_in_time(&out_dir);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        text(&out)
    };

    // The attachment replaced by a link to an identical copy outside: the
    // hashes would match, but the export no longer holds the file.
    let file = out_dir.join(&rel);
    let copy = outside.join("copy.txt");
    std::fs::rename(&file, &copy).unwrap();
    symlink(&copy, &file).unwrap();
    let r = report("a link to an identical copy");
    assert!(
        r.contains(&format!("changed: {rel} (")) && r.contains("symbolic link"),
        "{r}"
    );
    std::fs::remove_file(&file).unwrap();
    std::fs::rename(&copy, &file).unwrap();
    assert!(verify_export(&out_dir).status.success());

    // The attachments directory replaced by a link to it, moved outside.
    let att = out_dir.join("attachments");
    let moved = outside.join("attachments");
    std::fs::rename(&att, &moved).unwrap();
    symlink(&moved, &att).unwrap();
    let r = report("a linked directory");
    assert!(r.contains(&format!("changed: {rel} (")), "{r}");
    assert!(
        r.contains("unexpected: attachments (not in the manifest; a symbolic link)"),
        "{r}"
    );
    std::fs::remove_file(&att).unwrap();
    std::fs::rename(&moved, &att).unwrap();

    // A document replaced by a link to /etc/passwd: named, never read
    // (the report carries no digest of it).
    let files_json = out_dir.join("records/files.json");
    let kept = outside.join("files.json");
    std::fs::rename(&files_json, &kept).unwrap();
    symlink("/etc/passwd", &files_json).unwrap();
    let r = report("a link to /etc/passwd");
    assert!(
        r.contains("changed: records/files.json (") && r.contains("symbolic link"),
        "{r}"
    );
    assert!(!r.contains("records/files.json (SHA-256"), "{r}");
    std::fs::remove_file(&files_json).unwrap();

    // A FIFO in its place: a finding, not a verification that blocks.
    assert!(Command::new("mkfifo")
        .arg(&files_json)
        .status()
        .unwrap()
        .success());
    let r = report("a FIFO");
    assert!(
        r.contains("changed: records/files.json (not a regular file)"),
        "{r}"
    );
    std::fs::remove_file(&files_json).unwrap();
    std::fs::rename(&kept, &files_json).unwrap();

    // The manifest itself a link to an identical copy outside.
    let mpath = out_dir.join("manifest.json");
    let mcopy = outside.join("manifest.json");
    std::fs::rename(&mpath, &mcopy).unwrap();
    symlink(&mcopy, &mpath).unwrap();
    let r = report("a linked manifest");
    assert!(
        r.contains("changed: manifest.json (") && r.contains("symbolic link"),
        "{r}"
    );
    std::fs::remove_file(&mpath).unwrap();
    std::fs::rename(&mcopy, &mpath).unwrap();
    assert!(verify_export(&out_dir).status.success());

    // The manifest rewritten together with its sidecar (exported_by
    // changed, the sidecar recomputed): only the digest printed at export
    // time, kept elsewhere, tells; with it verify names the manifest.
    let mpath = out_dir.join("manifest.json");
    let original = std::fs::read(&mpath).unwrap();
    let rewritten = String::from_utf8(original.clone()).unwrap().replace(
        "\"exported_by\": \"op-login\"",
        "\"exported_by\": \"someone-else\"",
    );
    assert_ne!(rewritten.as_bytes(), &original[..]);
    std::fs::write(&mpath, &rewritten).unwrap();
    let sum = Command::new("sha256sum")
        .arg("manifest.json")
        .current_dir(&out_dir)
        .output()
        .unwrap();
    std::fs::write(out_dir.join("manifest.json.sha256"), &sum.stdout).unwrap();
    assert!(verify_export(&out_dir).status.success());
    let pinned = |dir: &Path| {
        Command::new(binary())
            .args(["verify", "--manifest-sha256", &digest, "--export"])
            .arg(dir)
            .output()
            .unwrap()
    };
    let bad = pinned(&out_dir);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        text(&bad).contains(&format!("the SHA-256 given is {digest}")),
        "{}",
        text(&bad)
    );
    std::fs::write(&mpath, &original).unwrap();
    std::fs::write(
        out_dir.join("manifest.json.sha256"),
        format!("{digest}  manifest.json\n"),
    )
    .unwrap();
    let ok = pinned(&out_dir);
    assert!(ok.status.success(), "{}", text(&ok));

    // A file whose name holds a newline cannot forge a report line.
    std::fs::write(out_dir.join("records/x\nintact"), "x").unwrap();
    let r = report("a name with a newline");
    assert!(
        r.contains("unexpected: \"records/x\\nintact\" (not in the manifest)"),
        "{r}"
    );
    assert!(!r.lines().any(|l| l.starts_with("intact")), "{r}");
}

#[test]
fn an_upload_in_flight_during_an_erasure_is_announced_and_the_next_run_takes_it() {
    use std::io::{Read, Write};
    let w = world();
    w.stored(ALICE, "before.txt", "before", Some(BOB.0));
    // Half of alice's upload is on its way when the erasure runs.
    let body = vec![b'x'; 200_000];
    let (path, token) =
        xmpp_tests::mftd::mint_slot_by("alice@example.test/pc", body.len() as u64, "inflight.bin");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", w.mftd.http_port)).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..100_000]).unwrap();
    let live_of_alice = || {
        w.sql(
            "SELECT coalesce(string_agg(real_filename, ','), '') FROM files WHERE deleted IS NULL \
             AND split_part(uploader, '/', 1) = 'alice@example.test'",
        )
    };
    // The claim is made before the first byte is stored.
    for _ in 0..100 {
        if w.sql("SELECT count(*) FROM used_slots") == "1" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = w.mftd_ok(&["erase", "--user", ALICE.0, "--reason", "DSAR 12"]);
    assert!(out.contains("erased 1 files"), "{out}");
    assert!(
        out.contains("warning: 1 uploads (by anyone) were in progress when the erasure ended"),
        "{out}"
    );
    s.write_all(&body[100_000..]).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert_eq!(xmpp_tests::http::status_of(&reply), 201);
    // It landed after the erasure: the warning was right, and the run the
    // warning asks for takes it.
    assert_eq!(live_of_alice(), "inflight.bin");
    let again = w.mftd_ok(&["erase", "--user", ALICE.0, "--reason", "DSAR 12"]);
    assert!(again.contains("erased 1 files"), "{again}");
    assert!(!again.contains("in progress"), "{again}");
    assert_eq!(live_of_alice(), "");
}
