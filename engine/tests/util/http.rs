//! HTTP helpers of the handshake tests: raw upgrade requests and their responses.

#![allow(dead_code)]

use super::*;

/// An upgrade request to build, then to break on purpose.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) version: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl Request {
    /// The key of RFC 6455 §1.3, whose accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
    pub(crate) const DEFAULT_KEY: &'static str = "dGhlIHNhbXBsZSBub25jZQ==";

    /// A valid upgrade request for `target`.
    pub(crate) fn new(target: &str) -> Self {
        Self {
            method: "GET".into(),
            target: target.into(),
            version: "HTTP/1.1".into(),
            headers: [
                ("Host", "127.0.0.1"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", Self::DEFAULT_KEY),
                ("Sec-WebSocket-Version", "13"),
            ]
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        }
    }

    pub(crate) fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    pub(crate) fn version(mut self, version: &str) -> Self {
        self.version = version.into();
        self
    }

    /// Sets a header, replacing one of the same name (case-insensitive) in place.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(h) => h.1 = value.into(),
            None => self.headers.push((name.into(), value.into())),
        }
        self
    }

    /// The value of a header (case-insensitive name).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Removes a header.
    pub(crate) fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {} {}\r\n", self.method, self.target, self.version);
        for (name, value) in &self.headers {
            s.push_str(&format!("{name}: {value}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

/// A parsed HTTP response.
#[derive(Clone)]
pub(crate) struct HttpResponse {
    /// The minor version: 1 for HTTP/1.1.
    pub(crate) version: u8,
    pub(crate) status: u16,
    pub(crate) reason: String,
    /// Names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    /// The value of the first header of this name (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HTTP/1.{} {} {} {:?} body {:?}",
            self.version,
            self.status,
            self.reason,
            self.headers,
            { String::from_utf8_lossy(&self.body[..self.body.len().min(200)]) }
        )
    }
}
