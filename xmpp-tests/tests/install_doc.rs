//! docs/install.md, executed: its `sh` blocks run in order as root on this
//! host — the Debian package built from this tree installed with dpkg,
//! Debian's Prosody with its stock configuration, a chrooted key-only SFTP
//! account behind an sshd of its own, the system's PostgreSQL cluster with
//! an owner, a runtime and an auditor role — then the real XMPP client
//! uploads, shares and downloads a file at the page's upload marker, and the
//! page's remaining blocks (`mftd log`, the auditor's queries, an upgrade)
//! run. The sandbox's only differences (no systemd, loopback only) are in
//! `install_doc/sandbox.sh` and listed at the end of the page. Everything
//! is stopped, removed or restored afterwards, even when an assertion fails.
//! Needs root and the packages of scripts/install-deps.sh.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xmpp_tests::client;
use xmpp_tests::mftd::binary;
use xmpp_tests::process::{free_port, is_root, SystemPackageLock};

/// Where the page hands over to the test's client.
const UPLOAD_MARKER: &str = "<!-- install-test: upload -->";

/// What the page creates, and must not find on this host beforehand (the
/// test removes them afterwards).
const CREATED: &[&str] = &[
    "/etc/mftd",
    "/opt/mftFileStore",
    "/etc/ssh/mftfiles",
    "/etc/systemd/system/mftfiles-sshd.service",
    "/root/mftd-owner.url",
    "/root/mftd-audit.url",
    "/usr/local/lib/prosody/modules/mod_mftd.lua",
    "/etc/prosody/conf.d/example.test.cfg.lua",
    "/var/lib/mftd/ssh",
    "/run/sshd-mftfiles.pid",
];

