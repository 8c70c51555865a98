//! The real `mftd` binary, started with a generated config pointing at a
//! test Prosody, its log captured to a file, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, wait_for_port, Guard};
use crate::prosody::Prosody;

/// Where the `mftd` binary is: `$MFTD_BIN`, or next to the test executable's
/// `deps` directory (cargo's target dir).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("MFTD_BIN") {
        return PathBuf::from(p);
    }
    // Tests run from target/<profile>/deps, binaries from target/<profile>.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    let candidates = [dir.join("mftd"), dir.parent().unwrap().join("mftd")];
    let found = candidates.iter().find(|c| c.exists());
    found
        .unwrap_or_else(|| {
            panic!(
                "{} missing: run `cargo build --bins` first",
                candidates[1].display()
            )
        })
        .clone()
}

/// A running mftd.
pub struct Mftd {
    guard: Guard,
    binary: PathBuf,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    /// HTTP port.
    pub http_port: u16,
}

/// Settings for a test mftd.
pub struct MftdOptions {
    /// Router address.
    pub router: String,
    /// Component JID.
    pub component_jid: String,
    /// Component secret.
    pub secret: String,
    /// Extra TOML for `[limits]`.
    pub limits: String,
    /// The `[store]` section's body; `None` for a local node directory.
    pub store: Option<String>,
    /// Extra sections appended verbatim (`[database]`, `[quotas]`, `[chat]`).
    pub extra: String,
    /// The HTTP port, when it must be known before mftd starts (the router
    /// module is told the public URL); a free one otherwise.
    pub http_port: Option<u16>,
}

impl MftdOptions {
    /// Options for the given Prosody.
    pub fn for_prosody(p: &Prosody) -> Self {
        MftdOptions {
            router: p.component_addr(),
            component_jid: p.component_jid.clone(),
            secret: p.secret.clone(),
            limits: "max_file_size = \"10 MiB\"\n".into(),
            store: None,
            extra: String::new(),
            http_port: None,
        }
    }
}

impl Mftd {
    /// Writes a config and starts mftd; waits for the HTTP port.
    pub fn start(opts: &MftdOptions) -> Mftd {
        Mftd::start_binary(opts, binary())
    }

    /// [`Mftd::start`] with another build of mftd (the benchmark's A/B runs).
    pub fn start_binary(opts: &MftdOptions, binary: PathBuf) -> Mftd {
        Mftd::start_with(opts, binary, Vec::new())
    }

    /// [`Mftd::start`] with a given binary and extra environment variables
    /// (`MFTD_HTTP__TLS_CERT=…` overrides, `NOTIFY_SOCKET`).
    pub fn start_with(opts: &MftdOptions, binary: PathBuf, env: Vec<(String, String)>) -> Mftd {
        let dir = tempfile::tempdir().unwrap();
        let http_port = opts.http_port.unwrap_or_else(free_port);
        // The node directory ends in the node's name (an override in `env` included).
        let node_name = env
            .iter()
            .find(|(k, _)| k == "MFTD_NODE__NAME")
            .map_or("node_1", |(_, v)| v.as_str())
            .to_owned();
        let node = dir.path().join(&node_name);
        let config = format!(
            r#"
[xmpp]
component_jid = "{jid}"
secret = "{secret}"
router = "{router}"
keepalive = "2s"

[http]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}/"
token_key = "test-token-key-0123456789abcdef"
shutdown_grace = "10s"

[node]
name = "node_1"

[store]
{store}

[limits]
{limits}
{extra}
"#,
            jid = opts.component_jid,
            secret = opts.secret,
            router = opts.router,
            store = opts
                .store
                .clone()
                .unwrap_or_else(|| format!("kind = \"local\"\npath = \"{}\"", node.display())),
            limits = opts.limits,
            extra = opts.extra,
        );
        let config_path = dir.path().join("mftd.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut m = Mftd {
            guard: Guard(None),
            binary,
            env,
            dir,
            http_port,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let serving_before = self.log().matches("HTTP: listening").count();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mftd.log"))
            .unwrap();
        let child = Command::new(&self.binary)
            .args(["run", "--config"])
            .arg(self.config_path())
            .env("RUST_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.guard = Guard(Some(child));
        // The port opens at bind; the endpoint serves once the transfer log is
        // open and start-up recovery has run, which the log line marks.
        assert!(
            wait_for_port(self.http_port, Duration::from_secs(20))
                && self.wait_for_log(
                    "HTTP: listening",
                    serving_before + 1,
                    Duration::from_secs(30)
                ),
            "mftd did not start serving; log:\n{}",
            self.log()
        );
    }

    /// Kills mftd with SIGKILL (a crash: nothing runs on the way out).
    pub fn kill9(&mut self) {
        self.guard.signal(9);
        assert!(
            self.guard.wait_exit(Duration::from_secs(10)).is_some(),
            "mftd survived SIGKILL"
        );
    }

    /// Starts mftd again with the same configuration, log and directories.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// mftd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mftd.log")).unwrap_or_default()
    }

