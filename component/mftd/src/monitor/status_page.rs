//! The read-only status page: one server-rendered HTML document with no
//! scripts and no external assets. Everything that comes from users or
//! peers (file names, JIDs, error texts) goes through [`escape`]; the page
//! is also served under a CSP that forbids scripts, so a missed escape
//! still cannot run code.

use std::fmt::Write;
use std::time::Duration;

use mft_storage::log_query::{ChatTypeTotals, LogRow};

/// One check's outcome: `Ok(detail)` or `Err(reason)`.
#[derive(Clone)]
pub struct CheckLine {
    /// What was checked.
    pub name: String,
    /// Detail or reason.
    pub result: Result<String, String>,
}

/// What the transfer log says, when it could be read.
pub struct DatabaseView {
    /// The schema version applied.
    pub schema_version: i32,
    /// The newest schema this mftd knows.
    pub known_version: i32,
    /// Today's (UTC) completed transfers per chat type, all nodes.
    pub totals: Vec<ChatTypeTotals>,
    /// The newest rows, newest first.
    pub latest: Vec<LogRow>,
}

/// Everything the page shows.
pub struct StatusView {
    /// `node.name`.
    pub node: String,
    /// mftd's version.
    pub version: &'static str,
    /// How long this process has run.
    pub uptime: Duration,
    /// The component JID.
    pub component_jid: String,
    /// The XMPP link: active, connecting or standby.
    pub link: crate::node_state::Link,
    /// `None` when ready, else what is down.
    pub not_ready: Option<Vec<&'static str>>,
    /// The file server's name.
    pub file_server: String,
    /// The file server checks, in order.
    pub checks: Vec<CheckLine>,
    /// How long ago the checks ran (they are cached for `check_interval`).
    pub checks_age: Duration,
    /// `None` without a database; `Some(Err)` when it cannot be read.
    pub database: Option<Result<DatabaseView, String>>,
    /// The malware scanner, when `[scan]` is configured: `Ok(detail)` while
    /// it answers, `Err(reason)` when it does not.
    pub scanner: Option<Result<String, String>>,
    /// Uploads in flight.
    pub uploads_in_flight: i64,
    /// Downloads in flight.
    pub downloads_in_flight: i64,
}

