//! The chat workload's client side, lean enough that the servers, not the
//! client, set the pace: a plaintext c2s session (SASL PLAIN, bind) that asks
//! for XEP-0363 slots, and an HTTP/1.1 keep-alive connection that PUTs and
//! GETs. Replies are read with a few string searches, not a parser: the
//! three servers under test produce well-formed XML, and the bench only needs
//! an `iq`'s id, its slot URLs and headers.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A logged-in c2s session.
pub struct XmppSession {
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: u64,
}

/// A slot as the server granted it.
pub struct Slot {
    pub put: String,
    pub get: String,
    pub headers: Vec<(String, String)>,
}

fn b64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of attribute `name` in the first tag starting at `tag`.
fn attr(xml: &str, tag: &str, name: &str) -> Option<String> {
    let start = xml.find(tag)?;
    let end = start + xml[start..].find('>')?;
    let head = &xml[start..end];
    for q in ['\'', '"'] {
        let key = format!(" {name}={q}");
        if let Some(i) = head.find(&key) {
            let rest = &head[i + key.len()..];
            return Some(unescape(&rest[..rest.find(q)?]));
        }
    }
    None
}

impl XmppSession {
    /// Connects to `addr`, authenticates `user@domain` and binds `resource`.
    pub async fn login(
        addr: &str,
        domain: &str,
        user: &str,
        password: &str,
        resource: &str,
    ) -> std::io::Result<XmppSession> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut s = XmppSession {
            stream,
            buf: Vec::new(),
            next_id: 0,
        };
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
        );
        s.send(&header).await?;
        s.read_until("</stream:features>").await?;
        let creds = b64(format!("\0{user}\0{password}").as_bytes());
        s.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{creds}</auth>"
        ))
        .await?;
        let reply = s
            .read_until_any(&["</success>", "<success", "</failure>"])
            .await?;
        if !reply.contains("success") {
            return Err(std::io::Error::other(format!("login refused: {reply}")));
        }
        s.send(&header).await?;
        s.read_until("</stream:features>").await?;
        s.send(&format!(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await?;
        s.read_until("</iq>").await?;
        Ok(s)
    }

    async fn send(&mut self, data: &str) -> std::io::Result<()> {
        self.stream.write_all(data.as_bytes()).await
    }

    /// Reads until `needle` has arrived; returns everything up to and
    /// including it and keeps the rest.
    async fn read_until(&mut self, needle: &str) -> std::io::Result<String> {
        self.read_until_any(&[needle]).await
    }

    async fn read_until_any(&mut self, needles: &[&str]) -> std::io::Result<String> {
        loop {
            let text = String::from_utf8_lossy(&self.buf);
            if let Some(end) = needles
                .iter()
                .filter_map(|n| text.find(n).map(|i| i + n.len()))
                .min()
            {
                let head = text[..end].to_owned();
                let consumed = head.len();
                self.buf.drain(..consumed);
                return Ok(head);
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Asks `service` for a slot; one request at a time per session.
    pub async fn slot(
        &mut self,
        service: &str,
        filename: &str,
        size: u64,
    ) -> std::io::Result<Slot> {
        self.next_id += 1;
        let id = format!("s{}", self.next_id);
        self.send(&format!(
            "<iq type='get' id='{id}' to='{service}'><request xmlns='urn:xmpp:http:upload:0' filename='{filename}' size='{size}' content-type='application/octet-stream'/></iq>"
        ))
        .await?;
        loop {
            let stanza = self.read_until("</iq>").await?;
            let Some(start) = stanza.rfind("<iq") else {
                continue;
            };
            let iq = &stanza[start..];
            if attr(iq, "<iq", "id").as_deref() != Some(id.as_str()) {
                continue;
            }
            let (Some(put), Some(get)) = (attr(iq, "<put", "url"), attr(iq, "<get", "url")) else {
                return Err(std::io::Error::other(format!("no slot: {iq}")));
            };
            let mut headers = Vec::new();
            let mut rest = iq;
            while let Some(i) = rest.find("<header ") {
                rest = &rest[i..];
                let name = attr(rest, "<header", "name").unwrap_or_default();
                let open = rest.find('>').map_or(0, |e| e + 1);
                let close = rest.find("</header>").unwrap_or(open);
                headers.push((name, unescape(&rest[open..close])));
                rest = &rest[close..];
            }
            return Ok(Slot { put, get, headers });
        }
    }
}

/// The parts of a URL the client needs.
fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .expect("the chat workload speaks plain HTTP");
    let slash = rest.find('/').unwrap_or(rest.len());
    (rest[..slash].to_owned(), rest[slash..].to_owned())
}

/// One HTTP/1.1 keep-alive connection (reopened when the server closes it).
#[derive(Default)]
pub struct HttpConn {
    stream: Option<(String, TcpStream)>,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    pub connects: u64,
}

/// What a request took.
pub struct Answer {
    pub status: u16,
    /// From the request's first byte written to the response's first byte.
    pub first_byte: Duration,
}

impl HttpConn {
    async fn connect(&mut self, host: &str) -> std::io::Result<&mut TcpStream> {
        if self.stream.as_ref().is_none_or(|(h, _)| h != host) {
            let s = TcpStream::connect(host).await?;
            s.set_nodelay(true)?;
            self.stream = Some((host.to_owned(), s));
            self.buf.clear();
            self.connects += 1;
        }
        Ok(&mut self.stream.as_mut().expect("connected").1)
    }

    /// One request; the response body is read and dropped.
    pub async fn request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> std::io::Result<Answer> {
        match self.try_request(method, url, headers, body).await {
            Ok(a) => Ok(a),
            // A keep-alive connection the server closed meanwhile: once more on a new one.
            Err(_) => {
                self.stream = None;
                self.try_request(method, url, headers, body).await
            }
        }
    }

    async fn try_request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> std::io::Result<Answer> {
        let (host, path) = split_url(url);
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mft-bench\r\n");
        if method == "PUT" {
            head.push_str(&format!(
                "Content-Length: {}\r\nContent-Type: application/octet-stream\r\n",
                body.len()
            ));
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let stream = self.connect(&host).await?;
        let started = Instant::now();
        stream.write_all(head.as_bytes()).await?;
        if !body.is_empty() {
            stream.write_all(body).await?;
        }
        let mut first_byte = None;
        // Response head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.read_more().await?;
            first_byte.get_or_insert_with(|| started.elapsed());
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        };
        let first_byte = first_byte.unwrap_or_else(|| started.elapsed());
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        self.buf.drain(..head_end);
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let close = field("connection:").is_some_and(|v| v.contains("close"));
        if field("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
            self.skip_chunked().await?;
        } else if let Some(len) = field("content-length:").and_then(|v| v.parse::<usize>().ok()) {
            self.skip(len).await?;
        } else if method != "HEAD" && status != 204 && status != 304 {
            // Body until close.
            while self.read_more().await? > 0 {
                self.buf.clear();
            }
            self.stream = None;
        }
        if close {
            self.stream = None;
        }
        Ok(Answer { status, first_byte })
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        let Some((_, stream)) = self.stream.as_mut() else {
            return Ok(0);
        };
        self.scratch.resize(256 * 1024, 0);
        let n = stream.read(&mut self.scratch).await?;
        self.buf.extend_from_slice(&self.scratch[..n]);
        Ok(n)
    }

    async fn skip(&mut self, mut len: usize) -> std::io::Result<()> {
        loop {
            let have = self.buf.len().min(len);
            self.buf.drain(..have);
            len -= have;
            if len == 0 {
                return Ok(());
            }
            // Body bytes go straight into the scratch buffer and are dropped.
            let Some((_, stream)) = self.stream.as_mut() else {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            };
            self.scratch.resize(256 * 1024, 0);
            let want = len.min(self.scratch.len());
            let n = stream.read(&mut self.scratch[..want]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            len -= n;
            if len == 0 {
                return Ok(());
            }
        }
    }

    async fn skip_chunked(&mut self) -> std::io::Result<()> {
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if self.read_more().await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&self.buf[..line_end])
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim(),
                16,
            )
            .map_err(std::io::Error::other)?;
            self.buf.drain(..line_end + 2);
            self.skip(size + 2).await?;
            if size == 0 {
                return Ok(());
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_slot_in_either_quote_style() {
        let iq = "<iq id=\"s1\" type=\"result\"><slot xmlns='urn:xmpp:http:upload:0'><put url='http://h/a?x=1&amp;y=2'><header name='Authorization'>Bearer t</header></put><get url=\"http://h/b\"/></slot></iq>";
        assert_eq!(attr(iq, "<iq", "id").as_deref(), Some("s1"));
        assert_eq!(
            attr(iq, "<put", "url").as_deref(),
            Some("http://h/a?x=1&y=2")
        );
        assert_eq!(attr(iq, "<get", "url").as_deref(), Some("http://h/b"));
        assert_eq!(b64(b"\0a\0b"), "AGEAYg==");
    }
}
