//! Client side of the opening handshake (RFC 6455 §4.1).
//!
//! [`request_into`] writes the upgrade request for a random 16-byte key (offering a
//! subprotocol if asked) and returns the `Sec-WebSocket-Accept` value the server must
//! answer with; [`check_response`] reads the server's answer from the connection's buffer,
//! and insists the offered subprotocol was selected. Neither panics on server bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest as _, Sha1};
use thiserror::Error;

/// RFC 6455 §1.3.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest response head loadgen reads.
pub(crate) const MAX_HEAD: usize = 16 << 10;
/// Longest rejection body quoted in an error.
const MAX_BODY_QUOTE: usize = 400;

/// The `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub(crate) type Accept = [u8; 28];

/// Why the server's answer is not a valid upgrade.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// The server answered with another status than 101.
    #[error("handshake refused: {status_line}{}", if body.is_empty() { String::new() } else { format!(" — {body}") })]
    Refused {
        /// E.g. `HTTP/1.1 404 Not Found`.
        status_line: String,
        /// The response body (truncated).
        body: String,
    },
    /// A 101 that breaks §4.1 (missing upgrade headers, wrong accept key, …).
    #[error("invalid handshake response: {0}")]
    Invalid(&'static str),
    /// Not HTTP, or a head over [`MAX_HEAD`].
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// A 101 without the subprotocol loadgen offered: the server does not speak it.
    #[error(
        "the server did not select subprotocol {0} (no Sec-WebSocket-Protocol in its 101): it does not speak it; drop --protocol or upgrade the server"
    )]
    NoSubprotocol(&'static str),
}

/// The accept value for `key` (base64 of SHA-1 of key + GUID).
pub(crate) fn accept_for(key: &[u8]) -> Accept {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    let mut out = [0u8; 28];
    // SHA-1 is 20 bytes: base64 is always 28 characters.
    let _ = BASE64.encode_slice(sha.finalize(), &mut out);
    out
}

/// Appends a GET upgrade request for `path` with the 16-byte `nonce`, offering
/// `protocol` in `Sec-WebSocket-Protocol` if given, and returns the accept value to expect.
pub(crate) fn request_into(
    out: &mut Vec<u8>,
    host: &str,
    path: &str,
    nonce: [u8; 16],
    protocol: Option<&str>,
) -> Accept {
    let mut key = [0u8; 24];
    let _ = BASE64.encode_slice(nonce, &mut key);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    out.extend_from_slice(&key);
    if let Some(p) = protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(b"\r\nSec-WebSocket-Version: 13\r\nUser-Agent: ringcast-loadgen\r\n\r\n");
    accept_for(&key)
}