/// The page's PostgreSQL database and roles.
const PG_ROLES: &[&str] = &["mftd", "mftd_owner", "mftd_audit"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A block of the page: its first line's number and its text.
type Block = (usize, String);

/// The page's `sh` blocks before and after the upload marker.
fn shell_blocks(page: &str) -> (Vec<Block>, Vec<Block>) {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let mut past_marker = false;
    let mut block: Option<(usize, String)> = None;
    for (i, line) in page.lines().enumerate() {
        match &mut block {
            Some(_) if line.trim_end() == "```" => {
                let done = block.take().unwrap();
                if past_marker {
                    after.push(done);
                } else {
                    before.push(done);
                }
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None if line.trim_end() == "```sh" => block = Some((i + 1, String::new())),
            None if line.trim() == UPLOAD_MARKER => past_marker = true,
            None => {}
        }
    }
    assert!(
        block.is_none(),
        "docs/install.md: an sh block is not closed"
    );
    (before, after)
}

fn sh(script: &str) -> (bool, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    xmpp_tests::process::outcome(&out)
}

fn exists(path: &str) -> bool {
    Path::new(path).symlink_metadata().is_ok()
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn cluster_running() -> bool {
    sh("pg_lsclusters -h | awk '$4 == \"online\" { found = 1 } END { exit !found }'").0
}

/// SQL as the postgres superuser on the system cluster.
fn psql(db: &str, sql: &str) -> (bool, String) {
    let out = Command::new("runuser")
        .args([
            "-u", "postgres", "--", "psql", "-X", "-At", "-d", db, "-c", sql,
        ])
        .current_dir("/tmp")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    xmpp_tests::process::outcome(&out)
}

/// The host as it was: what to restore and remove when the test ends.
struct Restore {
    work: PathBuf,
    /// Prosody's client and server ports in the sandbox.
    c2s_port: u16,
    s2s_port: u16,
    state: PathBuf,
    backups: PathBuf,
    had_user_mftd: bool,
    had_user_mftfiles: bool,
    had_var_lib_mftd: bool,
    had_run_prosody: bool,
    had_local_modules: bool,
    had_prosody_data: bool,
}

impl Restore {
    fn capture(work: &Path) -> Restore {
        let backups = work.join("backups");
        std::fs::create_dir_all(&backups).unwrap();
        let (ok, out) = sh(&format!(
            "tar -C / -cpf {}/prosody-etc.tar etc/prosody && \
             if [ -d /var/lib/prosody ]; then tar -C / -cpf {}/prosody-data.tar var/lib/prosody; fi",
            backups.display(),
            backups.display()
        ));
        assert!(ok, "backing up Prosody's files: {out}");
        Restore {
            work: work.to_owned(),
            c2s_port: free_port(),
            s2s_port: free_port(),
            state: work.join("state"),
            backups,
            had_user_mftd: user_exists("mftd"),
            had_user_mftfiles: user_exists("mftfiles"),
            had_var_lib_mftd: exists("/var/lib/mftd"),
            had_run_prosody: exists("/run/prosody"),
            had_local_modules: exists("/usr/local/lib/prosody/modules"),
            had_prosody_data: exists("/var/lib/prosody"),
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        let sandbox = repo().join("xmpp-tests/tests/install_doc/sandbox.sh");
        let mut report = String::new();
        let mut step = |what: &str, script: String| {
            let (ok, out) = sh(&script);
            if !ok {
                report.push_str(&format!("restore: {what} failed: {out}\n"));
            }
        };
        // Every unit the page started, but the database (still needed).
        step(
            "stopping the services the page started",
            format!(
                "export SANDBOX_STATE={state}; source {sandbox}; \
                 if [ -f $SANDBOX_STATE/units ]; then for u in $(tac $SANDBOX_STATE/units | awk '!seen[$0]++'); do sandbox_stop $u; done; fi",
                state = self.state.display(),
                sandbox = sandbox.display()
            ),
        );
        if cluster_running() {
            let _ = psql("postgres", "DROP DATABASE IF EXISTS mftd WITH (FORCE)");
            for role in PG_ROLES {
                let _ = psql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
            }
        }
        step(
            "stopping PostgreSQL",
            format!(
                "export SANDBOX_STATE={state}; source {sandbox}; sandbox_stop postgresql",
                state = self.state.display(),
                sandbox = sandbox.display()
            ),
        );
        step(
            "purging the package",
            // dpkg may be busy with another install for a while.
            "dpkg-query -W mftd >/dev/null 2>&1 || exit 0; \
             for i in $(seq 1 60); do dpkg --purge mftd >/dev/null 2>&1 && exit 0; sleep 1; done; \
             dpkg --purge mftd"
                .into(),
        );
        let mut script = String::from("set -u\n");
        for path in CREATED {
            script.push_str(&format!("rm -rf {path}\n"));
        }
        if !self.had_var_lib_mftd {
            script.push_str("rm -rf /var/lib/mftd\n");
        }
        if !self.had_user_mftd {
            script.push_str("if id mftd >/dev/null 2>&1; then userdel mftd; fi\n");
            script.push_str("if getent group mftd >/dev/null; then groupdel mftd; fi\n");
        }
        if !self.had_user_mftfiles {
            script.push_str("if id mftfiles >/dev/null 2>&1; then userdel mftfiles; fi\n");
        }
        if !self.had_run_prosody {
            script.push_str("rm -rf /run/prosody\n");
        }
        if !self.had_local_modules {
            script.push_str("rmdir /usr/local/lib/prosody/modules 2>/dev/null || true\n");
        }
        script.push_str(&format!(
            "rm -rf /etc/prosody && tar -C / -xpf {b}/prosody-etc.tar\n",
            b = self.backups.display()
        ));
        if self.had_prosody_data {
            script.push_str(&format!(
                "rm -rf /var/lib/prosody && tar -C / -xpf {b}/prosody-data.tar\n",
                b = self.backups.display()
            ));
        }
        step("removing and restoring files", script);
        if !report.is_empty() {
            eprintln!("{report}");
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Runs `blocks` as one bash script (after the sandbox) in `work`; returns
/// the output, or panics with it.
fn run_blocks(restore: &Restore, blocks: &[Block], what: &str) -> String {
    let sandbox = repo().join("xmpp-tests/tests/install_doc/sandbox.sh");
    // One stream, so each block's output follows its marker.
    let mut script = format!(
        "set -euo pipefail\nexec 2>&1\nsource {}\n",
        sandbox.display().to_string().replace(' ', "\\ ")
    );
    for (line, text) in blocks {
        script.push_str(&format!(
            "echo '>>> docs/install.md block at line {line}'\n{text}"
        ));
    }
    let path = restore.work.join(format!("{what}.sh"));
    std::fs::write(&path, &script).unwrap();
    let out = Command::new("timeout")
        .args(["600", "bash"])
        .arg(&path)
        .current_dir(&restore.work)
        .env("SANDBOX_STATE", &restore.state)
        .env("SANDBOX_C2S_PORT", restore.c2s_port.to_string())
        .env("SANDBOX_S2S_PORT", restore.s2s_port.to_string())
        .env("HOME", "/root")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        let logs = sh(&format!(
            "for f in {}/*.log; do echo \"== $f\"; tail -n 40 \"$f\"; done",
            restore.state.display()
        ))
        .1;
        panic!(
            "docs/install.md ({what}) failed ({}):\n{text}\n{logs}",
            out.status
        );
    }
    text
}

#[test]
fn the_install_page_takes_a_clean_host_to_a_first_upload() {
    assert!(is_root(), "the install page runs as root");
    let started = Instant::now();
    let page = std::fs::read_to_string(repo().join("docs/install.md")).unwrap();
    let (before, after) = shell_blocks(&page);
    assert!(
        !before.is_empty() && !after.is_empty(),
        "docs/install.md needs sh blocks on both sides of {UPLOAD_MARKER}"
    );

    // One test at a time installs the system's mftd package (packaging.rs
    // too, also from other checkouts on this host).
    let _package = SystemPackageLock::acquire();
    // A host that already has any of this is left alone.
    let found: Vec<&&str> = CREATED.iter().filter(|p| exists(p)).collect();
    assert!(
        found.is_empty(),
        "this host already has {found:?}: the test would remove them afterwards"
    );
    assert!(
        !sh("dpkg-query -W -f='${Status}' mftd 2>/dev/null | grep -q 'install ok installed'").0,
        "the mftd package is installed here; the test installs and purges it"
    );
    // The page's ports (docs/install.md's table): a server already on one
    // would answer instead of the page's.
    let (_, busy) = sh("ss -ltnpH | awk '{ n = split($4, a, \":\"); p = a[n] } \
         p ~ /^(5347|8443|8444|2222)$/ { print }'");
    assert!(
        busy.trim().is_empty(),
        "the page's ports are taken on this host:\n{busy}"
    );
    let cluster_was_running = cluster_running();
    if cluster_was_running {
        let (_, roles) = psql(
            "postgres",
            "SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname IN ('mftd', 'mftd_owner', 'mftd_audit') \
             UNION ALL SELECT datname FROM pg_database WHERE datname = 'mftd'",
        );
        assert!(
            roles.trim().is_empty(),
            "the system PostgreSQL already has {roles}: the test would drop them"
        );
    }

    let work = tempfile::tempdir().unwrap().keep();
    // The notify socket lives below: the service user must reach it.
    sh(&format!("chmod 0755 {}", work.display()));
    let restore = Restore::capture(&work);

    // The package, as scripts/build-deb.sh builds it (from the binary the
    // suite built, so no release build is needed here).
    let built = Command::new("bash")
        .arg(repo().join("scripts/build-deb.sh"))
        .env("MFTD_DEB_BINARY", binary())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&built.stdout);
    assert!(
        built.status.success(),
        "build-deb.sh: {said}{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = repo().join(said.lines().last().unwrap().trim());
    std::fs::copy(&deb, work.join(deb.file_name().unwrap())).unwrap();
    println!("package built in {:?}", started.elapsed());

    let setup = run_blocks(&restore, &before, "install");
    println!("install blocks done in {:?}", started.elapsed());

    // Section 8: a real client. Bob listens; alice uploads through the slot
    // mftd gives her, downloads it, and sends bob the link through Prosody,
    // whose mftd module gives bob a URL of his own; bob fetches it.
    let c2s = format!("127.0.0.1:{}", restore.c2s_port);
    let bundle = work.join("trusted.pem");
    let (ok, out) = sh(&format!(
        "cat /etc/prosody/certs/example.test.crt /etc/mftd/tls/fullchain.pem > {}",
        bundle.display()
    ));
    assert!(ok, "{out}");
    let bundle = bundle.display().to_string();
    let tls = [
        "--starttls",
        "--cafile",
        bundle.as_str(),
        "--resolve",
        "upload.example.test:127.0.0.1",
    ];
    let file = work.join("install-check.txt");
    std::fs::write(&file, "the first file shared through mftd\n".repeat(1000)).unwrap();
    let ready = work.join("bob.ready");
    let mut bob_args = tls.to_vec();
    let ready_arg = ready.display().to_string();
    bob_args.extend([
        "receive",
        "--count",
        "1",
        "--timeout",
        "30",
        "--fetch",
        "--ready",
        ready_arg.as_str(),
    ]);
    let bob = client::spawn_at(&c2s, "bob@example.test", "bob-password", &bob_args);
    let mut bob = bob;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() && Instant::now() < deadline && bob.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !ready.exists() {
        let _ = bob.kill();
        let out = bob.wait_with_output().unwrap();
        panic!(
            "bob's client did not come online: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let file_arg = file.display().to_string();
    let mut up_args = tls.to_vec();
    up_args.extend([
        "upload",
        "--file",
        file_arg.as_str(),
        "--content-type",
        "text/plain",
        "--destination",
        "bob@example.test",
    ]);
    let up = client::run_at(&c2s, "alice@example.test", "alice-password", &up_args);
    assert_eq!(up["service"], "upload.example.test", "{up}");
    assert_eq!(up["put_status"], 201, "{up}");
    assert_eq!(up["get_status"], 200, "{up}");
    assert_eq!(up["sha256_sent"], up["sha256_got"], "{up}");
    let get_url = up["get_url"].as_str().unwrap().to_owned();
    assert!(
        get_url.starts_with("https://upload.example.test:8443/"),
        "{get_url}"
    );
    let mut send_args = tls.to_vec();
    send_args.extend([
        "send",
        "--to",
        "bob@example.test",
        "--body",
        get_url.as_str(),
        "--oob",
        get_url.as_str(),
    ]);
    client::run_at(&c2s, "alice@example.test", "alice-password", &send_args);
    let got = client::wait(bob);
    let fetched = &got["messages"][0]["fetched"][0];
    assert_eq!(fetched["status"], 200, "{got}");
    assert_eq!(fetched["sha256"], up["sha256_sent"], "{got}");
    assert!(
        fetched["url"].as_str().unwrap().contains("for="),
        "the module gave bob a URL of his own: {got}"
    );

    let rest = run_blocks(&restore, &after, "after-upload");
    // What `mftd log` printed as the auditor: its block's output.
    let (line, _) = after
        .iter()
        .find(|(_, text)| text.contains("mftd log --database-url-file"))
        .expect("docs/install.md runs mftd log as the auditor");
    let marker = format!(">>> docs/install.md block at line {line}\n");
    let logged = rest.split(&marker).nth(1).unwrap_or_default();
    let logged = logged
        .split(">>> docs/install.md")
        .next()
        .unwrap_or_default();
    assert!(
        logged.contains("install-check.txt") && logged.contains("alice@example.test"),
        "mftd log as the auditor shows the upload:\n{rest}"
    );
    // The rows, as the database holds them: alice's upload to bob, the
    // client's anonymous check and bob's claimed download.
    let (ok, rows) = psql(
        "mftd",
        "SELECT method || ' ' || jid || ' ' || to_jid || ' ' || http_status FROM aft_log \
         WHERE filename = (SELECT filename FROM aft_log WHERE method = 'POST' AND real_filename = 'install-check.txt') \
         ORDER BY aft_index",
    );
    assert!(ok, "{rows}");
    let rows: Vec<&str> = rows.lines().collect();
    assert_eq!(
        rows,
        [
            "POST alice@example.test bob@example.test 201",
            "GET  bob@example.test 200",
            "GET bob@example.test bob@example.test 200",
        ],
        "setup output:\n{setup}\nlater:\n{rest}"
    );
    println!(
        "docs/install.md: clean host to first upload and log in {:?}",
        started.elapsed()
    );
    drop(restore);
    for path in CREATED {
        assert!(!exists(path), "{path} is still there after the test");
    }
    assert!(
        !cluster_running() || cluster_was_running,
        "PostgreSQL still runs"
    );
}
