//! A size-limited tmpfs the test mounts over a directory (root only), to
//! make a filesystem run out of space on purpose; unmounted when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs.
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`8m`, `16m` …) on `path`, mode 0755.
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("tmpfs")
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs on {}", path.display());
        Tmpfs {
            path: path.to_owned(),
        }
    }

    /// Fills the filesystem until `leave` bytes are free (as root, so the
    /// file server's account cannot remove it).
    pub fn fill_leaving(&self, leave: u64) {
        let filler = self.path.join("filler");
        let _ = std::fs::remove_file(&filler);
        let free = free_bytes(&self.path);
        let size = free.saturating_sub(leave);
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![7u8; 64 * 1024];
        let mut written = 0u64;
        while written < size {
            let n = block.len().min((size - written) as usize);
            f.write_all(&block[..n]).unwrap();
            written += n as u64;
        }
        f.sync_all().unwrap();
    }

    /// Removes what [`fill_leaving`](Self::fill_leaving) wrote.
    pub fn free_filler(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Bytes available on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
