//! `mftd fileserver status` and `mftd fileserver transferspeed`: the
//! operator's view of the SFTP file server (or of the S3 bucket, for
//! `status`), one line per check.

use std::io::{Read, Write};
use std::time::Instant;

use mft_storage::backend::{Backend, Session};
use mft_storage::error::chain;
use mft_storage::hostkey::fingerprint;
use mft_storage::s3::{S3Backend, S3Settings};
use mft_storage::sftp::{SftpBackend, SftpSettings};
use mft_storage::StoreError;

/// The reference's minimum link speed to the file server, MB/s.
pub const MIN_SPEED_MB_S: f64 = 60.0;

/// One check's outcome.
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// `Ok(detail)` or `Err(reason)`.
    pub result: Result<String, String>,
}

/// Runs the status checks in order; later checks are skipped once one fails.
pub fn status(settings: &SftpSettings, alarm_free_percent: f64) -> Vec<Check> {
    let mut checks = Vec::new();
    let addr = format!("{}:{}", settings.host, settings.port);
    let reachable = std::net::TcpStream::connect_timeout(
        &match std::net::ToSocketAddrs::to_socket_addrs(&addr)
            .ok()
            .and_then(|mut a| a.next())
        {
            Some(a) => a,
            None => {
                checks.push(Check {
                    name: "reachable",
                    result: Err(format!("cannot resolve {addr}")),
                });
                return checks;
            }
        },
        settings.connect_timeout,
    );
    checks.push(Check {
        name: "reachable",
        result: reachable
            .map(|_| addr.clone())
            .map_err(|e| format!("{addr}: {e}")),
    });
    if checks.last().is_some_and(|c| c.result.is_err()) {
        return checks;
    }
    let backend = SftpBackend::new(settings.clone());
    let connected = backend.connect_now();
    let failure = connected.as_ref().err();
    let key_problem = failure
        .and_then(StoreError::connect_error)
        .is_some_and(|c| c.is_host_key_problem());
    let why = |e: &StoreError| chain(e);
    checks.push(Check {
        name: "host key matches",
        result: if key_problem {
            Err(failure.map(why).unwrap_or_default())
        } else {
            Ok(format!(
                "{} {}",
                settings.host_key.key_type,
                fingerprint(&settings.host_key.blob)
            ))
        },
    });
    if key_problem {
        return checks;
    }
    checks.push(Check {
        name: "authenticated",
        result: match failure {
            None => Ok(format!("as {}", settings.user)),
            Some(e) => Err(why(e)),
        },
    });
    if checks.last().is_some_and(|c| c.result.is_err()) {
        return checks;
    }
    let mut session = match backend.session() {
        Ok(s) => s,
        Err(e) => {
            checks.push(Check {
                name: "node directory writable",
                result: Err(mft_common::error::chain(&e)),
            });
            return checks;
        }
    };
    checks.push(Check {
        name: "node directory writable",
        result: session
            .create_dir_all("files")
            .and_then(|()| write_probe(session.as_mut(), 4096))
            .map(|()| settings.directory.clone())
            .map_err(|e| mft_common::error::chain(&e)),
    });
    let space = match session.free_space() {
        Ok(Some(space)) => {
            let pct = space.percent_free();
            let detail = format!(
                "{:.1} GiB free of {:.1} GiB ({pct:.1} %)",
                space.available as f64 / f64::from(1u32 << 30),
                space.total as f64 / f64::from(1u32 << 30)
            );
            if pct < alarm_free_percent {
                Err(format!(
                    "{detail}: below the alarm threshold of {alarm_free_percent} %"
                ))
            } else {
                Ok(detail)
            }
        }
        Ok(None) => Ok("not reported by this server (no statvfs@openssh.com)".into()),
        Err(e) => Err(mft_common::error::chain(&e)),
    };
    checks.push(Check {
        name: "free space",
        result: space,
    });
    checks
}

/// The checks of an S3 store: the bucket answers to the credentials, and
/// an object can be written and removed under the node's prefix.
pub fn s3_status(settings: &S3Settings) -> Vec<Check> {
    let backend = S3Backend::new(settings.clone());
    let bucket = format!("{} at {}", settings.client.bucket, settings.client.endpoint);
    let answered = backend.check().map(|()| bucket).map_err(|e| chain(&e));
    let failed = answered.is_err();
    let mut checks = vec![Check {
        name: "bucket answers",
        result: answered,
    }];
    if failed {
        return checks;
    }
    let writable = backend
        .session()
        .and_then(|mut s| write_probe(s.as_mut(), 4096))
        .map(|()| format!("{}/", settings.prefix))
        .map_err(|e| chain(&e));
    checks.push(Check {
        name: "node prefix writable",
        result: writable,
    });
    checks
}

fn probe_name() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::getrandom(&mut b);
    format!(
        ".mftd-probe-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

fn write_probe(session: &mut dyn Session, size: usize) -> Result<(), mft_storage::StoreError> {
    let name = probe_name();
    let result = (|| {
        let mut f = session.create_new(&name)?;
        f.write_all(&vec![0u8; size])
            .map_err(|e| mft_storage::StoreError::io("writing probe", e))?;
        f.sync()
    })();
    let _ = session.remove(&name);
    result
}

/// Writes and reads back `size` bytes; returns (write MB/s, read MB/s).
pub fn transfer_speed(settings: &SftpSettings, size: u64) -> anyhow::Result<(f64, f64)> {
    let backend = SftpBackend::new(settings.clone());
    let mut session = backend.session()?;
    session.create_dir_all("files")?;
    let name = probe_name();
    let chunk = vec![0x5au8; 1 << 20];
    let result = (|| -> anyhow::Result<(f64, f64)> {
        let started = Instant::now();
        let mut f = session.create_new(&name)?;
        // As an upload writes when memory is not short: the next piece goes
        // out while the last is still being acknowledged.
        let in_flight = f.wants_in_flight(chunk.len());
        f.keep_in_flight(in_flight);
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync()?;
        drop(f);
        let write = size as f64 / 1e6 / started.elapsed().as_secs_f64();
        let started = Instant::now();
        let (mut r, _) = session.open(&name)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        anyhow::ensure!(total == size, "read back {total} of {size} bytes");
        let read = size as f64 / 1e6 / started.elapsed().as_secs_f64();
        Ok((write, read))
    })();
    let _ = session.remove(&name);
    result
}
