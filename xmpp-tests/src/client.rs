//! Runs the real XMPP client (slixmpp, `client/mft_client.py`) against a
//! test Prosody and returns its JSON answer.

use std::path::PathBuf;
use std::process::Command;

use crate::prosody::Prosody;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("client/mft_client.py")
}

/// Python with slixmpp: Debian's `python3-slixmpp` lives in /usr/bin/python3.
fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Runs the client as `jid` with `args` (a subcommand and its options).
pub fn run(prosody: &Prosody, jid: &str, password: &str, args: &[&str]) -> serde_json::Value {
    run_at(&prosody.c2s_addr(), jid, password, args)
}

/// Runs the client against any XMPP server's c2s address.
pub fn run_at(server: &str, jid: &str, password: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(python())
        .arg(script())
        .args(["--jid", jid, "--password", password, "--server", server])
        .args(args)
        .output()
        .expect("python3 with slixmpp: run scripts/install-deps.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("client printed no JSON ({e}): {stdout}"))
}

/// Starts the client in the background (a receiver that must be listening
/// while another client sends); collect its answer with [`wait`].
pub fn spawn(prosody: &Prosody, jid: &str, password: &str, args: &[&str]) -> std::process::Child {
    spawn_at(&prosody.c2s_addr(), jid, password, args)
}

/// [`spawn`] against any XMPP server's c2s address.
pub fn spawn_at(server: &str, jid: &str, password: &str, args: &[&str]) -> std::process::Child {
    Command::new(python())
        .arg(script())
        .args(["--jid", jid, "--password", password, "--server", server])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with slixmpp: run scripts/install-deps.sh")
}

/// The JSON answer of a client started with [`spawn`].
pub fn wait(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().expect("client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("client printed no JSON ({e}): {stdout}"))
}

/// Starts `who` listening on the server at `c2s` (in `room` as `nick` if
/// given) for `count` messages, fetching every URL, and returns once the
/// client is ready (it writes a file in `dir`).
pub fn listen_at(
    c2s: &str,
    dir: &std::path::Path,
    who: (&str, &str),
    room: Option<(&str, &str)>,
    count: usize,
) -> std::process::Child {
    let mut extra = vec![];
    if let Some((room, nick)) = room {
        extra.extend(["--join", room, "--nick", nick]);
    }
    listen_with(c2s, dir, who, &extra, count)
}

/// [`listen_at`] with more `receive` options (`--carbons`, `--join` …).
/// `who` may be a full JID: each resource listens as its own client.
pub fn listen_with(
    c2s: &str,
    dir: &std::path::Path,
    who: (&str, &str),
    extra: &[&str],
    count: usize,
) -> std::process::Child {
    let ready = dir.join(format!("{}.ready", who.0.replace('/', "_")));
    let _ = std::fs::remove_file(&ready);
    let count = count.to_string();
    let mut args = vec![
        "receive",
        "--fetch",
        "--count",
        &count,
        "--ready",
        ready.to_str().unwrap(),
    ];
    args.extend(extra);
    let child = spawn_at(c2s, who.0, who.1, &args);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "client never got ready: {}",
            ready.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child
}

/// The resource name in one of mftd's GET URLs (`…/<resource>/<name>?…`).
pub fn resource_of(url: &str) -> String {
    url.split('?')
        .next()
        .unwrap()
        .rsplit('/')
        .nth(1)
        .unwrap()
        .to_owned()
}
