//! The admin listener against real parts: Prosody as router, slixmpp
//! clients, OpenSSH sshd as file server, PostgreSQL as transfer log,
//! Prometheus' `promtool` for the exposition format and headless Chromium
//! for the status page.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use xmpp_tests::client;
use xmpp_tests::http::get_with;
use xmpp_tests::mftd::{Mftd, MftdOptions};
use xmpp_tests::postgres::Postgres;
use xmpp_tests::process::free_port;
use xmpp_tests::prosody::{Prosody, ProsodyOptions};
use xmpp_tests::sshd::Sshd;

const TOKEN: &str = "admin-token-0123456789abcdef";
const ALICE: (&str, &str) = ("alice@example.test", "alice-pw");

struct World {
    prosody: Prosody,
    pg: Postgres,
    sshd: Sshd,
    mftd: Mftd,
    admin: String,
    dir: tempfile::TempDir,
}

fn world(token: Option<&str>) -> World {
    let prosody = Prosody::start(ProsodyOptions::default());
    let pg = Postgres::start();
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let key = sshd.node_key(dir.path(), "node_1");
    let admin_port = free_port();
    let mut m = MftdOptions::for_prosody(&prosody);
    m.store = Some(sshd.store_toml("node_1", &key));
    m.extra = format!(
        "[database]\nurl = \"{}\"\n[log]\nformat = \"json\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ncheck_interval = \"500ms\"\n{}",
        pg.url(),
        token.map_or_else(String::new, |t| format!("token = \"{t}\"\n"))
    );
    let mftd = Mftd::start(&m);
    mftd.wait_connected(1);
    World {
        prosody,
        pg,
        sshd,
        mftd,
        admin: format!("http://127.0.0.1:{admin_port}"),
        dir,
    }
}

impl World {
    fn get(&self, path: &str) -> (u16, String) {
        get_with(&format!("{}{path}", self.admin), &[])
    }

