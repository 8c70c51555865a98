//! The client's real address behind a load balancer.
//!
//! Only peers listed in `[http] trusted_proxies` are believed about anyone
//! else's address; from every other peer the socket address is the client.
//! From a trusted peer, two things are honoured, in this order:
//!
//! 1. **The PROXY protocol** (v1 text or v2 binary, HAProxy's `send-proxy`
//!    and `send-proxy-v2`), read once at the start of the connection, before
//!    TLS, within the first-byte deadline as a whole (a header trickled a
//!    byte at a time is cut at the deadline too). It is optional: a trusted
//!    peer that starts with anything else (a health check without the header)
//!    is served as itself. A header that starts but is malformed, truncated,
//!    oversized or late closes the connection. `LOCAL` (v2) and `UNKNOWN`
//!    (v1), and UNIX or unspecified families, leave the socket address.
//! 2. **`Forwarded` / `X-Forwarded-For`**, per request, only when the
//!    address so far (the PROXY source, or the socket peer without a header)
//!    is itself a trusted proxy. The chain is walked from the right: the
//!    first address that is not a trusted proxy is the client; an
//!    obfuscated, `unknown` or unreadable entry stops the walk at the last
//!    address known. When both headers are present and name different
//!    clients, neither is believed (a client may have forged the one its
//!    proxy does not write) and the address so far stays.
//!
//! From an untrusted peer nothing is read ahead: bytes that look like a PROXY
//! header are a bad HTTP request (hyper answers `400`), and forwarding
//! headers are ignored.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The longest PROXY v1 line, `\r\n` included (the specification's bound).
const V1_MAX: usize = 107;
/// The largest PROXY v2 address and TLV block accepted (the 16-byte fixed
/// part comes on top). HAProxy's own TLVs (ALPN, authority, unique id, SSL
/// details) fit many times over.
const V2_MAX_LEN: usize = 4096;
/// Forwarding entries looked at per request, from the right.
const MAX_HOPS: usize = 64;

const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";

// ---------------------------------------------------------------------------
// Trusted proxies

/// One address block: a network address and how many leading bits count.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Block {
    net: IpAddr,
    prefix: u8,
}

impl Block {
    fn parse(entry: &str) -> Result<Block, String> {
        let entry = entry.trim();
        let (addr, prefix) = match entry.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (entry, None),
        };
        let net: IpAddr = addr.parse().map_err(|_| {
            format!(
                "{entry:?} is not an IP address or a CIDR block (such as 10.0.0.0/8 or fd00::/8)"
            )
        })?;
        if let IpAddr::V6(v6) = net {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return Err(format!(
                    "{entry:?}: write an IPv4 address as IPv4 ({v4}); it also matches IPv4-mapped peers"
                ));
            }
        }
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(format!("{entry:?}: the prefix length must be 0 to {max}")),
                }
            }
            Some(_) => return Err(format!("{entry:?}: the prefix length must be 0 to {max}")),
        };
        let block = Block { net, prefix };
        if block.masked(net) != net {
            return Err(format!(
                "{entry:?} has address bits set past /{prefix}; write the network ({}/{prefix})",
                block.masked(net)
            ));
        }
        Ok(block)
    }

    /// `ip` with the bits past the prefix cleared.
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // A dual-stack listener sees an IPv4 peer as `::ffff:a.b.c.d`.
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && self.masked(ip) == self.net
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `[http] trusted_proxies`: the peers believed about their clients'
/// addresses. Empty (the default) trusts no one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Block>,
}

impl TrustedProxies {
    /// Parses addresses (`10.0.0.1`, `::1`) and CIDR blocks (`10.0.0.0/8`,
    /// `fd00::/8`); a block with bits set past its prefix is refused as a
    /// likely typo. The error names the entry and says what to write.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, String> {
        let blocks = entries
            .iter()
            .map(|e| Block::parse(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies { blocks })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }
}

/// The blocks as configured, comma-separated (`none` when empty), for the log.
impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.blocks.is_empty() {
            return f.write_str("none");
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{b}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// PROXY protocol

/// What a complete PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The connection is a client's, from this address.
    Client(SocketAddr),
    /// The proxy's own connection (v2 `LOCAL`, v1 `UNKNOWN`) or a family
    /// without an IP address: the socket address stands.
    Local,
}

