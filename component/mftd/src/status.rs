//! `mftd status`: what a running node says about itself, in plain words, as
//! `prosodyctl status` does for Prosody. It asks the node's admin listener
//! (`[admin] listen`, with the token when one is set) — `/readyz` for
//! readiness and why not, `/readyz/xmpp` for the component link, `/metrics`
//! for the file server, the transfer log and the transfers in flight — and
//! reads nothing else: no database, no file server, no secret but the admin
//! token. The exit status follows the LSB's for `status`: see [`Verdict`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use http::header;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::config::sections;

const EXAMPLES: &str = "\
Examples:
  mftd status                                  the node of /etc/mftd/mftd.toml
  mftd status --config /etc/mftd/node_2.toml
  mftd status --require-link                   also fail unless this node holds the XMPP link

Exit status: 0 ready (serving HTTP transfers; the XMPP link may be active,
standby or connecting: a standby serves), 1 running but not ready (or, with
--require-link, not holding the link), 3 not running (nothing answers on
[admin] listen), 4 cannot tell (no [admin] listen configured, the token is
refused, or the configuration cannot be read).";

/// Say whether the running node is ready, and what is up: XMPP link, file
/// server, transfer log, transfers in flight.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct StatusArgs {
    /// The configuration file; only its [admin] section is read.
    #[arg(long, short, value_name = "PATH", default_value = crate::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Exit 1 unless this node holds the XMPP component link (for a check
    /// that wants the active node, not just a serving one).
    #[arg(long)]
    require_link: bool,
}

/// The outcome, as an exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 0: serving HTTP transfers.
    Ready = 0,
    /// 1: running, but something it needs is down (or, with
    /// `--require-link`, the link is held elsewhere).
    NotReady = 1,
    /// 3: nothing answers on the admin listener.
    NotRunning = 3,
    /// 4: cannot ask (no admin listener configured, token refused,
    /// configuration unreadable).
    Unknown = 4,
}

impl From<Verdict> for ExitCode {
    fn from(v: Verdict) -> ExitCode {
        ExitCode::from(v as u8)
    }
}

/// How long the node has to answer each request.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `mftd status`; prints the report and returns the verdict.
pub fn run(args: &StatusArgs) -> Verdict {
    let (verdict, text) = match report(args) {
        Ok(done) => done,
        Err((verdict, why)) => (verdict, why),
    };
    match verdict {
        Verdict::Ready | Verdict::NotReady => print!("{text}"),
        Verdict::NotRunning | Verdict::Unknown => eprint!("{text}"),
    }
    verdict
}

type Outcome = Result<(Verdict, String), (Verdict, String)>;