/// HTML-escapes text for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn uptime_text(d: Duration) -> String {
    let s = d.as_secs();
    format!(
        "{}d {:02}h {:02}m {:02}s",
        s / 86_400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

fn state(ok: bool, yes: &str, no: &str) -> String {
    if ok {
        format!("<span class=\"ok\">{yes}</span>")
    } else {
        format!("<span class=\"bad\">{no}</span>")
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.ok{color:#146c2e;font-weight:600}.bad{color:#b3261e;font-weight:600}\
td.num{text-align:right;font-variant-numeric:tabular-nums}.small{color:#666;font-size:.9em}";

/// Renders the page.
pub fn render(v: &StatusView) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>mftd {node}</title><style>{STYLE}</style></head><body>\
         <h1>mftd status: node {node}</h1>\
         <table><tr><th>Version</th><td>{version}</td></tr>\
         <tr><th>Uptime</th><td>{uptime}</td></tr>\
         <tr><th>Component</th><td>{jid}</td></tr>\
         <tr><th>XMPP link</th><td>{link}</td></tr>\
         <tr><th>Ready</th><td>{ready}</td></tr>\
         {scanner}<tr><th>Transfers in flight</th><td>{up} uploads, {down} downloads</td></tr></table>",
        node = escape(&v.node),
        version = escape(v.version),
        uptime = uptime_text(v.uptime),
        jid = escape(&v.component_jid),
        link = state(
            v.link == crate::node_state::Link::Active,
            v.link.describe(),
            v.link.describe()
        ),
        ready = match &v.not_ready {
            None => state(true, "ready", ""),
            Some(why) => state(
                false,
                "",
                &escape(&format!("not ready: {}", why.join("; ")))
            ),
        },
        scanner = match &v.scanner {
            None => String::new(),
            Some(Ok(up)) => format!("<tr><th>Malware scanner</th><td>{}</td></tr>", state(true, &escape(up), "")),
            Some(Err(down)) => format!("<tr><th>Malware scanner</th><td>{}</td></tr>", state(false, "", &escape(down))),
        },
        up = v.uploads_in_flight,
        down = v.downloads_in_flight,
    );
    let _ = write!(
        h,
        "<h2>File server {}</h2><table><tr><th>Check</th><th>Result</th><th>Detail</th></tr>",
        escape(&v.file_server)
    );
    for c in &v.checks {
        let (ok, detail) = match &c.result {
            Ok(d) => (true, d),
            Err(e) => (false, e),
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.name),
            state(ok, "OK", "FAILED"),
            escape(detail)
        );
    }
    let _ = write!(
        h,
        "</table><p class=\"small\">Checked {} s ago (at most once per <code>admin.check_interval</code>).</p>",
        v.checks_age.as_secs()
    );
    h.push_str("<h2>Transfer log</h2>");
    match &v.database {
        None => {
            h.push_str("<p>No <code>[database]</code> configured: transfers are not logged.</p>")
        }
        Some(Err(e)) => {
            let _ = write!(h, "<p>{}</p>", state(false, "", &escape(e)));
        }
        Some(Ok(db)) => render_database(&mut h, db),
    }
    h.push_str("<p class=\"small\">Read-only view; metrics at <a href=\"metrics\">/metrics</a>, readiness at <a href=\"readyz\">/readyz</a>.</p></body></html>\n");
    h
}

fn render_database(h: &mut String, db: &DatabaseView) {
    let _ = write!(
        h,
        "<p>Schema version {} (this mftd knows {}) {}</p>",
        db.schema_version,
        db.known_version,
        state(
            db.schema_version >= db.known_version,
            "up to date",
            "migrations pending"
        )
    );
    h.push_str(
        "<h2>Today (UTC), all nodes</h2><table><tr><th>Chat type</th><th>Uploads</th>\
         <th>Bytes up</th><th>Downloads</th><th>Bytes down</th></tr>",
    );
    if db.totals.is_empty() {
        h.push_str("<tr><td colspan=\"5\">No transfers yet today.</td></tr>");
    }
    for t in &db.totals {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&t.chat_type),
            t.uploads,
            t.upload_bytes,
            t.downloads,
            t.download_bytes
        );
    }
    h.push_str(
        "</table><h2>Latest transfers</h2><table><tr><th>#</th><th>Time (UTC)</th>\
         <th>Method</th><th>JID</th><th>To</th><th>Chat</th><th>File</th>\
         <th>Size</th><th>Status</th><th>Client</th></tr>",
    );
    for r in &db.latest {
        let _ = write!(
            h,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            r.aft_index,
            escape(&r.date_time),
            escape(&r.method),
            escape(&r.jid),
            escape(&r.to_jid),
            escape(&r.chat_type),
            escape(&r.real_filename),
            r.file_size,
            r.http_status,
            escape(&r.client_address)
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(file: &str) -> StatusView {
        StatusView {
            node: "node_1".into(),
            version: "0.1.0",
            uptime: Duration::from_secs(90_061),
            component_jid: "upload.example.test".into(),
            link: crate::node_state::Link::Active,
            not_ready: None,
            scanner: Some(Err("down at unix:/x: <refused>".into())),
            file_server: "sftp://files".into(),
            checks: vec![CheckLine {
                name: "reachable".into(),
                result: Err("<b>refused</b>".into()),
            }],
            checks_age: Duration::from_secs(3),
            database: Some(Ok(DatabaseView {
                schema_version: 3,
                known_version: 3,
                totals: vec![],
                latest: vec![LogRow {
                    aft_index: 7,
                    date_time: "2026-11-26T10:00:00Z".into(),
                    method: "POST".into(),
                    jid: "a@example.test/\"x".into(),
                    to_jid: String::new(),
                    chat_type: "im".into(),
                    real_filename: file.into(),
                    filename: "r".into(),
                    file_size: 5,
                    http_status: 201,
                    bytes_sent: 5,
                    client_address: "127.0.0.1".into(),
                    sha256: String::new(),
                }],
            })),
            uploads_in_flight: 1,
            downloads_in_flight: 0,
        }
    }

    #[test]
    fn user_text_is_escaped_everywhere() {
        let page = render(&view("<script>alert(1)</script>.txt"));
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;.txt"));
        assert!(page.contains("a@example.test/&quot;x"));
        assert!(page.contains("1d 01h 01m 01s"));
        assert!(page.contains(
            "Malware scanner</th><td><span class=\"bad\">down at unix:/x: &lt;refused&gt;"
        ));
    }
}
