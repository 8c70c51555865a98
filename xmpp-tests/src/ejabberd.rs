//! A real ejabberd (Debian package) with mod_http_upload, for side-by-side
//! benchmarks: its own config dir, spool and ports on 127.0.0.1, Erlang
//! distribution on a private loopback port and no epmd.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{chown_to, free_port, kill_tree, wait_for_port, Guard};

/// A running ejabberd.
pub struct Ejabberd {
    guard: Guard,
    dir: tempfile::TempDir,
    /// Client port.
    pub c2s_port: u16,
    /// HTTP port of mod_http_upload.
    pub http_port: u16,
    /// Component port (when started as mftd's router).
    pub component_port: u16,
    dist_port: u16,
}

/// ejabberd as mftd's router: a component port for `upload.example.test`,
/// group chat on `conference.example.test`, offline storage (mod_offline),
/// message carbons (mod_carboncopy), archives (mod_mam, in mnesia), users, and optionally mftd's
/// router module (`router/ejabberd/mod_mftd.erl`, compiled here).
pub struct RouterOptions {
    /// The component secret.
    pub secret: String,
    /// Users as (local part, password) on example.test.
    pub users: Vec<(String, String)>,
    /// Load mod_mftd: (mftd's public URL, the shared key).
    pub mftd_module: Option<(String, String)>,
}

impl Ejabberd {
    /// Starts ejabberd for `example.test` and registers `alice`.
    pub fn start() -> Ejabberd {
        Self::start_upload(None)
    }

    /// [`Ejabberd::start`] with mod_http_upload over HTTPS, with the
    /// certificate and key in one PEM file.
    pub fn start_https(cert_and_key: &std::path::Path) -> Ejabberd {
        Self::start_upload(Some(cert_and_key))
    }

    fn start_upload(tls: Option<&std::path::Path>) -> Ejabberd {
        let mut e = Self::prepare();
        let d = e.dir.path().to_path_buf();
        let (scheme, tls_option, certfiles) = match tls {
            Some(pem) => {
                // ejabberd runs as its own user: give it a copy it can read.
                let copy = d.join("https.pem");
                std::fs::copy(pem, &copy).unwrap();
                (
                    "https",
                    "    tls: true\n",
                    format!("certfiles:\n  - \"{}\"\n", copy.display()),
                )
            }
            None => ("http", "", String::new()),
        };
        let yml = format!(
            "hosts:\n  - example.test\nloglevel: warning\n{certfiles}listen:\n  - port: {c2s}\n    ip: \"127.0.0.1\"\n    module: ejabberd_c2s\n    starttls: false\n\
             \x20 - port: {http}\n    ip: \"127.0.0.1\"\n    module: ejabberd_http\n{tls_option}    request_handlers:\n      /upload: mod_http_upload\n\
             auth_method: internal\nacl:\n  local:\n    user_regexp: \"\"\naccess_rules:\n  local:\n    allow: local\n  c2s:\n    allow: all\n\
             shaper_rules:\n  c2s_shaper: none\nmodules:\n  mod_disco: {{}}\n  mod_ping: {{}}\n  mod_roster: {{}}\n  mod_http_upload:\n\
             \x20   put_url: \"{scheme}://127.0.0.1:{http}/upload\"\n    docroot: \"{upload}\"\n    max_size: infinity\n    thumbnail: false\n    access: local\n",
            c2s = e.c2s_port,
            http = e.http_port,
            upload = d.join("upload").display(),
        );
        e.launch(&yml, "");
        e.register("alice", "alice-pw");
        e
    }

    fn prepare() -> Ejabberd {
        let dir = tempfile::tempdir().unwrap();
        let e = Ejabberd {
            guard: Guard(None),
            dir,
            c2s_port: free_port(),
            http_port: free_port(),
            component_port: free_port(),
            dist_port: free_port(),
        };
        for sub in ["spool", "logs", "upload", "ebin"] {
            std::fs::create_dir_all(e.dir.path().join(sub)).unwrap();
        }
        e
    }

