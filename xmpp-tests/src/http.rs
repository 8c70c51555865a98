//! A plain HTTP/1.1 GET and PUT for tests, so a status can be checked without a client library.

use std::io::{Read, Write};
use std::net::TcpStream;

/// GETs `url` (`http://host:port/path?query`) and returns the status (0 when
/// no answer came).
pub fn status(url: &str) -> u16 {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Ok(mut s) = TcpStream::connect(host) else {
        return 0;
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    status_of(&raw)
}

/// The whole answer to a GET of `url` with extra request headers (empty
/// when no answer came).
fn get_raw(url: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Ok(mut s) = TcpStream::connect(host) else {
        return Vec::new();
    };
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let _ = s.write_all(request.as_bytes());
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    raw
}

/// The status line and headers of a GET of `url` with extra request
/// headers, in lower case (empty when no answer came).
pub fn get_head(url: &str, headers: &[(&str, &str)]) -> String {
    let raw = get_raw(url, headers);
    let text = String::from_utf8_lossy(&raw);
    text.split_once("\r\n\r\n")
        .map_or(text.as_ref(), |(head, _)| head)
        .to_ascii_lowercase()
}

/// GETs `url` with extra request headers; returns the status (0 when no
/// answer came) and the body as text (responses with a Content-Length).
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let raw = get_raw(url, headers);
    if raw.is_empty() {
        return (0, String::new());
    }
    let text = String::from_utf8_lossy(&raw);
    let body = text
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, b)| b.to_owned());
    (status_of(&raw), body)
}

/// PUTs `body` to `path` on 127.0.0.1:`port` with the slot `token`;
/// (status, response body).
pub fn put(
    port: u16,
    path: &str,
    token: &str,
    body: &[u8],
    content_type: Option<&str>,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(60)));
    let ct = content_type.map_or_else(String::new, |t| format!("Content-Type: {t}\r\n"));
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{ct}\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    let body = text
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, b)| b.to_owned());
    (status_of(&reply), body)
}

/// The status code of a raw HTTP response (0 when there is none).
pub fn status_of(raw: &[u8]) -> u16 {
    String::from_utf8_lossy(raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
