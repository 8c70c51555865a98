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
    dist_port: u16,
}

impl Ejabberd {
    /// Starts ejabberd for `example.test` and registers `alice`.
    pub fn start() -> Ejabberd {
        let dir = tempfile::tempdir().unwrap();
        let mut e = Ejabberd {
            guard: Guard(None),
            dir,
            c2s_port: free_port(),
            http_port: free_port(),
            dist_port: free_port(),
        };
        let d = e.dir.path().to_path_buf();
        for sub in ["spool", "logs", "upload"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let yml = format!(
            "hosts:\n  - example.test\nloglevel: warning\nlisten:\n  - port: {c2s}\n    ip: \"127.0.0.1\"\n    module: ejabberd_c2s\n    starttls: false\n\
             \x20 - port: {http}\n    ip: \"127.0.0.1\"\n    module: ejabberd_http\n    request_handlers:\n      /upload: mod_http_upload\n\
             auth_method: internal\nacl:\n  local:\n    user_regexp: \"\"\naccess_rules:\n  local:\n    allow: local\n  c2s:\n    allow: all\n\
             shaper_rules:\n  c2s_shaper: none\nmodules:\n  mod_disco: {{}}\n  mod_ping: {{}}\n  mod_roster: {{}}\n  mod_http_upload:\n\
             \x20   put_url: \"http://127.0.0.1:{http}/upload\"\n    docroot: \"{upload}\"\n    max_size: infinity\n    thumbnail: false\n    access: local\n",
            c2s = e.c2s_port,
            http = e.http_port,
            upload = d.join("upload").display(),
        );
        std::fs::write(d.join("ejabberd.yml"), yml).unwrap();
        std::fs::write(
            d.join("ejabberdctl.cfg"),
            format!("ERL_DIST_PORT={}\nINET_DIST_INTERFACE=127.0.0.1\nERLANG_NODE=ejbench{}@localhost\n", e.dist_port, e.dist_port),
        )
        .unwrap();
        let _ = std::fs::copy("/etc/ejabberd/inetrc", d.join("inetrc"));
        let mut perms = std::fs::metadata(&d).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&d, perms).unwrap();
        chown_to(&d, "ejabberd");
        let child = e
            .ctl()
            .arg("foreground")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ejabberdctl: scripts/install-deps.sh --bench");
        e.guard = Guard(Some(child));
        assert!(
            wait_for_port(e.c2s_port, Duration::from_secs(60)),
            "ejabberd did not start"
        );
        let out = e
            .ctl()
            .args(["register", "alice", "example.test", "alice-pw"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ejabberd register: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        e
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