/// How far the bytes at the start of a connection go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A complete header of `len` bytes.
    Header {
        /// What it says.
        header: Header,
        /// Its length; the connection's own bytes follow.
        len: usize,
    },
    /// Not a PROXY header: the bytes are the connection's own.
    NotProxy,
    /// A header may be starting: more bytes are needed.
    Incomplete,
}

/// A PROXY header that started but cannot be read. Each closes the
/// connection: a trusted proxy sends a whole, valid header or none.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Not what the specification allows.
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    /// Longer than allowed.
    #[error("PROXY header too long")]
    TooLong,
    /// The connection ended inside it.
    #[error("connection closed inside the PROXY header")]
    Truncated,
    /// It did not arrive whole within the first-byte deadline.
    #[error("PROXY header not received within http.first_byte_timeout")]
    TimedOut,
    /// The socket failed.
    #[error("reading the PROXY header")]
    Io(#[source] io::Error),
}

/// Reads a PROXY header (v1 or v2) at the start of `buf`, if there is one.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let starts = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        n > 0 && buf[..n] == sig[..n]
    };
    if buf.is_empty() {
        Ok(Parsed::Incomplete)
    } else if starts(V2_SIG) {
        parse_v2(buf)
    } else if starts(V1_PREFIX) {
        parse_v1(buf)
    } else {
        Ok(Parsed::NotProxy)
    }
}

