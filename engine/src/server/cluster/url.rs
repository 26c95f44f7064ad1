//! Broker URLs: `nats://[user:password@ | token@]host[:port][,host[:port]…]` (the servers
//! of a NATS cluster, tried in turn) and `redis://[[user]:password@]host[:port][/db]`. Credentials come percent-encoded in the
//! user info (a password with `@`, `:` or `/` is written `%40`, `%3A`, `%2F`) and are never
//! shown: the URL a node logs, reports in its stats and names in errors has `***` for the
//! secret ([`redact`]), and [`Credentials`] prints no secret in `Debug`.

use std::fmt;

use super::ClusterError;

/// Which broker, where, and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Broker {
    /// `nats://host:port[,host:port…]` (default port 4222), JetStream enabled.
    Nats {
        /// The servers (host, port), tried in turn: one lost or unreachable, the node
        /// connects to the next.
        servers: Vec<(String, u16)>,
        /// `user:password@` (CONNECT `user`, `pass`) or `token@` (CONNECT `auth_token`).
        auth: Option<Credentials>,
    },
    /// `redis://host:port[/db]` (default port 6379).
    Redis {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// Database number.
        db: u32,
        /// `user:password@` (`AUTH user password`, Redis 6 ACLs) or `:password@`
        /// (`AUTH password`, `requirepass`).
        auth: Option<Credentials>,
    },
}

/// Credentials from a broker URL's user info.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// A token alone (NATS `nats://TOKEN@host`).
    Token(String),
    /// A password, with a user name or not (Redis `redis://:PASSWORD@host`).
    Password {
        /// The user name (empty: none).
        user: String,
        /// The password.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(***)"),
            Self::Password { user, .. } => f
                .debug_struct("Password")
                .field("user", user)
                .field("password", &"***")
                .finish(),
        }
    }
}

impl Broker {
    /// Parses a broker URL (see the module docs).
    ///
    /// # Errors
    /// [`ClusterError::Url`], naming what is wrong (the URL in it redacted).
    pub fn parse(url: &str) -> Result<Self, ClusterError> {
        let bad = |reason: &str| ClusterError::Url {
            url: redact(url),
            reason: reason.to_owned(),
        };
        let mut pieces = url.split(',');
        let first = Self::parse_one(pieces.next().unwrap_or_default(), &bad)?;
        let Self::Nats { mut servers, auth } = first else {
            return match pieces.next() {
                None => Ok(first),
                Some(_) => Err(bad("Redis takes one server")),
            };
        };
        // More NATS servers: `host:port` or `nats://host:port`, the credentials given once.
        for piece in pieces {
            let piece = piece.trim();
            let full = if piece.contains("://") {
                piece.to_owned()
            } else {
                format!("nats://{piece}")
            };
            match Self::parse_one(&full, &bad)? {
                Self::Nats {
                    servers: more,
                    auth: None,
                } => servers.extend(more),
                Self::Nats { .. } => return Err(bad("give the credentials once, first")),
                Self::Redis { .. } => return Err(bad("a NATS server list mixes in Redis")),
            }
        }
        Ok(Self::Nats { servers, auth })
    }

    /// Parses one server's URL.
    fn parse_one(url: &str, bad: &impl Fn(&str) -> ClusterError) -> Result<Self, ClusterError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, authority) = match authority.rsplit_once('@') {
            Some((u, a)) => (Some(u), a),
            None => (None, authority),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad("bad port"))?)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let auth = match userinfo {
            None => None,
            Some(u) => Some(credentials(u).ok_or_else(|| {
                bad("bad credentials: user:password or token, percent-encoded, not empty")
            })?),
        };
        match scheme {
            "nats" => {
                if !path.is_empty() {
                    return Err(bad("a NATS URL has no path"));
                }
                Ok(Self::Nats {
                    servers: vec![(host, port.unwrap_or(4222))],
                    auth,
                })
            }
            "redis" => {
                let db = if path.is_empty() {
                    0
                } else {
                    path.parse().map_err(|_| bad("bad database number"))?
                };
                if let Some(Credentials::Token(_)) = auth {
                    return Err(bad("Redis needs a password: redis://:PASSWORD@host or \
                         redis://USER:PASSWORD@host"));
                }
                Ok(Self::Redis {
                    host,
                    port: port.unwrap_or(6379),
                    db,
                    auth,
                })
            }
            _ => Err(bad("unknown scheme")),
        }
    }
}

