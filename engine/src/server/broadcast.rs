//! The broadcast handler behind `ringcast serve`.
//!
//! - `/sub/{topic}[,{topic}…]` subscribes; plain `/sub` subscribes to the default topic.
//!   Subscribers change their topics at run time with text control messages:
//!   `{"op":"subscribe","topics":["BTC-USD"]}` / `{"op":"unsubscribe","topics":[…]}`,
//!   answered with `{"op":"subscribed","topics":[…]}` / `{"op":"unsubscribed",…}` or
//!   `{"op":"error","error":"…"}`; the connection stays open either way.
//! - `/pub/{topic}` (plain `/pub`: the default topic) publishes every message the client
//!   sends, unchanged and with its opcode, to every subscriber; it is not echoed back.
//!   With a publish token set, a publisher must present it as `Authorization: Bearer
//!   TOKEN` or `?token=TOKEN`, or gets `401`.

use serde::Deserialize;

use crate::fanout::topic::{DEFAULT_TOPIC, TopicName, TopicRules};
use crate::protocol::frame::OpCode;
use crate::reactor::handler::{Client, Handler, Message, Upgrade, UpgradeRequest};

/// Subscribers on `/sub…`, publishers on `/pub…`.
#[derive(Debug, Clone, Default)]
pub struct Broadcast {
    /// Token publishers must present; `None` lets anyone publish.
    pub publish_token: Option<String>,
    /// Topic name rules (checked here for path topics, and again on subscribe).
    pub rules: TopicRules,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    op: String,
    #[serde(default)]
    topics: Vec<String>,
}

impl Broadcast {
    fn authorised(&self, req: &UpgradeRequest<'_>) -> Result<(), Upgrade> {
        let Some(want) = &self.publish_token else {
            return Ok(());
        };
        let bearer = req
            .header("authorization")
            .and_then(|v| v.trim().strip_prefix("Bearer "))
            .map(|t| t.trim().to_owned());
        let given = bearer.or_else(|| req.query_param("token"));
        match given {
            Some(t) if constant_time_eq(t.as_bytes(), want.as_bytes()) => Ok(()),
            Some(_) => Err(reject(401, "invalid publish token")),
            None => Err(reject(
                401,
                "publishing requires a token (Authorization: Bearer TOKEN or ?token=TOKEN)",
            )),
        }
    }
}

fn reject(status: u16, reason: &str) -> Upgrade {
    Upgrade::Reject {
        status,
        reason: reason.to_owned(),
    }
}

/// Compares without an early exit, so the time taken does not reveal the prefix matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Handler for Broadcast {
    fn on_upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
        let (kind, rest) = match req.path.strip_prefix("/sub") {
            Some(rest) => ("sub", rest),
            None => match req.path.strip_prefix("/pub") {
                Some(rest) => ("pub", rest),
                None => ("", ""),
            },
        };
        let topics: Vec<String> = match rest {
            "" | "/" => vec![DEFAULT_TOPIC.to_owned()],
            r if r.starts_with('/') => r[1..].split(',').map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        if kind.is_empty() || topics.is_empty() {
            return reject(
                404,
                &format!(
                    "no endpoint at {} (subscribe on /sub or /sub/TOPIC[,TOPIC…], publish on /pub or /pub/TOPIC)",
                    req.path
                ),
            );
        }
        for t in &topics {
            if let Err(e) = self.rules.check(t) {
                return reject(400, &format!("topic '{t}': {e}"));
            }
        }
        if kind == "sub" {
            if topics.len() > self.rules.max_per_connection {
                return reject(
                    400,
                    &format!("more than {} topics", self.rules.max_per_connection),
                );
            }
            return Upgrade::Accept {
                topics,
                publish_to: None,
            };
        }
        if topics.len() != 1 {
            return reject(400, "a publisher publishes to exactly one topic");
        }
        if let Err(r) = self.authorised(req) {
            return r;
        }
        Upgrade::Accept {
            topics: Vec::new(),
            publish_to: Some(TopicName::new(&topics[0])),
        }
    }

    fn on_message(&self, client: &mut Client<'_>, msg: Message<'_>) {
        if let Some(topic) = client.publish_topic().cloned() {
            let (op, payload) = match msg {
                Message::Text(t) => (OpCode::Text, t.as_bytes()),
                Message::Binary(b) => (OpCode::Binary, b),
            };
            let _ = client.publish(&topic, op, payload);
            return;
        }
        let Message::Text(text) = msg else {
            return error(client, "subscribers send text control messages, not binary");
        };
        let ctl: Control = match serde_json::from_str(text) {
            Ok(c) => c,
            Err(e) => return error(client, &format!("bad JSON: {e}")),
        };
        let subscribe = match ctl.op.as_str() {
            "subscribe" => true,
            "unsubscribe" => false,
            other => {
                return error(
                    client,
                    &format!("unknown op '{other}' (use subscribe or unsubscribe)"),
                );
            }
        };
        if ctl.topics.is_empty() {
            return error(client, "no topics given");
        }
        let mut done = Vec::with_capacity(ctl.topics.len());
        for t in &ctl.topics {
            if subscribe {
                if let Err(e) = client.subscribe(t) {
                    return error(client, &format!("topic '{t}': {e}"));
                }
            } else {
                client.unsubscribe(t);
            }
            done.push(t.as_str());
        }
        let op = if subscribe {
            "subscribed"
        } else {
            "unsubscribed"
        };
        let ack = serde_json::json!({ "op": op, "topics": done });
        client.send_text(&ack.to_string());
    }
}