/// Reads the server's response from the front of `buf`.
///
/// Returns `Ok(None)` while more bytes are needed, `Ok(Some(n))` for a valid 101 whose
/// head is `n` bytes long (frames may follow in the same buffer). A refusal is complete
/// once its `Content-Length` body has arrived, or at `eof`. `offered` is the subprotocol
/// the request offered: the 101 must select exactly it (and none when none was offered).
///
/// # Errors
/// [`HandshakeError`] for a refusal or an invalid response.
pub(crate) fn check_response(
    buf: &[u8],
    expected: &Accept,
    eof: bool,
    offered: Option<&'static str>,
) -> Result<Option<usize>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(HandshakeError::Malformed(format!(
                "response head over {MAX_HEAD} bytes"
            )));
        }
        Ok(httparse::Status::Partial) if eof => {
            return Err(HandshakeError::Malformed(if buf.is_empty() {
                "connection closed before any response".to_owned()
            } else {
                format!(
                    "connection closed mid-response: {:?}",
                    String::from_utf8_lossy(&buf[..buf.len().min(MAX_BODY_QUOTE)])
                )
            }));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(HandshakeError::Malformed(format!(
                "{e}: {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(80)])
            )));
        }
    };
    let code = resp.code.unwrap_or(0);
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if code != 101 {
        let body_avail = &buf[head_len..];
        let content_length = header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let body = match content_length {
            Some(n) if body_avail.len() >= n => &body_avail[..n],
            Some(_) if !eof => return Ok(None),
            None if !eof => return Ok(None),
            _ => body_avail,
        };
        let body = String::from_utf8_lossy(&body[..body.len().min(MAX_BODY_QUOTE)]);
        return Err(HandshakeError::Refused {
            status_line: format!(
                "HTTP/1.{} {} {}",
                resp.version.unwrap_or(1),
                code,
                resp.reason.unwrap_or("")
            )
            .trim_end()
            .to_owned(),
            body: body.trim().to_owned(),
        });
    }
    let has_token = |name: &str, token: &str| {
        header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("upgrade", "websocket") {
        return Err(HandshakeError::Invalid("missing Upgrade: websocket"));
    }
    if !has_token("connection", "upgrade") {
        return Err(HandshakeError::Invalid("missing Connection: Upgrade"));
    }
    match header("sec-websocket-accept") {
        Some(v) if v.trim_ascii() == expected.as_slice() => {}
        Some(_) => {
            return Err(HandshakeError::Invalid(
                "Sec-WebSocket-Accept does not match the key",
            ));
        }
        None => return Err(HandshakeError::Invalid("missing Sec-WebSocket-Accept")),
    }
    if header("sec-websocket-extensions").is_some() {
        return Err(HandshakeError::Invalid(
            "server chose an extension loadgen did not offer",
        ));
    }
    match (header("sec-websocket-protocol"), offered) {
        (None, None) => {}
        (Some(v), Some(p)) if v.trim_ascii() == p.as_bytes() => {}
        (None, Some(p)) => return Err(HandshakeError::NoSubprotocol(p)),
        (Some(_), _) => {
            return Err(HandshakeError::Invalid(
                "server chose a subprotocol loadgen did not offer",
            ));
        }
    }
    Ok(Some(head_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";
    const RFC_ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn ok_response(accept: &[u8]) -> Vec<u8> {
        let mut r = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ".to_vec();
        r.extend_from_slice(accept);
        r.extend_from_slice(b"\r\n\r\n");
        r
    }

    #[test]
    fn rfc_example_accept() {
        assert_eq!(accept_for(RFC_KEY).as_slice(), RFC_ACCEPT);
    }

    #[test]
    fn request_shape() {
        let mut out = Vec::new();
        let accept = request_into(&mut out, "127.0.0.1:8080", "/sub/t0", [7; 16], None);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("GET /sub/t0 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .expect("key");
        assert_eq!(BASE64.decode(key).expect("base64").len(), 16);
        assert_eq!(accept, accept_for(key.as_bytes()));
        assert!(!text.contains("Sec-WebSocket-Protocol"));
        let mut out = Vec::new();
        request_into(
            &mut out,
            "h",
            "/sub/t0?since=41",
            [7; 16],
            Some("ringcast.v1"),
        );
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.starts_with("GET /sub/t0?since=41 HTTP/1.1\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Protocol: ringcast.v1\r\n"));
    }

    #[test]
    fn offered_subprotocol_must_be_selected() {
        let expected = accept_for(RFC_KEY);
        let plain = ok_response(RFC_ACCEPT);
        let head = plain.len();
        let v1 = String::from_utf8(plain.clone()).expect("ascii").replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Protocol: ringcast.v1\r\n\r\n",
        );
        let other = v1.replace("ringcast.v1", "chat");
        let v1 = v1.as_bytes();
        assert_eq!(
            check_response(v1, &expected, false, Some("ringcast.v1")),
            Ok(Some(v1.len()))
        );
        assert_eq!(
            check_response(&plain, &expected, false, Some("ringcast.v1")),
            Err(HandshakeError::NoSubprotocol("ringcast.v1"))
        );
        assert!(
            HandshakeError::NoSubprotocol("ringcast.v1")
                .to_string()
                .contains("did not select subprotocol ringcast.v1")
        );
        assert!(matches!(
            check_response(other.as_bytes(), &expected, false, Some("ringcast.v1")),
            Err(HandshakeError::Invalid(_))
        ));
        assert!(matches!(
            check_response(v1, &expected, false, None),
            Err(HandshakeError::Invalid(_))
        ));
        assert_eq!(
            check_response(&plain, &expected, false, None),
            Ok(Some(head))
        );
    }

    #[test]
    fn valid_101_and_trailing_frames() {
        let expected = accept_for(RFC_KEY);
        let mut resp = ok_response(RFC_ACCEPT);
        let head = resp.len();
        resp.extend_from_slice(&[0x82, 0x00]);
        assert_eq!(
            check_response(&resp, &expected, false, None),
            Ok(Some(head))
        );
        for cut in 0..head {
            assert_eq!(
                check_response(&resp[..cut], &expected, false, None),
                Ok(None),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn bad_accept_and_missing_headers() {
        let expected = accept_for(RFC_KEY);
        assert!(matches!(
            check_response(
                &ok_response(b"AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
                &expected,
                false,
                None
            ),
            Err(HandshakeError::Invalid(_))
        ));
        let no_upgrade = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n";
        assert_eq!(
            check_response(no_upgrade, &expected, false, None),
            Err(HandshakeError::Invalid("missing Upgrade: websocket"))
        );
        assert!(matches!(
            check_response(b"SSH-2.0-OpenSSH\r\n", &expected, false, None),
            Err(HandshakeError::Malformed(_))
        ));
        assert!(matches!(
            check_response(b"HTTP/1.1 101 Swi", &expected, true, None),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn refusal_quotes_status_and_body() {
        let expected = accept_for(RFC_KEY);
        let resp = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nno route!";
        assert_eq!(
            check_response(&resp[..resp.len() - 1], &expected, false, None),
            Ok(None)
        );
        let err = check_response(resp, &expected, false, None).expect_err("refused");
        assert_eq!(
            err,
            HandshakeError::Refused {
                status_line: "HTTP/1.1 404 Not Found".into(),
                body: "no route!".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "handshake refused: HTTP/1.1 404 Not Found — no route!"
        );
        // Without Content-Length the body runs to the end of the connection.
        let resp = b"HTTP/1.0 503 Busy\r\n\r\ntry later";
        assert_eq!(check_response(resp, &expected, false, None), Ok(None));
        assert!(matches!(
            check_response(resp, &expected, true, None),
            Err(HandshakeError::Refused { body, .. }) if body == "try later"
        ));
    }
}