/// `user:password` or `token`, percent-decoded; `None` if empty or not decodable.
fn credentials(userinfo: &str) -> Option<Credentials> {
    let auth = match userinfo.split_once(':') {
        Some((user, password)) => Credentials::Password {
            user: decode(user)?,
            password: decode(password)?,
        },
        None => Credentials::Token(decode(userinfo)?),
    };
    match &auth {
        Credentials::Token(t) if t.is_empty() => None,
        Credentials::Password { password, .. } if password.is_empty() => None,
        _ => Some(auth),
    }
}

/// Decodes `%XX` escapes (RFC 3986: `+` is itself); `None` for a bad escape or bytes that
/// are not UTF-8.
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `url` with the secret of each server's user info replaced by `***` (a user name is
/// kept).
pub(crate) fn redact(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    let scheme = scheme.map(|s| format!("{s}://")).unwrap_or_default();
    format!("{scheme}{shown}@{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nats(h: &str, p: u16, auth: Option<Credentials>) -> Broker {
        Broker::Nats {
            servers: vec![(h.into(), p)],
            auth,
        }
    }

    fn password(user: &str, password: &str) -> Option<Credentials> {
        Some(Credentials::Password {
            user: user.into(),
            password: password.into(),
        })
    }

    #[test]
    fn urls() {
        assert_eq!(
            Broker::parse("nats://127.0.0.1:4333"),
            Ok(nats("127.0.0.1", 4333, None))
        );
        assert_eq!(
            Broker::parse("nats://localhost"),
            Ok(nats("localhost", 4222, None))
        );
        assert_eq!(
            Broker::parse("redis://h:1/3"),
            Ok(Broker::Redis {
                host: "h".into(),
                port: 1,
                db: 3,
                auth: None,
            })
        );
        for bad in [
            "127.0.0.1:4222",
            "http://h:1",
            "nats://:1",
            "nats://h:x",
            "nats://h:1/a",
            "redis://h/x",
        ] {
            let e = Broker::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn credentials_in_urls() {
        assert_eq!(
            Broker::parse("nats://ann:s%40cr%3At+x@h:1"),
            Ok(nats("h", 1, password("ann", "s@cr:t+x")))
        );
        assert_eq!(
            Broker::parse("nats://tok3n@h"),
            Ok(nats("h", 4222, Some(Credentials::Token("tok3n".into()))))
        );
        assert_eq!(
            Broker::parse("redis://:pw@h/2"),
            Ok(Broker::Redis {
                host: "h".into(),
                port: 6379,
                db: 2,
                auth: password("", "pw"),
            })
        );
        for (bad, why) in [
            ("redis://onlyuser@h", "Redis needs a password"),
            ("nats://u:@h", "bad credentials"),
            ("nats://@h", "bad credentials"),
            ("nats://u:%zz@h", "bad credentials"),
        ] {
            let e = Broker::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // The secret is never shown: not in errors, not in Debug.
        let e = Broker::parse("redis://u:hunter2@h:x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("redis://u:***@h:x") && !e.contains("hunter2"),
            "{e}"
        );
        let b = Broker::parse("nats://u:hunter2@h").unwrap();
        assert!(!format!("{b:?}").contains("hunter2"));
        let t = Broker::parse("nats://hunter2@h").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn nats_server_lists() {
        let servers = |b: Broker| match b {
            Broker::Nats { servers, auth } => (servers, auth.is_some()),
            Broker::Redis { .. } => panic!("not NATS"),
        };
        assert_eq!(
            servers(Broker::parse("nats://u:p@a:1,b,nats://c:3").unwrap()),
            (
                vec![("a".into(), 1), ("b".into(), 4222), ("c".into(), 3)],
                true
            )
        );
        for (bad, why) in [
            ("redis://a,b", "Redis takes one server"),
            ("nats://a,nats://u:p@b", "give the credentials once"),
            ("nats://a,redis://b", "mixes in Redis"),
            ("nats://a,", "no host"),
            ("nats://a,b:x", "bad port"),
        ] {
            let e = Broker::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(redact("nats://u:p@a:1,b:2"), "nats://u:***@a:1,b:2");
        let e = Broker::parse("nats://a,nats://u:hunter2@b,x:hunter3@c")
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains("hunter"),
            "every server's secret is hidden: {e}"
        );
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("nats://h:1"), "nats://h:1");
        assert_eq!(redact("nats://tok@h:1"), "nats://***@h:1");
        assert_eq!(redact("redis://u:p@ss@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(redact("redis://:p@h"), "redis://:***@h");
        assert_eq!(redact("garbage"), "garbage");
    }
}
