//! The server side of the opening handshake (RFC 6455 §4.2).
//!
//! [`parse`] looks at whatever has arrived so far and answers [`Parsed::Need`] (read
//! more), [`Parsed::Accept`] (answer with [`accept_response_into`]; frame bytes may
//! follow at [`Request::head_len`]), [`Parsed::Http`] (a plain request, without
//! `Upgrade`: see [`super::http`]) or [`Parsed::Reject`] (answer with
//! [`reject_response_into`] and close).
//!
//! # Contract
//! - **Never panics**, whatever the bytes; every refusal is a typed [`HandshakeError`].
//! - **Bounded.** At most [`HandshakeConfig::max_head_len`] bytes are ever parsed, and at
//!   most [`MAX_HEADERS`] headers. `Need` is only returned while the buffered bytes are
//!   within the limit; past it, or for more headers, the answer is 431.
//! - **Stateless.** Call again with the grown buffer; the result for a given prefix never
//!   depends on how it was split into reads.
//!
//! # Checks, in order, and their statuses
//! | check                                                        | refusal |
//! |--------------------------------------------------------------|---------|
//! | head within `max_head_len`, at most [`MAX_HEADERS`] headers  | 431     |
//! | well-formed HTTP (request line, headers)                     | 400     |
//! | an `Upgrade` header: else a plain request ([`super::http`])  | —       |
//! | method `GET`                                                 | 405 (`Allow: GET`) |
//! | version `HTTP/1.1`                                           | 400     |
//! | origin-form target (starts with `/`)                         | 400     |
//! | no body: no `Transfer-Encoding`, every `Content-Length` is 0 | 400     |
//! | exactly one `Host`                                           | 400 (reason names it) |
//! | `Upgrade` lists `websocket`, `Connection` lists `upgrade`    | 400     |
//! | one `Sec-WebSocket-Version` (400, reason names it), `13`     | 426 (`Sec-WebSocket-Version: 13`) |
//! | one `Sec-WebSocket-Key` (reason names it), base64 of 16 bytes | 400    |
//! | `Origin`, when present and an allow-list is configured       | 403     |
//!
//! An upgrade request carries no content (RFC 6455 §4.1 describes a bare GET, and bytes
//! after the head are the first frames), so a request that announces a body is refused
//! rather than having the body read as frames. The headers the handshake depends on may
//! not be repeated: two `Host`, `Sec-WebSocket-Key` or `Sec-WebSocket-Version` fields
//! (whatever their values) are a 400 whose reason names the field.
//!
//! Token lists (`Upgrade`, `Connection`, `Sec-WebSocket-Protocol`) may be spread over
//! several headers and are compared case-insensitively, except subprotocols, which are
//! case-sensitive. The subprotocol is the first of [`HandshakeConfig::protocols`] the
//! client offered; no match is not an error, the response then names no protocol.

#![forbid(unsafe_code)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest as _, Sha1};

use super::error::HandshakeError;
use super::http;

/// Default limit of the request head (request line and headers).
pub const DEFAULT_MAX_HEAD_LEN: usize = 8 * 1024;

/// Most headers a request head may carry; more is answered with 431.
pub const MAX_HEADERS: usize = 64;

/// The GUID appended to the key before hashing (§1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the handshake accepts.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// Largest request head accepted; over it the answer is 431.
    pub max_head_len: usize,
    /// Subprotocols the server speaks, in order of preference.
    pub protocols: Vec<String>,
    /// When set, only these `Origin` values are accepted (403 otherwise); requests without
    /// an `Origin` header (non-browser clients) are accepted.
    pub allowed_origins: Option<Vec<String>>,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            max_head_len: DEFAULT_MAX_HEAD_LEN,
            protocols: Vec::new(),
            allowed_origins: None,
        }
    }
}