    /// Waits until the log has `needle` at least `times` times.
    pub fn wait_for_log(&self, needle: &str, times: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().matches(needle).count() >= times {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Waits until the component is authenticated with the router.
    pub fn wait_connected(&self, times: usize) {
        assert!(
            self.wait_for_log(
                "XMPP: connected and authenticated",
                times,
                Duration::from_secs(30)
            ),
            "component did not connect; log:\n{}",
            self.log()
        );
    }

    /// The node directory (of the local store).
    pub fn node_dir(&self) -> PathBuf {
        let name = self
            .env
            .iter()
            .find(|(k, _)| k == "MFTD_NODE__NAME")
            .map_or("node_1", |(_, v)| v.as_str());
        self.dir.path().join(name)
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("mftd.toml")
    }

    /// Runs `mftd <args> --config <this node's config>` with this node's
    /// environment overrides; (success, stdout and stderr).
    pub fn command(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(&self.binary)
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        crate::process::outcome(&out)
    }

    /// The process guard (signals, exit).
    pub fn process(&mut self) -> &mut Guard {
        &mut self.guard
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Peak resident memory (VmHWM) and current (VmRSS), in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.guard.pid())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

/// The slot-token key the harness writes into every test config.
pub const TOKEN_KEY: &[u8] = b"test-token-key-0123456789abcdef";

/// A slot for `size` bytes named `name` in this hour's `chat` directory,
/// minted with [`TOKEN_KEY`] as the component would: (URL path, token).
pub fn mint_slot(size: u64, name: &str, chat: mft_storage::ChatType) -> (String, String) {
    mint_slot_with_key(TOKEN_KEY, size, name, chat)
}

/// [`mint_slot`] signed with another key (key rotation tests).
pub fn mint_slot_with_key(
    key: &[u8],
    size: u64,
    name: &str,
    chat: mft_storage::ChatType,
) -> (String, String) {
    mint_slot_full(key, size, name, chat, None)
}

/// [`mint_slot`] for a slot that declares `content_type`.
pub fn mint_slot_typed(size: u64, name: &str, content_type: &str) -> (String, String) {
    let chat = mft_storage::ChatType::Im;
    mint_slot_full(TOKEN_KEY, size, name, chat, Some(content_type))
}

/// [`mint_slot`] granted to `uploader` (a slot signed elsewhere, with no
/// quota reservation: the PUT alone decides).
pub fn mint_slot_by(uploader: &str, size: u64, name: &str) -> (String, String) {
    mint_claims(
        TOKEN_KEY,
        size,
        name,
        mft_storage::ChatType::Im,
        None,
        uploader,
    )
}

fn mint_slot_full(
    key: &[u8],
    size: u64,
    name: &str,
    chat: mft_storage::ChatType,
    content_type: Option<&str>,
) -> (String, String) {
    mint_claims(key, size, name, chat, content_type, "alice@example.test")
}

fn mint_claims(
    key: &[u8],
    size: u64,
    name: &str,
    chat: mft_storage::ChatType,
    content_type: Option<&str>,
    uploader: &str,
) -> (String, String) {
    let now = mft_common::utc::UtcTime::now();
    let loc =
        mft_storage::Location::new_random(chat, &now.compact_date(), &format!("{:02}", now.hour));
    let claims = mft_upload_http::SlotClaims {
        resource: loc.resource().to_owned(),
        filename: name.to_owned(),
        size,
        content_type: content_type.map(str::to_owned),
        uploader: uploader.into(),
        to: String::new(),
        expires: mft_common::utc::unix_now() + 3600,
        purpose: None,
        expire_before: None,
    };
    let token = mft_upload_http::SlotSigner::new(key).sign(&claims);
    let path = format!(
        "/{}/{}",
        loc.resource(),
        mft_upload_http::urls::encode_segment(name)
    );
    (path, token)
}

/// Lists every data file under `root/files` (relative paths).
pub fn stored_files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&root.join("files"), root, &mut out);
    out.sort();
    out
}

/// The data files under a node directory (descriptions left out), split
/// into published ones and temporaries (hidden `.…part` names).
pub fn published_and_temporary(node: &Path) -> (Vec<String>, Vec<String>) {
    stored_files(node)
        .into_iter()
        .filter(|f| !f.ends_with(".meta"))
        .partition(|f| !f.rsplit('/').next().unwrap_or(f).starts_with('.'))
}

/// PUTs `size` bytes on a slot minted for `name` to the node at
/// `127.0.0.1:port` (one byte pattern, written as the server reads, so a
/// refusal mid-body is seen); returns the status code (0 when no answer
/// came) and the response body.
pub fn put_minted(port: u16, name: &str, size: usize) -> (u16, String) {
    use std::io::{Read, Write};
    let (path, token) = mint_slot(size as u64, name, mft_storage::ChatType::Im);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    let _ = s.write_all(head.as_bytes());
    let chunk = vec![1u8; 256 * 1024];
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        if s.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let body = String::from_utf8_lossy(&reply)
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (crate::http::status_of(&reply), body)
}