/// `PROXY TCP4 <src> <dst> <sport> <dport>\r\n`, `TCP6` alike, or
/// `PROXY UNKNOWN …\r\n`; single spaces, at most [`V1_MAX`] bytes.
fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let len = end + 2;
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..end])
        .map_err(|_| ProxyError::Malformed("v1 line is not ASCII"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or("");
    if family == "UNKNOWN" {
        return Ok(Parsed::Header {
            header: Header::Local,
            len,
        });
    }
    let v4 = match family {
        "TCP4" => true,
        "TCP6" => false,
        _ => {
            return Err(ProxyError::Malformed(
                "v1 family is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let fields: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Malformed("v1 needs 4 fields after TCP4/TCP6"));
    };
    let ip = |s: &str| match s.parse::<IpAddr>() {
        Ok(ip) if ip.is_ipv4() == v4 => Ok(ip),
        _ => Err(ProxyError::Malformed(
            "v1 address is not of the family named",
        )),
    };
    let src = ip(src)?;
    ip(dst)?;
    let sport = v1_port(sport)?;
    v1_port(dport)?;
    Ok(Parsed::Header {
        header: Header::Client(SocketAddr::new(src, sport)),
        len,
    })
}

fn v1_port(s: &str) -> Result<u16, ProxyError> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ProxyError::Malformed("v1 port"));
    }
    s.parse().map_err(|_| ProxyError::Malformed("v1 port"))
}

/// The 12-byte signature, version/command, family/transport, a 16-bit
/// length, then addresses and TLVs (skipped).
fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.len() < 16 {
        return Ok(Parsed::Incomplete);
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 version is not 2"));
    }
    let command = ver_cmd & 0x0f;
    if command > 1 {
        return Err(ProxyError::Malformed("v2 command is not LOCAL or PROXY"));
    }
    if fam >> 4 > 3 || fam & 0x0f > 2 {
        return Err(ProxyError::Malformed("v2 address family or transport"));
    }
    if len > V2_MAX_LEN {
        return Err(ProxyError::TooLong);
    }
    let total = 16 + len;
    let Some(block) = buf.get(16..total) else {
        return Ok(Parsed::Incomplete);
    };
    let header = match (command, fam >> 4) {
        // LOCAL: the proxy's own connection (health checks).
        (0, _) => Header::Local,
        (_, 1) => {
            let a = block
                .get(..12)
                .ok_or(ProxyError::Malformed("v2 IPv4 block shorter than 12 bytes"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Header::Client(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        (_, 2) => {
            let a = block
                .get(..36)
                .ok_or(ProxyError::Malformed("v2 IPv6 block shorter than 36 bytes"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(octets);
            Header::Client(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC or UNIX: no IP address to take.
        _ => Header::Local,
    };
    Ok(Parsed::Header { header, len: total })
}

/// Reads a PROXY header from the start of `io` if one is there; returns what
/// it says (`None`: no header) and the bytes read past it, which belong to
/// the connection.
async fn read_header<T: AsyncRead + Unpin>(
    io: &mut T,
) -> Result<(Option<Header>, Bytes), ProxyError> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        match parse(&buf)? {
            Parsed::Header { header, len } => {
                return Ok((Some(header), Bytes::from(buf).slice(len..)));
            }
            Parsed::NotProxy => return Ok((None, Bytes::from(buf))),
            Parsed::Incomplete => {}
        }
        let n = io.read(&mut chunk).await.map_err(ProxyError::Io)?;
        if n == 0 {
            return if buf.is_empty() {
                // Closed before a byte: nothing to serve, nothing to refuse.
                Ok((None, Bytes::new()))
            } else {
                Err(ProxyError::Truncated)
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The start of a connection from `peer`: when `trusted`, an optional PROXY
/// header is read (the whole of it within `wait`) and the client it names
/// becomes the address; otherwise nothing is read. Returns the stream (the
/// bytes read past the header replayed first) and the client's address,
/// IPv4-mapped addresses written as IPv4.
pub async fn accept<T: AsyncRead + Unpin>(
    mut io: T,
    peer: SocketAddr,
    trusted: bool,
    wait: Duration,
) -> Result<(Rewind<T>, SocketAddr), ProxyError> {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    if !trusted {
        return Ok((Rewind::new(io, Bytes::new()), canonical(peer)));
    }
    let (header, rest) = tokio::time::timeout(wait, read_header(&mut io))
        .await
        .map_err(|_| ProxyError::TimedOut)??;
    let client = match header {
        Some(Header::Client(a)) => a,
        Some(Header::Local) | None => peer,
    };
    Ok((Rewind::new(io, rest), canonical(client)))
}

/// A stream that first yields bytes already read from it.
pub struct Rewind<T> {
    pre: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    /// `inner`, with `pre` read before it.
    pub fn new(inner: T, pre: Bytes) -> Self {
        Rewind { pre, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pre.has_remaining() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------
// Forwarded / X-Forwarded-For

/// The client of a request that arrived from `from` (the PROXY source, or
/// the socket peer): `from` itself unless it is a trusted proxy, in which
/// case the forwarding headers are walked (see the module documentation).
pub fn forwarded_client(trusted: &TrustedProxies, from: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !trusted.contains(from) {
        return from;
    }
    let forwarded = chain(headers, http::header::FORWARDED, forwarded_hops);
    let xff = chain(headers, "x-forwarded-for", xff_hops);
    match (forwarded, xff) {
        (None, None) => from,
        (Some(hops), None) | (None, Some(hops)) => walk(trusted, from, &hops),
        (Some(f), Some(x)) => {
            let (a, b) = (walk(trusted, from, &f), walk(trusted, from, &x));
            if a == b {
                a
            } else {
                tracing::info!(
                    forwarded = %a,
                    x_forwarded_for = %b,
                    "Forwarded and X-Forwarded-For name different clients; neither is believed"
                );
                from
            }
        }
    }
}

/// Every value of header `name`, in order, as one chain of hops (`None`
/// for an address that could not be read); `None` when the header is absent.
fn chain(
    headers: &HeaderMap,
    name: impl http::header::AsHeaderName,
    hops_of: fn(&str, &mut Vec<Option<IpAddr>>),
) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    let mut any = false;
    for value in headers.get_all(name) {
        any = true;
        match value.to_str() {
            Ok(v) => hops_of(v, &mut hops),
            // Not visible ASCII: nothing in it can be trusted to split right.
            Err(_) => hops.push(None),
        }
    }
    any.then_some(hops)
}

/// From the right, skip trusted proxies; the first address that is not one
/// is the client. An unreadable hop ends the walk at the last address known
/// (whoever reported the unreadable one).
fn walk(trusted: &TrustedProxies, from: IpAddr, hops: &[Option<IpAddr>]) -> IpAddr {
    let mut current = from;
    for hop in hops.iter().rev().take(MAX_HOPS) {
        match *hop {
            None => return current,
            Some(ip) => {
                current = ip;
                if !trusted.contains(ip) {
                    return current;
                }
            }
        }
    }
    current
}

/// `X-Forwarded-For: client, proxy1, proxy2`.
fn xff_hops(value: &str, out: &mut Vec<Option<IpAddr>>) {
    out.extend(value.split(',').map(|entry| node(entry.trim())));
}

/// RFC 7239 `Forwarded: for=192.0.2.60;proto=http, for="[2001:db8::1]:80"`:
/// comma-separated elements of `;`-separated `key=value` pairs, values
/// tokens or quoted strings. Each element's one `for=` is a hop; an element
/// without one, with two, or with any pair that does not read (an unclosed
/// quote above all: it swallows whatever a proxy appended after it) is
/// unreadable.
fn forwarded_hops(value: &str, out: &mut Vec<Option<IpAddr>>) {
    for element in split_unquoted(value, b',') {
        out.push(element_for(element));
    }
}

fn element_for(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        if pair.trim().is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=')?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || !key.bytes().all(is_tchar) {
            return None;
        }
        let value = match value.strip_prefix('"') {
            Some(_) => unquote(value)?,
            // A token; `:` and brackets too, as some proxies leave them unquoted.
            None if value.bytes().all(|c| is_tchar(c) || b":[]".contains(&c)) => value.to_owned(),
            None => return None,
        };
        if key.eq_ignore_ascii_case("for") {
            if found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    node(&found?)
}

/// `s` split at each `sep` outside a quoted string (`\` escapes inside one).
/// An unclosed quote runs to the end, so it can only make its own part
/// unreadable, never move a separator after it.
fn split_unquoted(s: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.bytes().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && c == b'\\' {
            escaped = true;
        } else if c == b'"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// RFC 9110 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// A quoted string (`v` starts with `"`) without its quotes and escapes;
/// `None` for an unclosed quote or text after the closing one.
fn unquote(v: &str) -> Option<String> {
    let inner = v.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

/// An address with an optional port: `192.0.2.1`, `192.0.2.1:80`,
/// `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`; an obfuscated port
/// (`:_x`) counts as none. `unknown`, `_hidden` and anything else: `None`.
/// IPv4-mapped addresses come out as IPv4.
fn node(s: &str) -> Option<IpAddr> {
    let port_ok =
        |p: &str| p.starts_with('_') || (!p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok());
    let ip = if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(port_ok)) {
            return None;
        }
        IpAddr::V6(ip.parse().ok()?)
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else {
        let (ip, port) = s.split_once(':')?;
        if !port_ok(port) {
            return None;
        }
        IpAddr::V4(ip.parse().ok()?)
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(list).unwrap()
    }

    // --- trusted_proxies

    #[test]
    fn trusted_proxies_parse_addresses_and_blocks() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8", "0.0.0.0/0"]);
        assert!(t.contains(ip("127.0.0.1")));
        assert!(t.contains(ip("10.255.0.3")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("fdab::1")));
        // A dual-stack listener's view of an IPv4 peer.
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        let t = trusted(&["10.0.0.0/8"]);
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(!t.contains(ip("::a00:1")));
        assert!(!t.contains(ip("::1")));
        let t = trusted(&["::/0"]);
        assert!(t.contains(ip("2001:db8::1")));
        assert!(!t.contains(ip("10.0.0.1")));
        assert!(!TrustedProxies::default().contains(ip("127.0.0.1")));
        assert_eq!(TrustedProxies::default().to_string(), "none");
        assert_eq!(
            trusted(&["127.0.0.1", " fd00::/8 "]).to_string(),
            "127.0.0.1/32, fd00::/8"
        );
    }

    #[test]
    fn trusted_proxies_refuse_what_is_not_a_block() {
        for bad in [
            "",
            "localhost",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.1/8",
            "10.0.0.0/8/8",
            "[::1]",
            "10.0.0.0/-1",
            "fe80::1%eth0",
            "::ffff:10.0.0.1",
        ] {
            assert!(TrustedProxies::parse(&[bad]).is_err(), "{bad:?}");
        }
        let e = TrustedProxies::parse(&["10.0.0.1/8"]).unwrap_err();
        assert!(e.contains("10.0.0.0/8"), "{e}");
        let e = TrustedProxies::parse(&["::ffff:10.0.0.1"]).unwrap_err();
        assert!(e.contains("(10.0.0.1)"), "{e}");
    }

    // --- PROXY v1

    fn header(buf: &[u8]) -> (Header, usize) {
        match parse(buf).unwrap() {
            Parsed::Header { header, len } => (header, len),
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        let mut with_request = line.to_vec();
        with_request.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            header(&with_request),
            (Header::Client(sa("192.0.2.1:56324")), line.len())
        );
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 443\r\n";
        assert_eq!(
            header(line),
            (Header::Client(sa("[2001:db8::1]:65535")), line.len())
        );
        for line in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
        ] {
            assert_eq!(header(line), (Header::Local, line.len()));
        }
        // The longest possible line is accepted.
        let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), V1_MAX);
        assert_eq!(header(longest), (Header::Local, V1_MAX));
    }

    #[test]
    fn v1_truncated_is_incomplete_and_overlong_or_garbage_is_refused() {
        let full = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        for n in 1..full.len() {
            assert_eq!(parse(&full[..n]).unwrap(), Parsed::Incomplete, "{n}");
        }
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'a');
        assert!(matches!(parse(&long), Err(ProxyError::TooLong)));
        long.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&long), Err(ProxyError::TooLong)));
        for bad in [
            &b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n"[..],
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 x\r\n",
            b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 +1 443\r\n",
            b"PROXY TCP4  192.0.2.1 198.51.100.2 1 443\r\n",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 1 443 \r\n",
            b"PROXY UDP4 192.0.2.1 198.51.100.2 1 443\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 192.0.2.\xff 198.51.100.2 1 443\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn not_a_header_is_left_alone() {
        for start in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PUT /x HTTP/1.1\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00",
            b"PROX\0",
            b"\r\n\r\n\0\r\nQUIT!",
            b"\r\nGET",
        ] {
            assert_eq!(parse(start).unwrap(), Parsed::NotProxy, "{start:?}");
        }
        for start in [&b""[..], b"P", b"PR", b"\r\n"] {
            assert_eq!(parse(start).unwrap(), Parsed::Incomplete, "{start:?}");
        }
    }

    // --- PROXY v2

    fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(ver_cmd);
        h.push(fam);
        h.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    /// `send-proxy-v2`'s bytes for a TCP connection from `client`.
    fn v2_for(client: SocketAddr) -> Vec<u8> {
        let mut block = Vec::new();
        let fam = match client.ip() {
            IpAddr::V4(a) => {
                block.extend_from_slice(&a.octets());
                block.extend_from_slice(&[127, 0, 0, 1]);
                0x11
            }
            IpAddr::V6(a) => {
                block.extend_from_slice(&a.octets());
                block.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
                0x21
            }
        };
        block.extend_from_slice(&client.port().to_be_bytes());
        block.extend_from_slice(&443u16.to_be_bytes());
        v2(0x21, fam, &block)
    }

    fn v4_block() -> Vec<u8> {
        v2_for(sa("192.0.2.7:40000"))[16..].to_vec()
    }

    #[test]
    fn v2_ipv4_ipv6_with_tlvs() {
        let mut block = v4_block();
        // A TLV (PP2_TYPE_AUTHORITY) after the addresses is skipped.
        block.extend_from_slice(&[0x02, 0x00, 0x03, b'a', b'.', b'b']);
        let mut h = v2(0x21, 0x11, &block);
        let len = h.len();
        h.extend_from_slice(b"GET /");
        assert_eq!(header(&h), (Header::Client(sa("192.0.2.7:40000")), len));
        let h = v2_for(sa("[2001:db8::9]:1234"));
        assert_eq!(
            header(&h),
            (Header::Client(sa("[2001:db8::9]:1234")), h.len())
        );
    }

    #[test]
    fn v2_local_unspec_and_unix_keep_the_socket_address() {
        // LOCAL with and without an address block (HAProxy's health checks).
        for h in [
            v2(0x20, 0x00, &[]),
            v2(0x20, 0x11, &v4_block()),
            v2(0x21, 0x00, &[]),
            v2(0x21, 0x31, &[0u8; 216]),
        ] {
            assert_eq!(header(&h), (Header::Local, h.len()));
        }
    }

    #[test]
    fn v2_truncated_oversized_and_malformed() {
        let h = v2(0x21, 0x11, &v4_block());
        for n in 1..h.len() {
            assert_eq!(parse(&h[..n]).unwrap(), Parsed::Incomplete, "{n}");
        }
        let mut big = V2_SIG.to_vec();
        big.extend_from_slice(&[0x21, 0x11]);
        big.extend_from_slice(&u16::try_from(V2_MAX_LEN + 1).unwrap().to_be_bytes());
        assert!(matches!(parse(&big), Err(ProxyError::TooLong)));
        for bad in [
            v2(0x11, 0x11, &v4_block()),       // version 1
            v2(0x31, 0x11, &v4_block()),       // version 3
            v2(0x22, 0x11, &v4_block()),       // command 2
            v2(0x21, 0x41, &v4_block()),       // family 4
            v2(0x21, 0x13, &v4_block()),       // transport 3
            v2(0x21, 0x11, &v4_block()[..11]), // short IPv4 block
            v2(0x21, 0x21, &v4_block()),       // IPv6 with an IPv4 block
        ] {
            assert!(
                matches!(parse(&bad), Err(ProxyError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    proptest! {
        /// Whatever arrives first on a connection, parsing never panics and
        /// never claims more bytes than it was given.
        #[test]
        fn any_bytes_parse_without_overrun(
            prefix in prop::sample::select(vec![&b""[..], V1_PREFIX, V2_SIG, b"PROXY TCP4 "]),
            rest in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut buf = prefix.to_vec();
            buf.extend_from_slice(&rest);
            if let Ok(Parsed::Header { len, .. }) = parse(&buf) {
                prop_assert!(len <= buf.len() && len <= 16 + V2_MAX_LEN);
            }
        }

        /// Every client address survives v1 and v2, and every proper prefix
        /// of a header is incomplete (never mistaken for HTTP).
        #[test]
        fn headers_round_trip_and_prefixes_wait(ip in any::<IpAddr>(), port in any::<u16>()) {
            let client = SocketAddr::new(ip, port);
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            let dst = if client.is_ipv4() { "127.0.0.1" } else { "::1" };
            let v1 = format!("PROXY {family} {} {dst} {} 443\r\n", client.ip(), client.port());
            let v2 = v2_for(client);
            for h in [v1.as_bytes(), &v2[..]] {
                prop_assert_eq!(header(h), (Header::Client(client), h.len()));
                for n in 1..h.len() {
                    prop_assert_eq!(parse(&h[..n]).unwrap(), Parsed::Incomplete);
                }
            }
        }

        /// Whatever a client writes into a forwarding header, the entry its
        /// trusted proxy appends decides: the client's own address, or (when
        /// the forgery makes the header unreadable) the proxy's — never an
        /// address of the client's choosing.
        #[test]
        fn forged_entries_never_pass_for_the_client(
            forged in prop_oneof![
                "[ -~]{0,60}",
                // The pieces a forgery is made of, so quotes, escapes and
                // separators meet a forged for= often.
                prop::collection::vec(
                    prop::sample::select(vec![
                        "for=9.9.9.9", "\"", ";", ",", "x=", "\\", " ", "=", "[::1]:80",
                    ]),
                    0..10,
                )
                .prop_map(|parts| parts.concat()),
            ],
            real in any::<u32>().prop_map(Ipv4Addr::from),
        ) {
            let t = trusted(&["127.0.0.1"]);
            let proxy = ip("127.0.0.1");
            let real = IpAddr::V4(real);
            prop_assume!(real != proxy);
            for (name, appended) in [
                ("x-forwarded-for", format!("{forged}, {real}")),
                ("forwarded", format!("{forged}, for={real}")),
                ("forwarded", format!("{forged}, for=\"{real}:80\"")),
            ] {
                let Ok(value) = HeaderValue::from_str(&appended) else { continue };
                let mut h = HeaderMap::new();
                h.insert(name, value);
                let got = forwarded_client(&t, proxy, &h);
                prop_assert!(got == real || got == proxy, "{name}: {appended:?} gave {got}");
            }
        }
    }

    // --- accept

    #[tokio::test]
    async fn accept_reads_the_header_only_from_trusted_peers_and_replays_the_rest() {
        let peer = sa("127.0.0.1:5000");
        let wait = Duration::from_secs(1);
        let bytes = b"PROXY TCP4 192.0.2.1 127.0.0.1 4000 443\r\nGET / HTTP/1.1\r\n\r\n";
        let (mut s, client) = accept(&bytes[..], peer, true, wait).await.unwrap();
        assert_eq!(client, sa("192.0.2.1:4000"));
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");
        // Untrusted: nothing consumed, the PROXY line reaches HTTP as is.
        let (mut s, client) = accept(&bytes[..], peer, false, wait).await.unwrap();
        assert_eq!(client, peer);
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, bytes);
        // Trusted without a header: served as itself, every byte kept.
        let plain = b"GET /readyz HTTP/1.1\r\n\r\n";
        let (mut s, client) = accept(&plain[..], peer, true, wait).await.unwrap();
        assert_eq!(client, peer);
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, plain);
        // v2 LOCAL: the socket address.
        let mut local = v2(0x20, 0x00, &[]);
        local.extend_from_slice(b"GET");
        let (_, client) = accept(&local[..], peer, true, wait).await.unwrap();
        assert_eq!(client, peer);
        // IPv4-mapped sources are written as IPv4, trusted or not.
        let mapped = b"PROXY TCP6 ::ffff:192.0.2.5 ::1 1 2\r\n";
        let (_, client) = accept(&mapped[..], peer, true, wait).await.unwrap();
        assert_eq!(client, sa("192.0.2.5:1"));
        let (_, client) = accept(&b""[..], sa("[::ffff:192.0.2.6]:7"), false, wait)
            .await
            .unwrap();
        assert_eq!(client, sa("192.0.2.6:7"));
        // Closed in the middle of a header, or garbage: refused.
        assert!(matches!(
            accept(&bytes[..20], peer, true, wait).await.err(),
            Some(ProxyError::Truncated)
        ));
        assert!(matches!(
            accept(&b"PROXY TCP9 x\r\n"[..], peer, true, wait)
                .await
                .err(),
            Some(ProxyError::Malformed(_))
        ));
        // Closed before a byte: nothing to refuse.
        let (_, client) = accept(&b""[..], peer, true, wait).await.unwrap();
        assert_eq!(client, peer);
    }

    #[tokio::test]
    async fn a_header_that_trickles_past_the_deadline_is_refused() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let trickle = tokio::spawn(async move {
            for b in b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n" {
                tokio::io::AsyncWriteExt::write_all(&mut tx, &[*b])
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tx
        });
        let r = accept(rx, sa("127.0.0.1:1"), true, Duration::from_millis(200)).await;
        assert!(matches!(r.err(), Some(ProxyError::TimedOut)));
        drop(trickle.await);
    }

    // --- Forwarded / X-Forwarded-For

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn client_of(list: &[(&'static str, &str)]) -> String {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        forwarded_client(&t, ip("127.0.0.1"), &headers(list)).to_string()
    }

    #[test]
    fn xff_right_most_untrusted_wins() {
        assert_eq!(client_of(&[]), "127.0.0.1");
        let xff = |v: &str| client_of(&[("x-forwarded-for", v)]);
        assert_eq!(xff("203.0.113.9"), "203.0.113.9");
        // The client's own (forged) entries sit left of what the proxy appended.
        assert_eq!(xff("1.1.1.1, 203.0.113.9"), "203.0.113.9");
        // Trusted hops are skipped; repeated headers are one list.
        assert_eq!(
            client_of(&[
                ("x-forwarded-for", "1.1.1.1, 198.51.100.4"),
                ("x-forwarded-for", "10.0.0.2")
            ]),
            "198.51.100.4"
        );
        // Every hop trusted: the left-most.
        assert_eq!(xff("10.0.0.3, 10.0.0.2"), "10.0.0.3");
        // Ports and brackets.
        assert_eq!(xff("203.0.113.9:1234"), "203.0.113.9");
        assert_eq!(xff("[2001:db8::1]:80"), "2001:db8::1");
        assert_eq!(xff("2001:db8::1"), "2001:db8::1");
        assert_eq!(xff("::ffff:203.0.113.9"), "203.0.113.9");
        // Unreadable entries stop the walk at the last address known.
        for unreadable in [
            "1.1.1.1, unknown",
            "",
            "1.1.1.1,",
            "1.2.3.4.5",
            "203.0.113.9:99999",
            "203.0.113.9:",
            "[2001:db8::1]x",
        ] {
            assert_eq!(xff(unreadable), "127.0.0.1", "{unreadable:?}");
        }
        assert_eq!(xff("1.1.1.1, garbage, 10.0.0.5"), "10.0.0.5");
    }

    #[test]
    fn forwarded_right_most_untrusted_wins() {
        let fwd = |v: &str| client_of(&[("forwarded", v)]);
        assert_eq!(
            fwd("for=192.0.2.60;proto=http;by=203.0.113.43"),
            "192.0.2.60"
        );
        assert_eq!(
            fwd(r#"for="[2001:db8:cafe::17]:4711""#),
            "2001:db8:cafe::17"
        );
        assert_eq!(fwd(r#"For="[2001:db8::1]""#), "2001:db8::1");
        assert_eq!(fwd("for=192.0.2.43, for=198.51.100.17"), "198.51.100.17");
        assert_eq!(
            fwd("for=192.0.2.43, for=198.51.100.17;by=10.0.0.1, for=10.0.0.9"),
            "198.51.100.17"
        );
        assert_eq!(fwd(r#"for="192.0.2.43:_port""#), "192.0.2.43");
        assert_eq!(fwd(r#"for="\1\9\2.0.2.1""#), "192.0.2.1");
        // Obfuscated, unknown, no for=, two for=, broken syntax: the proxy's address.
        for unreadable in [
            "for=_hidden",
            "for=unknown",
            "for=1.1.1.1, for=_hidden",
            "proto=https",
            "for=1.1.1.1;for=2.2.2.2",
            r#"for="1.1.1.1"#,
            r#"for="1.1.1.1"x"#,
            "for=1.1.1.1 x",
        ] {
            assert_eq!(fwd(unreadable), "127.0.0.1", "{unreadable:?}");
        }
        // A comma or semicolon inside quotes splits nothing.
        assert_eq!(
            fwd(r#"for=1.1.1.1;x="a,b", for=203.0.113.2"#),
            "203.0.113.2"
        );
        assert_eq!(fwd(r#"for=203.0.113.2;x="a,for=1.1.1.1""#), "203.0.113.2");
        assert_eq!(fwd(r#"for=203.0.113.2;x="a;for=1.1.1.1""#), "203.0.113.2");
        // An unclosed quote swallows what the proxy appended: the proxy's
        // address, not the for= written before the quote.
        assert_eq!(fwd(r#"for=9.9.9.9;x=", for=203.0.113.9"#), "127.0.0.1");
        assert_eq!(fwd(r#"for=9.9.9.9;x="a\", for=203.0.113.9"#), "127.0.0.1");
        // A bad element on the left does not hide a good one on the right.
        assert_eq!(fwd(r#"x=="", for=203.0.113.3"#), "203.0.113.3");
    }

    #[test]
    fn both_headers_must_agree() {
        assert_eq!(
            client_of(&[
                ("forwarded", "for=203.0.113.9"),
                ("x-forwarded-for", "203.0.113.9")
            ]),
            "203.0.113.9"
        );
        // A client forging the header its proxy does not write gets the proxy's address.
        assert_eq!(
            client_of(&[
                ("forwarded", "for=1.1.1.1"),
                ("x-forwarded-for", "203.0.113.9")
            ]),
            "127.0.0.1"
        );
    }

    #[test]
    fn untrusted_peers_are_never_forwarded() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=203.0.113.9"),
        ]);
        let t = trusted(&["127.0.0.1"]);
        assert_eq!(forwarded_client(&t, ip("127.0.0.4"), &h), ip("127.0.0.4"));
        let none = TrustedProxies::default();
        assert_eq!(
            forwarded_client(&none, ip("127.0.0.1"), &h),
            ip("127.0.0.1")
        );
    }
}