/// A valid upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Bytes of the request head, including the final CRLF CRLF; frame bytes may follow.
    pub head_len: usize,
    /// The path of the request target, without the query.
    pub path: String,
    /// The query string after `?`, if any (not decoded).
    pub query: Option<String>,
    /// The `Sec-WebSocket-Accept` value to answer with.
    pub accept: String,
    /// The subprotocol chosen from the client's offer, if any matched.
    pub protocol: Option<String>,
    /// All headers, names lower-cased, values as sent (lossy UTF-8).
    pub headers: Vec<(String, String)>,
}

/// The result of parsing what has arrived so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The head is incomplete; read more.
    Need,
    /// A valid upgrade request.
    Accept(Request),
    /// A plain HTTP request (no `Upgrade` header), for the application to answer.
    Http(http::Request),
    /// The request is refused; answer with [`reject_response_into`] and close.
    Reject(HandshakeError),
}

/// Parses the request head at the start of `buf`, which may hold only part of it, or
/// frame bytes after it. See the [module docs](self) for the checks.
pub fn parse(buf: &[u8], config: &HandshakeConfig) -> Parsed {
    match try_parse(buf, config) {
        Ok(Some(Head::Upgrade(req))) => Parsed::Accept(req),
        Ok(Some(Head::Plain(req))) => Parsed::Http(req),
        Ok(None) => Parsed::Need,
        Err(err) => Parsed::Reject(err),
    }
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (§4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    BASE64.encode(sha.finalize())
}

/// Appends the `101 Switching Protocols` response for `req` to `out`.
pub fn accept_response_into(req: &Request, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
    out.extend_from_slice(b"Connection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(req.accept.as_bytes());
    if let Some(protocol) = &req.protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends the HTTP error response for `err` (status, reason body, `Connection: close`) to
/// `out`.
///
/// The body is the error's `Display` text and a newline, with control characters replaced
/// by spaces. A [`HandshakeError::Refused`] status outside 400..=599 is sent as 500, so an
/// application cannot answer a refusal with `101` or `200` by mistake. An
/// [`HandshakeError::Unavailable`] refusal (503) carries `Retry-After: 1`.
pub fn reject_response_into(err: &HandshakeError, out: &mut Vec<u8>) {
    let status = match err.status() {
        s @ 400..=599 => s,
        _ => 500,
    };
    let mut body: String = err
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    body.push('\n');
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        http::reason_phrase(status),
        body.len(),
    );
    out.extend_from_slice(head.as_bytes());
    match err {
        HandshakeError::MethodNotAllowed => out.extend_from_slice(b"Allow: GET\r\n"),
        HandshakeError::HttpMethodNotAllowed => out.extend_from_slice(b"Allow: GET, HEAD\r\n"),
        HandshakeError::UnsupportedVersion => {
            out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n");
        }
        _ => {}
    }
    if matches!(err, HandshakeError::Unavailable(_)) {
        out.extend_from_slice(b"Retry-After: 1\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// A complete request head.
enum Head {
    Upgrade(Request),
    Plain(http::Request),
}

/// `Ok(None)` while the head is incomplete and within the limit.
fn try_parse(buf: &[u8], config: &HandshakeConfig) -> Result<Option<Head>, HandshakeError> {
    use HandshakeError::BadRequest;
    let limit = config.max_head_len;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // Never look past the limit: a head that does not end within it is too large.
    let head_len = match req.parse(&buf[..buf.len().min(limit)]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limit => {
            return Err(HandshakeError::HeadTooLarge(limit));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::TooManyHeaders(MAX_HEADERS));
        }
        Err(err) => return Err(BadRequest(http_error_reason(err))),
    };
    if values(req.headers, "Upgrade").next().is_none() {
        return http::plain(&req, head_len).map(|r| Some(Head::Plain(r)));
    }
    if req.method != Some("GET") {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if req.version != Some(1) {
        return Err(BadRequest("HTTP version must be 1.1"));
    }
    let target = req.path.unwrap_or_default();
    if !target.starts_with('/') {
        return Err(BadRequest("request target must be a path starting with /"));
    }
    let headers = &*req.headers;

    if values(headers, "Transfer-Encoding").next().is_some() {
        return Err(BadRequest(
            "upgrade request must not have a body (Transfer-Encoding present)",
        ));
    }
    if !values(headers, "Content-Length").all(is_zero) {
        return Err(BadRequest(
            "upgrade request must not have a body (Content-Length must be 0)",
        ));
    }
    if single(headers, "Host", "duplicate Host header")?.is_none() {
        return Err(BadRequest("missing Host header"));
    }
    if !has_token(headers, "Upgrade", "websocket") {
        return Err(BadRequest("Upgrade header must contain websocket"));
    }
    if !has_token(headers, "Connection", "upgrade") {
        return Err(BadRequest("Connection header must contain upgrade"));
    }
    match single(
        headers,
        "Sec-WebSocket-Version",
        "duplicate Sec-WebSocket-Version header",
    )? {
        None => return Err(BadRequest("missing Sec-WebSocket-Version")),
        Some(v) if v.trim_ascii() != b"13" => return Err(HandshakeError::UnsupportedVersion),
        Some(_) => {}
    }
    let key = single(
        headers,
        "Sec-WebSocket-Key",
        "duplicate Sec-WebSocket-Key header",
    )?
    .ok_or(BadRequest("missing Sec-WebSocket-Key"))?
    .trim_ascii();
    if !is_valid_key(key) {
        return Err(BadRequest("Sec-WebSocket-Key must be base64 of 16 bytes"));
    }
    if let Some(allowed) = &config.allowed_origins {
        let origin = single(headers, "Origin", "duplicate Origin header")?;
        let listed = |o: &[u8]| allowed.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(o));
        if origin.is_some_and(|o| !listed(o.trim_ascii())) {
            return Err(HandshakeError::OriginRefused);
        }
    }
    let protocol = config
        .protocols
        .iter()
        .find(|p| tokens(headers, "Sec-WebSocket-Protocol").any(|t| t == p.as_bytes()))
        .cloned();

    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    Ok(Some(Head::Upgrade(Request {
        head_len,
        path: path.to_owned(),
        query,
        accept: accept_key(key),
        protocol,
        headers: headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value).into_owned();
                (h.name.to_ascii_lowercase(), value)
            })
            .collect(),
    })))
}

/// The 400 reason for an `httparse` error.
fn http_error_reason(err: httparse::Error) -> &'static str {
    match err {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Token | httparse::Error::Status => "invalid request line",
        httparse::Error::Version => "HTTP version must be 1.1",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

/// Whether a `Content-Length` value announces no body: one or more `0` digits.
fn is_zero(value: &[u8]) -> bool {
    let digits = value.trim_ascii();
    !digits.is_empty() && digits.iter().all(|&b| b == b'0')
}

/// Whether `key` is the base64 of exactly 16 bytes (§4.1: a 16-byte nonce).
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24 && BASE64.decode(key).is_ok_and(|nonce| nonce.len() == 16)
}

/// The values of every header called `name` (case-insensitive).
fn values<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'static str,
) -> impl Iterator<Item = &'h [u8]> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The value of header `name`, refused with `duplicate` if it appears more than once.
fn single<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'static str,
    duplicate: &'static str,
) -> Result<Option<&'h [u8]>, HandshakeError> {
    let mut all = values(headers, name);
    let first = all.next();
    match all.next() {
        Some(_) => Err(HandshakeError::BadRequest(duplicate)),
        None => Ok(first),
    }
}

/// The non-empty, trimmed elements of the comma-separated lists in every header `name`.
fn tokens<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'static str,
) -> impl Iterator<Item = &'h [u8]> {
    values(headers, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether header `name` lists `token` (case-insensitive).
fn has_token(headers: &[httparse::Header<'_>], name: &'static str, token: &str) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests;
