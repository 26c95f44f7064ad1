//! The server side of the opening handshake (RFC 6455 §4.2).
//!
//! STUB: to be implemented with `httparse`, `sha1` and `base64`.

use super::error::HandshakeError;

/// Default limit of the request head (request line and headers).
pub const DEFAULT_MAX_HEAD_LEN: usize = 8 * 1024;

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
    /// The request is refused; answer with [`reject_response_into`] and close.
    Reject(HandshakeError),
}

/// Parses the request head at the start of `buf`.
pub fn parse(buf: &[u8], config: &HandshakeConfig) -> Parsed {
    let _ = (buf, config);
    todo!()
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (§4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let _ = key;
    todo!()
}

/// Appends the `101 Switching Protocols` response for `req` to `out`.
pub fn accept_response_into(req: &Request, out: &mut Vec<u8>) {
    let _ = (req, out);
    todo!()
}

/// Appends the HTTP error response for `err` (status, reason body, `Connection: close`) to
/// `out`.
pub fn reject_response_into(err: &HandshakeError, out: &mut Vec<u8>) {
    let _ = (err, out);
    todo!()
}