fn report(args: &StatusArgs) -> Outcome {
    let config = args.config.display();
    let admin = sections::admin(&args.config, std::env::vars()).map_err(|e| {
        (
            Verdict::Unknown,
            format!("cannot tell: {e}\n(the admin endpoint is read from [admin] in --config)\n"),
        )
    })?;
    let Some(listen) = admin.listen else {
        return Err((
            Verdict::Unknown,
            format!(
                "cannot tell: {config} has no [admin] listen, so the node answers no status queries; \
                 set it (e.g. listen = \"127.0.0.1:5281\") and restart mftd, or ask systemd: systemctl status mftd\n"
            ),
        ));
    };
    let addr = reachable(listen);
    let token = admin.token.as_ref().map(|t| t.expose().to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (Verdict::Unknown, format!("cannot tell: {e}\n")))?;
    let answers = runtime.block_on(async {
        let readyz = get(addr, "/readyz", token.as_deref()).await?;
        let xmpp = get(addr, "/readyz/xmpp", token.as_deref()).await?;
        let metrics = get(addr, "/metrics", token.as_deref()).await?;
        Ok::<_, Fetch>((readyz, xmpp, metrics))
    });
    let (readyz, xmpp, metrics) = answers.map_err(|e| match e {
        Fetch::Unreachable(why) => (
            Verdict::NotRunning,
            format!("mftd is not running: nothing answers on {addr} ([admin] listen in {config}): {why}\n"),
        ),
        Fetch::Refused => (
            Verdict::Unknown,
            format!(
                "cannot tell: the admin listener on {addr} refused the token; set [admin] token_file in {config} \
                 to the node's token (or run as a user who can read it)\n"
            ),
        ),
        Fetch::Other(why) => (Verdict::Unknown, format!("cannot tell: {addr}: {why}\n")),
    })?;
    let metrics = Metrics::parse(&metrics.1);
    let ready = readyz.0 == 200;
    let holds_link = xmpp.0 == 200;
    let mut lines = readyz.1.lines();
    let first = lines.next().unwrap_or_default();
    let link = lines
        .find_map(|l| l.strip_prefix("xmpp: "))
        .or_else(|| xmpp.1.trim().strip_prefix("xmpp: "))
        .unwrap_or("unknown");
    let verdict = if !ready || (args.require_link && !holds_link) {
        Verdict::NotReady
    } else {
        Verdict::Ready
    };
    let headline = if ready {
        "ready (serving HTTP transfers)".to_owned()
    } else {
        format!(
            "NOT READY: {}",
            first.strip_prefix("not ready: ").unwrap_or(first)
        )
    };
    let text = format!(
        "mftd {version} on {addr}, up {uptime}: {headline}\n\
         {:<14}{link}{require}\n{:<14}{fs}\n{:<14}{log}\n{:<14}{transfers}\n",
        "XMPP link",
        "file server",
        "transfer log",
        "transfers",
        version = metrics.label("mftd_build_info", "version").unwrap_or("?"),
        uptime = metrics.uptime(),
        require = if args.require_link && !holds_link {
            " — --require-link: NOT HELD by this node"
        } else {
            ""
        },
        fs = metrics.file_server(),
        log = metrics.transfer_log(),
        transfers = metrics.transfers(),
    );
    Ok((verdict, text))
}

/// Where to reach a listener bound to `listen`: an unspecified address
/// (all interfaces) is reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Why a request got no usable answer.
#[derive(Debug)]
enum Fetch {
    /// Nothing listens (or it does not answer in time).
    Unreachable(String),
    /// 401: the token is missing or wrong.
    Refused,
    /// Anything else.
    Other(String),
}

