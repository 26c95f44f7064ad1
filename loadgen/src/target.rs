//! The server under test: `ws://HOST:PORT[/BASE]`, loopback only.
//!
//! loadgen opens thousands of connections as fast as it can; pointed at another host it
//! would be a denial-of-service tool, so only 127.0.0.0/8 (and `localhost`) is accepted.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use thiserror::Error;

/// A parsed target URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// Address to connect to.
    pub(crate) addr: SocketAddr,
    /// `Host` header value (as written in the URL).
    pub(crate) host: String,
    /// Path prefix without a trailing slash; `""` for none.
    pub(crate) base: String,
}

/// Why a URL was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum TargetError {
    /// Not `ws://`.
    #[error("unsupported URL scheme in '{0}': loadgen speaks plain ws:// only")]
    Scheme(String),
    /// Host or port unparsable.
    #[error("cannot parse '{0}' as ws://HOST:PORT[/PATH]")]
    Syntax(String),
    /// Not a loopback address.
    #[error(
        "refusing to load {0}: loadgen only targets loopback addresses (127.0.0.0/8 or localhost)"
    )]
    NotLoopback(String),
}

impl Target {
    /// Parses `ws://HOST[:PORT][/PATH]` (port 80 if absent).
    ///
    /// # Errors
    /// [`TargetError`] for another scheme, bad syntax or a non-loopback host.
    pub(crate) fn parse(url: &str) -> Result<Self, TargetError> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("ws") => rest,
            Some(_) => return Err(TargetError::Scheme(url.to_owned())),
            None => url,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(TargetError::Syntax(url.to_owned()));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') && !h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| TargetError::Syntax(url.to_owned()))?,
            ),
            Some(_) if authority.starts_with('[') => {
                return Err(TargetError::NotLoopback(authority.to_owned()));
            }
            Some(_) => return Err(TargetError::Syntax(url.to_owned())),
            None => (authority, 80),
        };
        let ip = if host.eq_ignore_ascii_case("localhost") {
            Ipv4Addr::LOCALHOST
        } else {
            match host.parse::<Ipv4Addr>() {
                Ok(ip) if ip.is_loopback() => ip,
                Ok(_) => return Err(TargetError::NotLoopback(host.to_owned())),
                Err(_) if host.chars().all(|c| c.is_ascii_digit() || c == '.') => {
                    return Err(TargetError::Syntax(url.to_owned()));
                }
                Err(_) => return Err(TargetError::NotLoopback(host.to_owned())),
            }
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        Ok(Self {
            addr: SocketAddr::V4(SocketAddrV4::new(ip, port)),
            host: authority.to_owned(),
            base: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The base path joined with `suffix` (which starts with `/`), or `/` for none.
    pub(crate) fn path(&self, suffix: &str) -> String {
        let p = format!("{}{}", self.base, suffix);
        if p.is_empty() { "/".to_owned() } else { p }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls() {
        let t = Target::parse("ws://127.0.0.1:8080").expect("ok");
        assert_eq!(t.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path("/sub"), "/sub");
        assert_eq!(t.path(""), "/");
        let t = Target::parse("ws://localhost:9/ws/").expect("ok");
        assert_eq!(t.addr, "127.0.0.1:9".parse().expect("addr"));
        assert_eq!(t.path("/pub/t0"), "/ws/pub/t0");
        assert_eq!(Target::parse("127.0.0.2:1").expect("ok").addr.port(), 1);
        assert_eq!(Target::parse("ws://127.9.9.9").expect("ok").addr.port(), 80);
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            Target::parse("ws://10.0.0.1:8080"),
            Err(TargetError::NotLoopback(_))
        ));
        assert!(matches!(
            Target::parse("ws://example.com/"),
            Err(TargetError::NotLoopback(_))
        ));
        assert!(matches!(
            Target::parse("ws://[::1]:80/"),
            Err(TargetError::NotLoopback(_))
        ));
        assert!(matches!(
            Target::parse("wss://127.0.0.1:443"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            Target::parse("ws://127.0.0.1:notaport"),
            Err(TargetError::Syntax(_))
        ));
        assert!(matches!(
            Target::parse("ws://127.0.0.999:1"),
            Err(TargetError::Syntax(_))
        ));
    }
}