fn error(client: &mut Client<'_>, message: &str) {
    let msg = serde_json::json!({ "op": "error", "error": message });
    client.send_text(&msg.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(b: &Broadcast, path: &str, query: Option<&str>, auth: Option<&str>) -> Upgrade {
        let headers: Vec<(String, String)> = auth
            .map(|a| vec![("authorization".to_owned(), a.to_owned())])
            .unwrap_or_default();
        b.on_upgrade(&UpgradeRequest {
            path,
            query,
            headers: &headers,
        })
    }

    fn status(u: &Upgrade) -> u16 {
        match u {
            Upgrade::Accept { .. } => 101,
            Upgrade::Reject { status, .. } => *status,
        }
    }

    #[test]
    fn routes() {
        let b = Broadcast::default();
        assert_eq!(
            upgrade(&b, "/sub", None, None),
            Upgrade::Accept {
                topics: vec!["default".into()],
                publish_to: None
            }
        );
        assert_eq!(
            upgrade(&b, "/sub/BTC-USD,ETH-USD", None, None),
            Upgrade::Accept {
                topics: vec!["BTC-USD".into(), "ETH-USD".into()],
                publish_to: None
            }
        );
        assert_eq!(
            upgrade(&b, "/pub", None, None),
            Upgrade::Accept {
                topics: vec![],
                publish_to: Some(TopicName::new("default"))
            }
        );
        assert_eq!(status(&upgrade(&b, "/", None, None)), 404);
        assert_eq!(status(&upgrade(&b, "/subway", None, None)), 404);
        assert_eq!(status(&upgrade(&b, "/sub/bad topic", None, None)), 400);
        assert_eq!(status(&upgrade(&b, "/sub/a,,b", None, None)), 400);
        assert_eq!(status(&upgrade(&b, "/pub/a,b", None, None)), 400);
    }

    #[test]
    fn publish_token() {
        let b = Broadcast {
            publish_token: Some("s3cret".into()),
            ..Broadcast::default()
        };
        assert_eq!(status(&upgrade(&b, "/pub/x", None, None)), 401);
        assert_eq!(
            status(&upgrade(&b, "/pub/x", Some("token=nope"), None)),
            401
        );
        assert_eq!(
            status(&upgrade(&b, "/pub/x", Some("token=s3cret"), None)),
            101
        );
        assert_eq!(
            status(&upgrade(&b, "/pub/x", None, Some("Bearer s3cret"))),
            101
        );
        assert_eq!(
            status(&upgrade(&b, "/pub/x", None, Some("Bearer s3cre"))),
            401
        );
        // Subscribing needs no token.
        assert_eq!(status(&upgrade(&b, "/sub/x", None, None)), 101);
    }
}