    /// Every sample of `/metrics`, by series (`name{labels}`).
    fn scrape(&self) -> HashMap<String, f64> {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "{text}");
        parse_samples(&text)
    }

    fn upload(&self, name: &str, bytes: usize) -> String {
        let file = self.dir.path().join("upload.bin");
        std::fs::write(&file, vec![b'x'; bytes]).unwrap();
        let out = client::run(
            &self.prosody,
            ALICE.0,
            ALICE.1,
            &["upload", "--file", file.to_str().unwrap(), "--name", name],
        );
        assert_eq!(out["put_status"], 201, "{out}\n{}", self.mftd.log());
        out["get_url"].as_str().unwrap().to_owned()
    }

    /// Polls `/readyz` until it answers `want` (the sampler runs every 500 ms).
    fn readyz_becomes(&self, want: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.get("/readyz");
            if status == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/readyz stayed {status} ({body}), wanted {want}; mftd log:\n{}",
                self.mftd.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn parse_samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

#[test]
fn metrics_follow_one_upload_one_download_and_each_refusal() {
    let w = world(None);
    let before = w.scrape();
    assert_eq!(before["mftd_xmpp_link_up"], 1.0);
    let size = 123_457;
    let url = w.upload("report.pdf", size);
    let (status, body) = get_with(&url, &[]);
    assert_eq!((status, body.len()), (200, size));
    // A slot too large for the 10 MiB limit, and a malformed one.
    let component = w.prosody.component_jid.clone();
    let big = client::run(
        &w.prosody,
        ALICE.0,
        ALICE.1,
        &[
            "slot",
            "--to",
            &component,
            "--filename",
            "big.iso",
            "--size",
            "20000000",
        ],
    );
    assert!(big["error"].as_str().is_some(), "{big}");
    let malformed = client::run(
        &w.prosody,
        ALICE.0,
        ALICE.1,
        &[
            "iq",
            "--to",
            &component,
            "<request xmlns='urn:xmpp:http:upload:0' filename='' size='1'/>",
        ],
    );
    assert!(malformed.to_string().contains("bad-request"), "{malformed}");
    let after = w.scrape();
    let d = |s: &str| delta(&before, &after, s);
    assert_eq!(d("mftd_slot_requests_total{outcome=\"granted\"}"), 1.0);
    assert_eq!(d("mftd_slot_requests_total{outcome=\"too_large\"}"), 1.0);
    assert_eq!(d("mftd_slot_requests_total{outcome=\"bad_request\"}"), 1.0);
    assert_eq!(d("mftd_slot_requests_total{outcome=\"forbidden\"}"), 0.0);
    assert_eq!(d("mftd_slot_duration_seconds_count"), 3.0);
    assert_eq!(d("mftd_uploads_total{status=\"201\"}"), 1.0);
    // The client reads its upload back once; this test fetched it once more.
    assert_eq!(d("mftd_downloads_total{status=\"200\"}"), 2.0);
    assert_eq!(d("mftd_received_bytes_total"), size as f64);
    assert_eq!(d("mftd_sent_bytes_total"), 2.0 * size as f64);
    assert_eq!(
        d("mftd_transfer_duration_seconds_count{direction=\"upload\"}"),
        1.0
    );
    assert_eq!(
        d("mftd_transfer_duration_seconds_count{direction=\"download\"}"),
        2.0
    );
    assert_eq!(after["mftd_transfers_in_flight{direction=\"upload\"}"], 0.0);
    assert_eq!(
        after["mftd_transfers_in_flight{direction=\"download\"}"],
        0.0
    );
    assert!(d("mftd_transfer_log_batch_rows_count") >= 2.0, "{after:?}");
    // The stored upload's steps, each observed once, together no longer
    // than the whole upload.
    let mut steps = 0.0;
    for stage in ["claim", "body", "store", "log"] {
        let count = format!("mftd_upload_stage_duration_seconds_count{{stage=\"{stage}\"}}");
        assert_eq!(d(&count), 1.0, "{stage}: {after:?}");
        steps += d(&format!(
            "mftd_upload_stage_duration_seconds_sum{{stage=\"{stage}\"}}"
        ));
    }
    let whole = d("mftd_transfer_duration_seconds_sum{direction=\"upload\"}");
    assert!(
        steps > 0.0 && steps <= whole + 0.001,
        "steps {steps} s, upload {whole} s"
    );
    assert_eq!(after["mftd_transfer_log_up"], 1.0);
    assert_eq!(after["mftd_file_server_up"], 1.0);
    assert!(after["mftd_file_server_free_bytes"] > 0.0);
    let ratio = after["mftd_file_server_free_ratio"];
    assert!(ratio > 0.0 && ratio <= 1.0, "{ratio}");

    // The exposition format is what Prometheus' own checker accepts.
    let (_, text) = w.get("/metrics");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let written = textfile_metrics(&w);
    check_monitoring_docs(&after, &written);
    // OpenMetrics on request.
    let (status, om) = get_with(
        &format!("{}/metrics", w.admin),
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    );
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"), "{om}");
}

#[test]
fn readyz_follows_the_file_server_and_the_database() {
    let mut w = world(None);
    assert_eq!(w.get("/healthz").0, 200);
    w.readyz_becomes(200);
    w.sshd.kill();
    let why = w.readyz_becomes(503);
    assert!(why.contains("file server"), "{why}");
    assert_eq!(w.get("/healthz").0, 200, "the process still serves");
    w.sshd.restart();
    w.readyz_becomes(200);
    w.pg.stop();
    let why = w.readyz_becomes(503);
    assert!(why.contains("transfer log"), "{why}");
    w.pg.restart();
    w.readyz_becomes(200);
    assert_eq!(w.get("/readyz/xmpp").0, 200, "the link is held");
    // Without the router the node still serves HTTP transfers: /readyz
    // stays 200 and names the link; /readyz/xmpp says it is not held.
    w.prosody.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = w.get("/readyz/xmpp");
        if status != 200 || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("xmpp: "), "{body}");
    let (status, body) = w.get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ready\nxmpp: "), "{body}");
    assert!(!body.contains("xmpp: active"), "{body}");
}

