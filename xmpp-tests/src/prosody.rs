//! A real Prosody (Debian package) on loopback with a generated config: one
//! or more virtual hosts, our component registered with a generated secret,
//! and users registered through `prosodyctl`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{as_user, chown_to, free_port, wait_for_port, Guard};

/// A running Prosody.
pub struct Prosody {
    guard: Guard,
    dir: tempfile::TempDir,
    /// The main virtual host, e.g. `example.test`.
    pub domain: String,
    /// The component's JID, e.g. `upload.example.test`.
    pub component_jid: String,
    /// The component secret.
    pub secret: String,
    /// Client port.
    pub c2s_port: u16,
    /// Component port.
    pub component_port: u16,
}

/// What to start.
pub struct ProsodyOptions {
    /// Virtual hosts; the first is the main domain.
    pub hosts: Vec<String>,
    /// Users as (localpart@host, password).
    pub users: Vec<(String, String)>,
    /// Bytes Prosody reads per socket wake-up (its default is 4096).
    pub read_size: u32,
    /// Also serve Prosody's own mod_http_file_share (as `share.<domain>`)
    /// on this HTTP port, for side-by-side benchmarks.
    pub file_share_port: Option<u16>,
    /// Load mftd's router module (`router/prosody/mod_mftd.lua`) on every
    /// VirtualHost: (mftd's public URL, the shared key).
    pub mftd_module: Option<(String, String)>,
    /// Serve group chat: `conference.<domain>` (rooms not persistent unless
    /// configured so) and `rooms.<domain>` (rooms persistent by default).
    pub muc: bool,
    /// Load the delivery modules a stock Prosody has on: mod_carbons
    /// (XEP-0280), mod_offline and mod_mam (XEP-0313, internal storage).
    pub delivery_modules: bool,
}

impl Default for ProsodyOptions {
    fn default() -> Self {
        ProsodyOptions {
            hosts: vec!["example.test".into(), "other.test".into()],
            users: vec![
                ("alice@example.test".into(), "alice-pw".into()),
                ("bob@example.test".into(), "bob-pw".into()),
                ("mallory@other.test".into(), "mallory-pw".into()),
            ],
            read_size: 1 << 20,
            file_share_port: None,
            mftd_module: None,
            muc: false,
            delivery_modules: false,
        }
    }
}

impl Prosody {
    /// Starts Prosody and waits until both ports accept.
    pub fn start(opts: ProsodyOptions) -> Prosody {
        let dir = tempfile::tempdir().unwrap();
        let (c2s_port, component_port) = (free_port(), free_port());
        let domain = opts.hosts[0].clone();
        let component_jid = format!("upload.{domain}");
        let secret = format!("secret-{c2s_port}-{component_port}");
        let mut p = Prosody {
            guard: Guard(None),
            dir,
            domain,
            component_jid,
            secret,
            c2s_port,
            component_port,
        };
        std::fs::create_dir_all(p.data_dir()).unwrap();
        std::fs::write(p.config_path(), p.config(&opts)).unwrap();
        chown_to(p.dir.path(), "prosody");
        for (jid, password) in &opts.users {
            p.register(jid, password);
        }
        p.launch();
        p
    }

    /// Prosody's data directory (accounts, mod_http_file_share's files).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    /// Prosody's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("prosody.log")
    }

    fn config(&self, opts: &ProsodyOptions) -> String {
        let hosts = &opts.hosts;
        let mut cfg = format!(
            r#"
data_path = "{data}"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{log}" }} }}
pidfile = "{dir}/prosody.pid"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_interfaces = {{ "127.0.0.1" }}
component_ports = {{ {comp} }}
component_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{ }}
http_ports = {{ {http_port} }}
http_interfaces = {{ "127.0.0.1" }}
https_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", "disco", "ping", "posix" }}
modules_disabled = {{ "s2s" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
network_default_read_size = {read_size}
network_settings = {{ nagle = false }}
"#,
            data = self.data_dir().display(),
            log = self.log_path().display(),
            dir = self.dir.path().display(),
            c2s = self.c2s_port,
            comp = self.component_port,
            read_size = opts.read_size,
            http_port = opts
                .file_share_port
                .map(|p| p.to_string())
                .unwrap_or_default(),
        );
        if let Some(port) = opts.file_share_port {
            let _ = writeln!(
                cfg,
                "Component \"share.{domain}\" \"http_file_share\"\n    http_external_url = \"http://127.0.0.1:{port}/\"\n    http_host = \"127.0.0.1\"\n    \
                 http_file_share_size_limit = 8*1024*1024*1024\n    http_file_share_daily_quota = 1024*1024*1024*1024\n    \
                 http_file_share_global_quota = 1024*1024*1024*1024",
                domain = self.domain
            );
        }
        if let Some((url, key)) = &opts.mftd_module {
            let modules =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../router/prosody");
            let _ = writeln!(
                cfg,
                "plugin_paths = {{ \"{}\" }}\nmftd_component = \"{}\"\nmftd_url_prefix = \"{url}\"\nmftd_share_key = \"{key}\"",
                modules.display(),
                self.component_jid
            );
            cfg = cfg.replace("\"posix\" }", "\"posix\", \"mftd\" }");
        }
        if opts.delivery_modules {
            cfg = cfg.replace("\"posix\"", "\"posix\", \"carbons\", \"offline\", \"mam\"");
            cfg.push_str("archive_expires_after = \"1w\"\n");
        }
        for host in hosts {
            let _ = writeln!(cfg, "VirtualHost \"{host}\"");
        }
        if opts.muc {
            let _ = writeln!(
                cfg,
                "Component \"conference.{d}\" \"muc\"\n    muc_room_locking = false\nComponent \"rooms.{d}\" \"muc\"\n    muc_room_locking = false\n    muc_room_default_persistent = true",
                d = self.domain
            );
        }
        let _ = writeln!(
            cfg,
            "Component \"{}\"\n    component_secret = \"{}\"",
            self.component_jid, self.secret
        );
        cfg
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("--config").arg(self.config_path());
        as_user(&mut cmd, "prosody");
        cmd
    }

    /// Registers a user (`local@host`).
    pub fn register(&self, jid: &str, password: &str) {
        let (local, host) = jid.split_once('@').unwrap();
        let out = self
            .command("prosodyctl")
            .args(["register", local, host, password])
            .output()
            .expect("prosodyctl: run scripts/install-deps.sh");
        assert!(
            out.status.success(),
            "prosodyctl register {jid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn launch(&mut self) {
        let child = self
            .command("prosody")
            .arg("-F")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prosody: run scripts/install-deps.sh");
        self.guard = Guard(Some(child));
        assert!(
            wait_for_port(self.c2s_port, Duration::from_secs(20))
                && wait_for_port(self.component_port, Duration::from_secs(5)),
            "Prosody did not start; log:\n{}",
            self.log()
        );
    }

    /// Stops Prosody (as a crash would: SIGKILL).
    pub fn stop(&mut self) {
        self.guard = Guard(None);
    }

    /// Starts it again on the same ports.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `host:port` of c2s.
    pub fn c2s_addr(&self) -> String {
        format!("127.0.0.1:{}", self.c2s_port)
    }

    /// `host:port` of the component port.
    pub fn component_addr(&self) -> String {
        format!("127.0.0.1:{}", self.component_port)
    }
}