/// GET `path` on the admin listener: (status, body).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, String), Fetch> {
    let tcp = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| Fetch::Unreachable(format!("no answer within {}s", TIMEOUT.as_secs())))?
        .map_err(|e| Fetch::Unreachable(e.to_string()))?;
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| Fetch::Other(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = http::Request::get(path)
            .header(header::HOST, addr.to_string())
            .header(
                header::USER_AGENT,
                concat!("mftd-status/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| Fetch::Other(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| Fetch::Other(e.to_string()))?;
        let status = resp.status().as_u16();
        if status == 401 {
            return Err(Fetch::Refused);
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Fetch::Other(e.to_string()))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| {
        Fetch::Other(format!(
            "{path} did not answer within {}s",
            TIMEOUT.as_secs()
        ))
    })?
}

/// Samples of a Prometheus text exposition.
struct Metrics(Vec<(String, String, f64)>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                let value: f64 = value.parse().ok()?;
                let (name, labels) = match key.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (key, ""),
                };
                Some((name.to_owned(), labels.to_owned(), value))
            })
            .collect();
        Metrics(samples)
    }

    /// The first sample of `name` whose labels contain `label`.
    fn value(&self, name: &str, label: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(n, l, _)| n == name && l.contains(label))
            .map(|s| s.2)
    }

    /// The value of label `label` on metric `name`.
    fn label(&self, name: &str, label: &str) -> Option<&str> {
        let labels = &self.0.iter().find(|(n, _, _)| n == name)?.1;
        let start = labels.find(&format!("{label}=\""))? + label.len() + 2;
        labels[start..].split('"').next()
    }

    fn uptime(&self) -> String {
        let Some(start) = self.value("mftd_start_time_seconds", "") else {
            return "?".into();
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let secs = now.saturating_sub(start as u64);
        let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
        match (d, h, m) {
            (0, 0, 0) => format!("{s}s"),
            (0, 0, _) => format!("{m}m {s}s"),
            (0, _, _) => format!("{h}h {m}m"),
            _ => format!("{d}d {h}h"),
        }
    }

    fn file_server(&self) -> String {
        if self.value("mftd_file_server_up", "") != Some(1.0) {
            return "DOWN: the last check failed (details: `mftd fileserver status`, the status page, mftd's log)"
                .into();
        }
        match (
            self.value("mftd_file_server_free_bytes", ""),
            self.value("mftd_file_server_free_ratio", ""),
        ) {
            (Some(bytes), Some(ratio)) if bytes > 0.0 => {
                let alarm = self.value("mftd_file_server_alarm_free_ratio", "");
                let low = alarm.is_some_and(|a| ratio < a);
                format!(
                    "up, {:.1} GiB free ({:.1} %){}",
                    bytes / f64::from(1u32 << 30),
                    ratio * 100.0,
                    if low {
                        " — BELOW the free-space alarm threshold"
                    } else {
                        ""
                    }
                )
            }
            _ => "up".into(),
        }
    }

    fn transfer_log(&self) -> String {
        if self.value("mftd_transfer_log_configured", "") != Some(1.0) {
            return "not configured (no [database]: uploads and downloads are not logged)".into();
        }
        let queued = self
            .value("mftd_transfer_log_queue_depth", "")
            .unwrap_or(0.0);
        if self.value("mftd_transfer_log_up", "") == Some(1.0) {
            format!("up ({queued} rows waiting to be committed)")
        } else {
            "DOWN: PostgreSQL cannot commit (uploads and downloads are refused until it can)".into()
        }
    }

    fn transfers(&self) -> String {
        let up = self
            .value("mftd_transfers_in_flight", "upload")
            .unwrap_or(0.0);
        let down = self
            .value("mftd_transfers_in_flight", "download")
            .unwrap_or(0.0);
        let conns = self.value("mftd_http_connections", "").unwrap_or(0.0);
        format!(
            "{} and {} in flight; {} open",
            counted(up, "upload"),
            counted(down, "download"),
            counted(conns, "HTTP connection")
        )
    }
}

/// `1 upload`, `2 uploads`.
fn counted(n: f64, what: &str) -> String {
    if n == 1.0 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# HELP mftd_build_info mftd's version\n\
        mftd_build_info{version=\"0.1.0\",package=\"mftd\"} 1\n\
        mftd_transfers_in_flight{direction=\"upload\"} 2\n\
        mftd_transfers_in_flight{direction=\"download\"} 1\n\
        mftd_http_connections 3\n\
        mftd_file_server_up 1\n\
        mftd_file_server_free_bytes 1073741824\n\
        mftd_file_server_free_ratio 0.05\n\
        mftd_file_server_alarm_free_ratio 0.1\n\
        mftd_transfer_log_configured 1\n\
        mftd_transfer_log_up 0\n";

    #[test]
    fn metrics_read_as_plain_words() {
        let m = Metrics::parse(SAMPLE);
        assert_eq!(m.label("mftd_build_info", "version"), Some("0.1.0"));
        assert_eq!(
            m.transfers(),
            "2 uploads and 1 download in flight; 3 HTTP connections open"
        );
        assert_eq!(
            m.file_server(),
            "up, 1.0 GiB free (5.0 %) — BELOW the free-space alarm threshold"
        );
        assert!(m.transfer_log().starts_with("DOWN"));
        assert!(Metrics::parse("").file_server().starts_with("DOWN"));
        assert!(Metrics::parse("")
            .transfer_log()
            .starts_with("not configured"));
    }

    #[test]
    fn an_all_interfaces_listener_is_asked_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:5281".parse().unwrap()),
            "127.0.0.1:5281".parse().unwrap()
        );
        assert_eq!(
            reachable("[::]:5281".parse().unwrap()),
            "[::1]:5281".parse().unwrap()
        );
        assert_eq!(
            reachable("10.0.0.5:5281".parse().unwrap()),
            "10.0.0.5:5281".parse().unwrap()
        );
    }
}