#[test]
fn the_admin_listener_wants_its_token_and_never_serves_files() {
    let w = world(Some(TOKEN));
    let url = w.upload("secret.txt", 1000);
    for path in ["/metrics", "/", "/readyz", "/healthz"] {
        let (status, _) = w.get(path);
        assert_eq!(status, 401, "{path} without a token");
        let wrong = get_with(
            &format!("{}{path}", w.admin),
            &[("Authorization", "Bearer wrong-token-0123456789")],
        );
        assert_eq!(wrong.0, 401, "{path} with a wrong token");
    }
    // [log] format = "json": every line is one object with the usual fields.
    let log = w.mftd.log();
    let mut listening = 0;
    for line in log.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            event["timestamp"].is_string() && event["level"].is_string(),
            "{line}"
        );
        if event["message"] == "HTTP: listening" {
            assert!(
                event["listen"].as_str().unwrap().starts_with("127.0.0.1:"),
                "{line}"
            );
            listening += 1;
        }
    }
    assert_eq!(listening, 1, "{log}");
    let bearer = format!("Bearer {TOKEN}");
    let (status, text) = get_with(
        &format!("{}/metrics", w.admin),
        &[("Authorization", bearer.as_str())],
    );
    assert_eq!(status, 200);
    assert!(text.contains("mftd_build_info"));
    // A browser's basic auth: any user name, the token as password.
    let basic = format!(
        "Basic {}",
        base64_encode(format!("operator:{TOKEN}").as_bytes())
    );
    let (status, page) = get_with(
        &format!("{}/", w.admin),
        &[("Authorization", basic.as_str())],
    );
    assert_eq!(status, 200);
    assert!(page.contains("secret.txt"), "the page lists the upload");
    // The file's own path on the admin listener is not a download.
    let path = &url[url
        .find("/files")
        .or_else(|| url[8..].find('/').map(|i| i + 8))
        .unwrap()..];
    let (status, _) = get_with(
        &format!("{}{path}", w.admin),
        &[("Authorization", bearer.as_str())],
    );
    assert_eq!(status, 404);
}

/// Runs `promtool` with `args`; panics with its output unless it succeeds.
fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian package prometheus) is installed");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The alert rules and the Grafana dashboard in docs/monitoring use only
/// metrics mftd exports, in PromQL Prometheus accepts; the alerts fire
/// as their own unit tests say.
/// The metric names `mftd verify --textfile` and `mftd verify --log
/// --textfile` write (for the node exporter's textfile collector): the
/// alerts use them beside the scraped ones.
fn textfile_metrics(w: &World) -> Vec<String> {
    let mut names = Vec::new();
    for (extra, file) in [(None, "verify.prom"), (Some("--log"), "chain.prom")] {
        let path = w.dir.path().join(file);
        let mut cmd = std::process::Command::new(xmpp_tests::mftd::binary());
        cmd.args(["verify", "--config"])
            .arg(w.mftd.config_path())
            .arg("--textfile")
            .arg(&path);
        if let Some(flag) = extra {
            cmd.arg(flag);
        }
        let out = cmd.output().unwrap();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "verify {extra:?} wrote no textfile ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        names.extend(
            text.lines()
                .filter(|l| l.starts_with("mftd_"))
                .filter_map(|l| l.split(['{', ' ']).next())
                .map(str::to_owned),
        );
    }
    names
}