    /// Starts ejabberd as the router of `example.test` for mftd.
    pub fn start_router(opts: &RouterOptions) -> Ejabberd {
        let mut e = Self::prepare();
        let d = e.dir.path().to_path_buf();
        let mut modules = String::from(
            "  mod_disco: {}\n  mod_ping: {}\n  mod_roster: {}\n  mod_offline: {}\n  mod_carboncopy: {}\n  mod_mam:\n    default: always\n  mod_muc:\n    host: \"conference.example.test\"\n    access_create: all\n    access_persistent: all\n",
        );
        let mut erl_options = String::new();
        if let Some((url, key)) = &opts.mftd_module {
            let source =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../router/ejabberd/mod_mftd.erl");
            let lib = find_dir(
                &[
                    "/usr/lib/x86_64-linux-gnu",
                    "/usr/lib/aarch64-linux-gnu",
                    "/usr/lib",
                ],
                "ejabberd-",
            )
            .expect("ejabberd's library directory (Debian package ejabberd)");
            let xmpp = find_dir(&["/usr/lib/erlang/lib"], "p1_xmpp-")
                .expect("p1_xmpp's include directory (Debian package erlang-p1-xmpp)");
            let out = Command::new("erlc")
                .arg("-I")
                .arg(lib.join("include"))
                .arg("-I")
                .arg(xmpp.join("include"))
                .arg("-pa")
                .arg(lib.join("ebin"))
                .arg("-o")
                .arg(d.join("ebin"))
                .arg(&source)
                .output()
                .expect("erlc");
            assert!(
                out.status.success(),
                "erlc mod_mftd: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            modules.push_str(&format!(
                "  mod_mftd:\n    component: \"upload.example.test\"\n    url_prefix: \"{url}\"\n    share_key: \"{key}\"\n"
            ));
            erl_options = format!("ERL_OPTIONS=\"-pa {}\"\n", d.join("ebin").display());
        }
        let yml = format!(
            "hosts:\n  - example.test\nloglevel: info\nlisten:\n  - port: {c2s}\n    ip: \"127.0.0.1\"\n    module: ejabberd_c2s\n    starttls: false\n\
             \x20 - port: {comp}\n    ip: \"127.0.0.1\"\n    module: ejabberd_service\n    hosts:\n      upload.example.test:\n        password: \"{secret}\"\n\
             auth_method: internal\nacl:\n  local:\n    user_regexp: \"\"\naccess_rules:\n  local:\n    allow: local\n  c2s:\n    allow: all\n\
             shaper_rules:\n  c2s_shaper: none\nmodules:\n{modules}",
            c2s = e.c2s_port,
            comp = e.component_port,
            secret = opts.secret,
        );
        e.launch(&yml, &erl_options);
        for (user, pw) in &opts.users {
            e.register(user, pw);
        }
        e
    }

    /// Registers a user; tried again while ejabberd is still creating its
    /// tables (its c2s port opens before the auth table exists: a CI run
    /// met `{aborted,{no_exists,passwd,storage_type}}`).
    fn register(&self, user: &str, password: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .ctl()
                .args(["register", user, "example.test", password])
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() {
                return;
            }
            let starting = said.contains("no_exists") || said.contains("nodedown");
            assert!(
                starting && std::time::Instant::now() < deadline,
                "ejabberd register: {said}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn launch(&mut self, yml: &str, extra_cfg: &str) {
        let e = self;
        let d = e.dir.path().to_path_buf();
        std::fs::write(d.join("ejabberd.yml"), yml).unwrap();
        std::fs::write(
            d.join("ejabberdctl.cfg"),
            format!("ERL_DIST_PORT={}\nINET_DIST_INTERFACE=127.0.0.1\nERLANG_NODE=ejbench{}@localhost\n{extra_cfg}", e.dist_port, e.dist_port),
        )
        .unwrap();
        let _ = std::fs::copy("/etc/ejabberd/inetrc", d.join("inetrc"));
        let mut perms = std::fs::metadata(&d).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&d, perms).unwrap();
        chown_to(&d, "ejabberd");
        e.run_foreground();
    }

    fn run_foreground(&mut self) {
        let child = self
            .ctl()
            .arg("foreground")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ejabberdctl: scripts/install-deps.sh --bench");
        self.guard = Guard(Some(child));
        // Its Mnesia tables (offline storage, the archive) are created at
        // the first start: slow on a busy machine.
        if !wait_for_port(self.c2s_port, Duration::from_secs(120)) {
            let logs = self.dir.path().join("logs");
            let tail = ["ejabberd.log", "error.log", "crash.log"]
                .iter()
                .map(|f| {
                    let text = std::fs::read_to_string(logs.join(f)).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    format!(
                        "--- {f}\n{}",
                        lines[lines.len().saturating_sub(40)..].join("\n")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            panic!(
                "ejabberd did not start within 120 s (c2s port {}):\n{tail}",
                self.c2s_port
            );
        }
    }

    /// Stops ejabberd as an operator would (`ejabberdctl stop`) and starts
    /// it again with the same configuration, spool (its database), log and
    /// ports.
    pub fn restart(&mut self) {
        let _ = self
            .ctl()
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if self.guard.wait_exit(Duration::from_secs(60)).is_none() {
            kill_tree(self.guard.pid());
        }
        self.run_foreground();
    }

    /// ejabberd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/ejabberd.log")).unwrap_or_default()
    }

    /// `host:port` of the component listener.
    pub fn component_addr(&self) -> String {
        format!("127.0.0.1:{}", self.component_port)
    }

    fn ctl(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("ejabberdctl");
        cmd.arg("--config-dir")
            .arg(d)
            .arg("--spool")
            .arg(d.join("spool"))
            .arg("--logs")
            .arg(d.join("logs"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
        cmd
    }

    /// `host:port` of c2s.
    pub fn c2s_addr(&self) -> String {
        format!("127.0.0.1:{}", self.c2s_port)
    }

    /// Where uploads land.
    pub fn docroot(&self) -> PathBuf {
        self.dir.path().join("upload")
    }
}

/// The first directory in `parents` whose name starts with `prefix`.
fn find_dir(parents: &[&str], prefix: &str) -> Option<PathBuf> {
    parents.iter().find_map(|parent| {
        std::fs::read_dir(parent)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
                    && p.is_dir()
            })
    })
}

impl Drop for Ejabberd {
    fn drop(&mut self) {
        let _ = self
            .ctl()
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        kill_tree(self.guard.pid());
    }
}
