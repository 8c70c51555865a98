//! A client for ClamAV's `clamd` over TCP or a Unix socket: `PING`,
//! `VERSION`, and `INSTREAM`, the protocol that streams a file in
//! length-prefixed chunks (`zINSTREAM\0`, then `<u32 big-endian length>
//! <bytes>` repeated, then a zero length) and answers one line:
//! `stream: OK`, `stream: <signature> FOUND`, or `<reason> ERROR`.
//!
//! Every step runs under the configured timeout, so a scanner that stops
//! reading or never answers is an error, never a hung upload.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest answer line we read.
const MAX_REPLY: usize = 4096;

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddr {
    /// `TCPSocket`/`TCPAddr`: `host:port`.
    Tcp(String),
    /// `LocalSocket`: a Unix socket path.
    Unix(PathBuf),
}

impl ClamdAddr {
    /// `unix:/run/clamav/clamd.ctl`, an absolute socket path, or
    /// `tcp:host:port` / `host:port`.
    pub fn parse(text: &str) -> Result<ClamdAddr, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Ok(ClamdAddr::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(ClamdAddr::Unix(PathBuf::from(text)));
        }
        let hostport = text.strip_prefix("tcp:").unwrap_or(text);
        match hostport.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(ClamdAddr::Tcp(hostport.to_owned()))
            }
            _ => Err(format!(
                "{text:?} is neither a Unix socket path (unix:/run/clamav/clamd.ctl) nor host:port (127.0.0.1:3310)"
            )),
        }
    }
}

impl std::fmt::Display for ClamdAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClamdAddr::Tcp(a) => write!(f, "tcp:{a}"),
            ClamdAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Why clamd gave no verdict.
#[derive(Debug, thiserror::Error)]
pub enum ClamdError {
    /// Could not connect.
    #[error("cannot connect to clamd at {addr} (is clamd running? check scan.clamd)")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection failed while streaming or reading the answer.
    #[error("clamd connection failed while {what}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// clamd did not take bytes or answer within the timeout.
    #[error("clamd did not answer within {0:?} (scan.timeout)")]
    TimedOut(Duration),
    /// clamd answered with an error (size limit, database problem …).
    #[error("clamd refused the scan: {0}")]
    Answer(String),
}

/// clamd's verdict on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nothing found.
    Clean,
    /// A signature matched; its name.
    Found(String),
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A clamd to talk to.
#[derive(Debug, Clone)]
pub struct Clamd {
    addr: ClamdAddr,
    timeout: Duration,
}

impl Clamd {
    /// clamd at `addr`; every step must finish within `timeout`.
    pub fn new(addr: ClamdAddr, timeout: Duration) -> Clamd {
        Clamd { addr, timeout }
    }

    /// Where it listens.
    pub fn addr(&self) -> &ClamdAddr {
        &self.addr
    }

    /// The most each step may take (`scan.timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn within<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, ClamdError>>,
    ) -> Result<T, ClamdError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ClamdError::TimedOut(self.timeout))?
    }

    async fn connect(&self) -> Result<Pin<Box<dyn Io>>, ClamdError> {
        let connect = async {
            let io: Pin<Box<dyn Io>> = match &self.addr {
                ClamdAddr::Tcp(a) => {
                    let s = tokio::net::TcpStream::connect(a.as_str()).await;
                    let s = s.map_err(|source| ClamdError::Connect {
                        addr: self.addr.to_string(),
                        source,
                    })?;
                    let _ = s.set_nodelay(true);
                    Box::pin(s)
                }
                ClamdAddr::Unix(p) => {
                    let s = tokio::net::UnixStream::connect(p).await;
                    Box::pin(s.map_err(|source| ClamdError::Connect {
                        addr: self.addr.to_string(),
                        source,
                    })?)
                }
            };
            Ok(io)
        };
        self.within(connect).await
    }

    /// A one-line command (`PING`, `VERSION`) and its answer.
    async fn command(&self, cmd: &str) -> Result<String, ClamdError> {
        let mut io = self.connect().await?;
        self.within(async {
            io.write_all(format!("z{cmd}\0").as_bytes())
                .await
                .map_err(|source| ClamdError::Io {
                    what: "sending a command",
                    source,
                })?;
            read_reply(&mut io).await
        })
        .await
    }

    /// Checks clamd answers `PING` with `PONG`.
    pub async fn ping(&self) -> Result<(), ClamdError> {
        match self.command("PING").await?.as_str() {
            "PONG" => Ok(()),
            other => Err(ClamdError::Answer(other.to_owned())),
        }
    }

    /// clamd's version line (`ClamAV 1.4.6/27000/…`).
    pub async fn version(&self) -> Result<String, ClamdError> {
        self.command("VERSION").await
    }

    /// Opens a stream to scan.
    pub async fn instream(&self) -> Result<InStream, ClamdError> {
        let mut io = self.connect().await?;
        self.within(async {
            io.write_all(b"zINSTREAM\0")
                .await
                .map_err(|source| ClamdError::Io {
                    what: "starting a scan",
                    source,
                })
        })
        .await?;
        Ok(InStream {
            io,
            timeout: self.timeout,
        })
    }
}

