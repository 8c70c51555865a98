//! A real OpenSSH sshd as the external file server: its own config, host
//! keys and port on 127.0.0.1, key-only logins for the `mftfiles` user
//! (created by `scripts/install-deps.sh`), an `authorized_keys` holding a key
//! that `mftd keys generate` made, and a node directory below a temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{chown_to, free_port, kill_tree, wait_for_port, Guard};

/// The file server account.
pub const USER: &str = "mftfiles";

/// A running sshd.
pub struct Sshd {
    guard: Guard,
    dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}: run scripts/install-deps.sh"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Sshd {
    fn drop(&mut self) {
        kill_tree(self.guard.pid());
    }
}

impl Sshd {
    /// Starts sshd with fresh host keys.
    pub fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let s = Sshd {
            guard: Guard(None),
            dir,
            port,
        };
        for (kind, file) in [("ed25519", "host_ed25519"), ("rsa", "host_rsa")] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-f"])
                .arg(s.dir.path().join(file)));
        }
        std::fs::create_dir_all(s.node_root()).unwrap();
        std::fs::write(s.authorized_keys(), "").unwrap();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nHostKey {d}/host_rsa\n\
             PidFile {d}/sshd.pid\nAuthorizedKeysFile {ak}\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\nPermitRootLogin no\n\
             AllowUsers {USER}\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n",
            d = s.dir.path().display(),
            ak = s.authorized_keys().display(),
        );
        std::fs::write(s.dir.path().join("sshd_config"), config).unwrap();
        // The account must reach its files; sshd insists the host keys stay private.
        let mut perms = std::fs::metadata(s.dir.path()).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(s.dir.path(), perms).unwrap();
        chown_to(&s.node_root(), USER);
        let _ = std::fs::create_dir_all("/run/sshd");
        let mut s = s;
        s.launch();
        s
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sshd.log"))
            .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(self.dir.path().join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("/usr/sbin/sshd: run scripts/install-deps.sh");
        self.guard = Guard(Some(child));
        assert!(
            wait_for_port(self.port, Duration::from_secs(10)),
            "sshd did not start: {}",
            self.log()
        );
    }

    /// Kills sshd and every session process under it, as a crash would.
    pub fn kill(&mut self) {
        kill_tree(self.guard.pid());
        self.guard = Guard(None);
    }

    /// Starts it again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// sshd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The directory that holds node directories (like /opt/mftFileStore).
    pub fn node_root(&self) -> PathBuf {
        self.dir.path().join("mftFileStore")
    }

    fn authorized_keys(&self) -> PathBuf {
        self.dir.path().join("authorized_keys")
    }

    /// Adds a public key line to the account's authorized_keys.
    pub fn authorize(&self, public_line: &str) {
        let mut keys = std::fs::read_to_string(self.authorized_keys()).unwrap();
        keys.push_str(public_line.trim());
        keys.push('\n');
        std::fs::write(self.authorized_keys(), keys).unwrap();
    }

    /// The line `ssh-keyscan -t TYPE -p PORT 127.0.0.1` prints.
    pub fn keyscan(&self, key_type: &str) -> String {
        let out = run(Command::new("ssh-keyscan").args([
            "-t",
            key_type,
            "-p",
            &self.port.to_string(),
            "127.0.0.1",
        ]));
        out.lines()
            .find(|l| !l.starts_with('#'))
            .unwrap()
            .to_owned()
    }

    /// Generates a node key with the real `mftd keys generate` and authorises it.
    pub fn node_key(&self, dir: &Path, node: &str) -> PathBuf {
        let key = dir.join(format!("{node}.key"));
        let line = run(Command::new(crate::mftd::binary())
            .args(["keys", "generate", "--node", node, "--out"])
            .arg(&key));
        self.authorize(&line);
        key
    }

    /// `[store.sftp]` TOML for a node.
    pub fn store_toml(&self, node: &str, key: &Path) -> String {
        format!(
            "kind = \"sftp\"\n[store.sftp]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{USER}\"\ndirectory = \"{}\"\n\
             host_key = \"{}\"\nprivate_key = \"{}\"\nconnect_timeout = \"3s\"\nio_timeout = \"10s\"\n",
            self.port,
            self.node_root().join(node).display(),
            self.keyscan("ed25519"),
            key.display()
        )
    }
}

/// Checks an armored SSH signature of `message` in the log's namespace
/// (`mftd-log-checkpoint`) with OpenSSH's own `ssh-keygen -Y verify`,
/// trusting only `public_line`; files go in `dir`. Err holds its output.
pub fn verify_log_signature(
    dir: &std::path::Path,
    public_line: &str,
    signature: &str,
    message: &[u8],
) -> Result<(), String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let sig_file = dir.join("message.sig");
    std::fs::write(&sig_file, signature.trim_end().to_owned() + "\n").unwrap();
    let allowed = dir.join("allowed_signers");
    std::fs::write(&allowed, format!("log@mftd {public_line}\n")).unwrap();
    let mut check = Command::new("ssh-keygen")
        .args([
            "-Y",
            "verify",
            "-n",
            "mftd-log-checkpoint",
            "-I",
            "log@mftd",
            "-f",
        ])
        .arg(&allowed)
        .arg("-s")
        .arg(&sig_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(message).unwrap();
    let out = check.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ssh-keygen -Y verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