fn check_monitoring_docs(scraped: &HashMap<String, f64>, written: &[String]) {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring");
    let alerts = docs.join("prometheus-alerts.yml");
    promtool(&["check", "rules", alerts.to_str().unwrap()]);
    promtool(&[
        "test",
        "rules",
        docs.join("prometheus-alerts.test.yml").to_str().unwrap(),
    ]);
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(docs.join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 15, "{exprs:?}");
    // Each panel query, with Grafana's variables filled in, as a recording rule.
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
                .replace("$job", "mftd");
            serde_json::json!({"record": format!("dashboard:panel_{i}"), "expr": e})
        })
        .collect();
    let file =
        std::env::temp_dir().join(format!("mftd-dashboard-{}.rules.json", std::process::id()));
    std::fs::write(
        &file,
        serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    promtool(&["check", "rules", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    // Every metric name the docs use is one mftd exports.
    let alerts_text = std::fs::read_to_string(&alerts).unwrap();
    let exported: std::collections::HashSet<&str> = scraped
        .keys()
        .map(|k| k.split('{').next().unwrap())
        .chain(written.iter().map(String::as_str))
        .collect();
    for text in exprs
        .iter()
        .map(String::as_str)
        .chain([alerts_text.as_str()])
    {
        for (at, _) in text.match_indices("mftd_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exported.contains(name.as_str()),
                "{name} is used in docs/monitoring but not exported"
            );
        }
    }
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Headless Chromium as root needs `--no-sandbox`; the profile is private.
fn chromium(profile: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium (Debian package chromium) is installed")
}

#[test]
fn the_status_page_shows_a_hostile_file_name_as_text_in_chromium() {
    let w = world(None);
    let hostile = "<img src=x onerror=\"document.title='PWNED'\"><svg onload=\"document.title='PWNED'\">report.txt";
    w.upload(hostile, 4096);
    w.readyz_becomes(200);
    let page = format!("{}/", w.admin);
    let profile = w.dir.path().join("chromium");
    let out = chromium(
        &profile,
        &["--virtual-time-budget=3000", "--dump-dom", page.as_str()],
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<title>mftd node_1</title>"),
        "the page loaded and no script renamed it:\n{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dom.contains("PWNED\n") && !dom.contains("<title>PWNED"),
        "{dom}"
    );
    assert!(!dom.contains("<img"), "an element was injected:\n{dom}");
    assert!(
        dom.contains("&lt;img src=x onerror=\"document.title='PWNED'\"&gt;"),
        "the name is shown as text:\n{dom}"
    );
    assert!(dom.contains("<span class=\"ok\">ready</span>"), "{dom}");
    // A screenshot for docs/operations.md (kept when MFTD_SCREENSHOT names a path).
    let shot = std::env::var("MFTD_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| w.dir.path().join("status.png"));
    let out = chromium(
        &profile,
        &[
            "--window-size=1280,900",
            &format!("--screenshot={}", shot.display()),
            page.as_str(),
        ],
    );
    let png = std::fs::read(&shot).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG"),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The status page's file server checks log in over SSH of their own. Page
/// loads, however many and however concurrent, run them at most once per
/// `check_interval` (500 ms here): a reload loop on the admin port must not
/// become a stream of SSH logins on the file server.
#[test]
fn status_page_loads_do_not_become_a_stream_of_ssh_logins() {
    let w = world(None);
    let logins = || w.sshd.log().matches("Accepted publickey").count();
    let (status, page) = w.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("Checked 0 s ago"), "{page}");
    let before = logins();
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..3 {
                    let (status, page) = w.get("/");
                    assert_eq!(status, 200);
                    assert!(page.contains("FAILED") || page.contains("OK"), "{page}");
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let made = logins() - before;
    // One run of the checks per 500 ms window at most, plus the node's own
    // pool connections; 24 page loads without the cache would be 24 logins.
    let allowed = (elapsed / 0.5).ceil() as usize + 2;
    assert!(
        made <= allowed && made < 24,
        "{made} SSH logins for 24 page loads in {elapsed:.2}s (allowed {allowed})"
    );
}