/// One file being streamed to clamd.
pub struct InStream {
    io: Pin<Box<dyn Io>>,
    timeout: Duration,
}

impl InStream {
    /// Sends `data` as one chunk; waits at most the timeout for clamd to take it.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), ClamdError> {
        if data.is_empty() {
            return Ok(()); // A zero length would end the stream.
        }
        let len = u32::try_from(data.len())
            .map_err(|_| ClamdError::Answer("chunk larger than 4 GiB".into()))?;
        let io = &mut self.io;
        let write = async {
            io.write_all(&len.to_be_bytes()).await?;
            io.write_all(data).await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Err(_) => Err(ClamdError::TimedOut(self.timeout)),
            Ok(Ok(())) => Ok(()),
            // clamd answers and closes when a limit is hit: say which.
            Ok(Err(source)) => match self.early_answer().await {
                Some(answer) => Err(ClamdError::Answer(answer)),
                None => Err(ClamdError::Io {
                    what: "streaming the file",
                    source,
                }),
            },
        }
    }

    async fn early_answer(&mut self) -> Option<String> {
        tokio::time::timeout(Duration::from_millis(200), read_reply(&mut self.io))
            .await
            .ok()?
            .ok()
    }

    /// Ends the stream and waits (at most the timeout) for the verdict.
    pub async fn finish(mut self) -> Result<Reply, ClamdError> {
        let io = &mut self.io;
        let answer = tokio::time::timeout(self.timeout, async {
            io.write_all(&0u32.to_be_bytes())
                .await
                .map_err(|source| ClamdError::Io {
                    what: "ending the stream",
                    source,
                })?;
            io.flush().await.map_err(|source| ClamdError::Io {
                what: "ending the stream",
                source,
            })?;
            read_reply(io).await
        })
        .await
        .map_err(|_| ClamdError::TimedOut(self.timeout))??;
        parse_reply(&answer)
    }
}

/// Reads one `\0`- (or newline-) terminated answer.
async fn read_reply(io: &mut Pin<Box<dyn Io>>) -> Result<String, ClamdError> {
    let mut buf = Vec::with_capacity(64);
    let mut byte = [0u8; 256];
    loop {
        let n = io.read(&mut byte).await.map_err(|source| ClamdError::Io {
            what: "reading the answer",
            source,
        })?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&byte[..n]);
        if buf.contains(&0) || buf.contains(&b'\n') || buf.len() > MAX_REPLY {
            break;
        }
    }
    if buf.is_empty() {
        return Err(ClamdError::Io {
            what: "reading the answer",
            source: std::io::ErrorKind::UnexpectedEof.into(),
        });
    }
    let end = buf
        .iter()
        .position(|b| *b == 0 || *b == b'\n')
        .unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).trim().to_owned())
}

/// Reads an `INSTREAM` answer.
pub fn parse_reply(answer: &str) -> Result<Reply, ClamdError> {
    let body = answer.strip_prefix("stream:").map(str::trim);
    match body {
        Some("OK") => Ok(Reply::Clean),
        Some(rest) if rest.ends_with(" FOUND") => {
            let name = rest.trim_end_matches(" FOUND").trim();
            Ok(Reply::Found(name.to_owned()))
        }
        _ => Err(ClamdError::Answer(
            answer.trim_end_matches(" ERROR").to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_clamd_writes_them() {
        assert_eq!(parse_reply("stream: OK").unwrap(), Reply::Clean);
        assert_eq!(
            parse_reply("stream: Eicar-Signature FOUND").unwrap(),
            Reply::Found("Eicar-Signature".into())
        );
        assert_eq!(
            parse_reply("stream: Win.Test.EICAR_HDB-1 FOUND").unwrap(),
            Reply::Found("Win.Test.EICAR_HDB-1".into())
        );
        let e = parse_reply("INSTREAM size limit exceeded. ERROR").unwrap_err();
        assert_eq!(
            e.to_string(),
            "clamd refused the scan: INSTREAM size limit exceeded."
        );
    }

    #[test]
    fn addresses_are_sockets_or_host_ports() {
        assert_eq!(
            ClamdAddr::parse("unix:/run/clamav/clamd.ctl").unwrap(),
            ClamdAddr::Unix("/run/clamav/clamd.ctl".into())
        );
        assert_eq!(
            ClamdAddr::parse("/tmp/c.sock").unwrap(),
            ClamdAddr::Unix("/tmp/c.sock".into())
        );
        assert_eq!(
            ClamdAddr::parse("tcp:127.0.0.1:3310").unwrap(),
            ClamdAddr::Tcp("127.0.0.1:3310".into())
        );
        assert_eq!(
            ClamdAddr::parse("[::1]:3310").unwrap(),
            ClamdAddr::Tcp("[::1]:3310".into())
        );
        assert!(ClamdAddr::parse("localhost").is_err());
        assert!(ClamdAddr::parse("localhost:0").is_err());
    }
}
