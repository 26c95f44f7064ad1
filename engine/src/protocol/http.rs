//! Plain HTTP on the WebSocket listener: a request without `Upgrade` is answered, not
//! refused (metrics, health checks, a page and its script).
//!
//! [`handshake::parse`](super::handshake::parse) reads every request head; one that carries
//! no `Upgrade` header comes out as [`Parsed::Http`](super::handshake::Parsed::Http) with a
//! [`Request`], checked here. The application answers it with a [`Response`], which
//! [`response_into`] encodes. One request per connection: every response says
//! `Connection: close`, and the connection closes after it (no keep-alive, no pipelining),
//! so a body the client sends is never read as a next request.
//!
//! # Contract
//! - **Never panics**, whatever the bytes; the head is bounded by the handshake's limits
//!   (size and time), which apply to plain requests alike.
//! - **Checks, in order:** method `GET` or `HEAD` (else 405 with `Allow: GET, HEAD`),
//!   origin-form target (else 400). HTTP/1.0 and HTTP/1.1 are both answered (health
//!   checkers still send 1.0), and `Host` is not required. A body (`Content-Length`,
//!   `Transfer-Encoding`) is allowed and ignored: the connection closes after the answer.
//! - **Not injectable.** Header names and values of a [`Response`] have control characters
//!   replaced by spaces, so an application cannot split the response by mistake.

#![forbid(unsafe_code)]

use bytes::Bytes;

use super::error::HandshakeError;

/// The methods a plain request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`: headers and body.
    Get,
    /// `HEAD`: the headers a `GET` would get (`Content-Length` included), no body.
    Head,
}

/// A plain HTTP request head (no `Upgrade` header), checked as the [module docs](self) say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Bytes of the request head, including the final blank line; a body may follow.
    pub head_len: usize,
    /// `GET` or `HEAD`.
    pub method: Method,
    /// The path of the request target, without the query.
    pub path: String,
    /// The query string after `?`, if any (not decoded).
    pub query: Option<String>,
    /// All headers, names lower-cased, values as sent (lossy UTF-8).
    pub headers: Vec<(String, String)>,
}

/// An answer to a plain request: status, content type, extra headers and body.
///
/// ```
/// use ringcast::protocol::http::{Method, Response, response_into};
///
/// let r = Response::text(200, "ok\n").header("Cache-Control", "no-store");
/// let mut out = Vec::new();
/// response_into(&r, Method::Head, &mut out);
/// let text = String::from_utf8(out).unwrap();
/// assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
/// assert!(text.contains("Content-Length: 3\r\n"));
/// assert!(text.ends_with("\r\n\r\n")); // HEAD: no body
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// Further headers, in order (`Content-Length` and `Connection` are added).
    pub headers: Vec<(&'static str, String)>,
    /// The body (sent for `GET`; its length is announced for `HEAD` too).
    pub body: Bytes,
}

impl Response {
    /// A response with this status, content type and body.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    /// `404 Not Found`, naming the path.
    pub fn not_found(path: &str) -> Self {
        Self::text(404, format!("no HTTP endpoint at {path}\n"))
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Appends `resp` to `out` as the answer to a `method` request: status line, headers
/// (`Content-Type`, `Content-Length`, `Connection: close`, then the response's own), blank
/// line, and the body unless the method is `HEAD`.
pub fn response_into(resp: &Response, method: Method, out: &mut Vec<u8>) {
    let status = resp.status;
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason_phrase(status),
        clean(resp.content_type),
        resp.body.len(),
    );
    out.extend_from_slice(head.as_bytes());
    for (name, value) in &resp.headers {
        out.extend_from_slice(clean(name).as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(clean(value).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if method == Method::Get {
        out.extend_from_slice(&resp.body);
    }
}

/// Checks a complete head that has no `Upgrade` header (called by the handshake parser,
/// which has checked its size and syntax).
pub(super) fn plain(
    req: &httparse::Request<'_, '_>,
    head_len: usize,
) -> Result<Request, HandshakeError> {
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => return Err(HandshakeError::HttpMethodNotAllowed),
    };
    let target = req.path.unwrap_or_default();
    if !target.starts_with('/') {
        return Err(HandshakeError::BadRequest(
            "request target must be a path starting with /",
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    Ok(Request {
        head_len,
        method,
        path: path.to_owned(),
        query,
        headers: req
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value).into_owned();
                (h.name.to_ascii_lowercase(), value)
            })
            .collect(),
    })
}

/// `s` with control characters (CR, LF among them) replaced by spaces.
fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}

/// The canonical reason phrase of `status`, or `Error` for one not listed here.
pub(super) fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::super::handshake::{HandshakeConfig, Parsed, parse};
    use super::*;

    fn parsed(head: &str) -> Parsed {
        parse(head.as_bytes(), &HandshakeConfig::default())
    }

    #[test]
    fn plain_requests_are_parsed() {
        let head = "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\n\r\nBODY";
        let Parsed::Http(req) = parsed(head) else {
            panic!("{:?}", parsed(head));
        };
        assert_eq!(req.head_len, head.len() - 4);
        assert_eq!((req.method, req.path.as_str()), (Method::Get, "/metrics"));
        assert_eq!(req.query.as_deref(), Some("x=1"));
        assert_eq!(req.headers[1], ("authorization".into(), "Bearer t".into()));
        // HTTP/1.0, no Host, HEAD, a body announced: all answered.
        let Parsed::Http(req) = parsed("HEAD / HTTP/1.0\r\nContent-Length: 4\r\n\r\n") else {
            panic!("HEAD over HTTP/1.0");
        };
        assert_eq!(req.method, Method::Head);
        // Incomplete: read more, as for an upgrade.
        assert_eq!(parsed("GET / HTTP/1.1\r\nHost: a\r\n"), Parsed::Need);
    }

    #[test]
    fn plain_refusals() {
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "BREW"] {
            let head = format!("{method} / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(
                parsed(&head),
                Parsed::Reject(HandshakeError::HttpMethodNotAllowed),
                "{method}"
            );
        }
        let Parsed::Reject(e) = parsed("GET http://a/ HTTP/1.1\r\n\r\n") else {
            panic!("absolute-form target accepted");
        };
        assert_eq!(e.status(), 400);
        // An upgrade request with another method keeps its own 405 (`Allow: GET`).
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"),
            Parsed::Reject(HandshakeError::MethodNotAllowed)
        );
        let mut out = Vec::new();
        super::super::handshake::reject_response_into(
            &HandshakeError::HttpMethodNotAllowed,
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
    }

    #[test]
    fn responses_get_and_head() {
        let r = Response::new(200, "text/html; charset=utf-8", "<p>hi</p>")
            .header("Cache-Control", "no-cache");
        let mut get = Vec::new();
        response_into(&r, Method::Get, &mut get);
        let mut head = Vec::new();
        response_into(&r, Method::Head, &mut head);
        let get = String::from_utf8(get).unwrap();
        let head = String::from_utf8(head).unwrap();
        assert_eq!(
            get,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: 9\r\nConnection: close\r\nCache-Control: no-cache\r\n\r\n<p>hi</p>"
        );
        assert_eq!(head, get.strip_suffix("<p>hi</p>").unwrap());
    }

    #[test]
    fn responses_are_not_injectable() {
        let r = Response::text(401, "no\n").header("WWW-Authenticate", "Bearer\r\nSet-Cookie: x=1");
        let mut out = Vec::new();
        response_into(&r, Method::Get, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("WWW-Authenticate: Bearer  Set-Cookie: x=1\r\n"),
            "{text}"
        );
        assert!(!text.contains("\nSet-Cookie"), "{text}");
    }
}
