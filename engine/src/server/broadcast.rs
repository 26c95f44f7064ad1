//! The broadcast handler behind `ringcast serve`.
//!
//! - `/sub/{topic}[,{topic}…]` subscribes; plain `/sub` subscribes to the default topic.
//!   Subscribers change their topics at run time with text control messages:
//!   `{"op":"subscribe","topics":["BTC-USD"]}` / `{"op":"unsubscribe","topics":[…]}`,
//!   answered with `{"op":"subscribed","topics":[…]}` / `{"op":"unsubscribed",…}` or
//!   `{"op":"error","error":"…"}`; the connection stays open either way.
//! - With the `ringcast.v1` subprotocol, subscribers get envelopes naming topic and
//!   sequence number, and may start in the past: `?snapshot=1` (the latest message of each
//!   topic first) or `?since=SEQ` (every message after SEQ still held, a `gap` message for
//!   those that are not), and at run time `"snapshot":true` / `"since":{"T":SEQ}` in
//!   `subscribe`. A resume names the numbering its `since` belongs to with `&epoch=E`
//!   (one path topic) or `"epoch":{"T":"E"}`; another numbering is answered with a `reset`.
//! - `/pub/{topic}` (plain `/pub`: the default topic) publishes every message the client
//!   sends, unchanged and with its opcode, to every subscriber; it is not echoed back.
//!   With a publish token set, a publisher must present it as `Authorization: Bearer
//!   TOKEN` or `?token=TOKEN`, or gets `401`.

use serde::Deserialize;

use crate::fanout::Epoch;
use crate::fanout::topic::{DEFAULT_TOPIC, Start, TopicError, TopicName, TopicRules};
use crate::protocol::frame::OpCode;
use crate::reactor::handler::{Client, Handler, Message, Upgrade, UpgradeRequest};

/// Subscribers on `/sub…`, publishers on `/pub…`.
#[derive(Debug, Clone, Default)]
pub struct Broadcast {
    /// Token publishers must present; `None` lets anyone publish. An empty (or blank)
    /// token is a mistake, not a token: every publisher is then refused (`500`, saying
    /// so) rather than let in with an empty `?token=`.
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
    #[serde(default)]
    since: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    snapshot: Option<serde_json::Value>,
    #[serde(default)]
    epoch: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The least [`Broadcast::control_limit`].
const CONTROL_LIMIT_MIN: usize = 64 << 10;

/// What a `since` must be.
const SINCE_FORM: &str = "a sequence number (a whole number, 0 or more)";
/// What an `epoch` must be.
const EPOCH_FORM: &str = "16 hex digits, as the epoch message gave it";

/// `start` resumed in the numbering `epoch` names, if any.
fn with_epoch(start: Start, epoch: Option<&str>) -> Result<Start, String> {
    let Some(e) = epoch else {
        return Ok(start);
    };
    let Start::Since(since) = start else {
        return Err("epoch goes with since (the numbering since belongs to)".into());
    };
    match Epoch::parse(e) {
        Some(epoch) => Ok(Start::Resume { since, epoch }),
        None => Err(format!("epoch must be {EPOCH_FORM}, not '{e}'")),
    }
}

/// The start asked for by `since`, `epoch` and `snapshot` in the query of an upgrade
/// request for `topics`.
fn query_start(req: &UpgradeRequest<'_>, topics: usize) -> Result<Start, String> {
    let since = req.query_param("since");
    let snapshot = req.query_param("snapshot");
    let epoch = req.query_param("epoch");
    if epoch.is_some() && topics > 1 {
        return Err(
            "epoch goes with one topic in the path (resume several with subscribe \
                    messages, one epoch each)"
                .into(),
        );
    }
    let start = match (since, snapshot) {
        (Some(_), Some(_)) => return Err("give since or snapshot, not both".into()),
        (Some(s), None) => match s.parse::<u64>() {
            Ok(n) => Start::Since(n),
            Err(_) => return Err(format!("since must be {SINCE_FORM}, not '{s}'")),
        },
        (None, Some(s)) => match s.as_str() {
            "1" | "true" => Start::Snapshot,
            "0" | "false" => Start::Live,
            _ => {
                return Err(format!(
                    "snapshot must be 1 or 0 (true or false), not '{s}'"
                ));
            }
        },
        (None, None) => Start::Live,
    };
    let start = with_epoch(start, epoch.as_deref())?;
    if start != Start::Live && !req.is_v1() {
        return Err(TopicError::NeedsV1.to_string());
    }
    Ok(start)
}

/// The start of each topic of a `subscribe` message (`since`, `snapshot`).
fn control_starts(ctl: &Control, v1: bool) -> Result<Vec<Start>, String> {
    let snapshot = match &ctl.snapshot {
        None | Some(serde_json::Value::Bool(false)) => false,
        Some(serde_json::Value::Bool(true)) => true,
        Some(other) => return Err(format!("snapshot must be true or false, not {other}")),
    };
    let since = ctl.since.as_ref();
    if ctl.op != "subscribe" && (snapshot || since.is_some() || ctl.epoch.is_some()) {
        return Err("since, epoch and snapshot go with subscribe".into());
    }
    if snapshot && since.is_some() {
        return Err("give since or snapshot, not both".into());
    }
    if (snapshot || since.is_some()) && !v1 {
        return Err(TopicError::NeedsV1.to_string());
    }
    if let Some(map) = since {
        if let Some(t) = map.keys().find(|k| !ctl.topics.contains(k)) {
            return Err(format!(
                "since names topic '{t}', which is not among the topics"
            ));
        }
    }
    if let Some(map) = &ctl.epoch {
        if let Some(t) = map
            .keys()
            .find(|k| !since.is_some_and(|s| s.contains_key(*k)))
        {
            return Err(format!(
                "epoch names topic '{t}', which has no since (the numbering since belongs to)"
            ));
        }
    }
    ctl.topics
        .iter()
        .map(|t| {
            let start = match since.and_then(|m| m.get(t)) {
                Some(v) => v
                    .as_u64()
                    .map(Start::Since)
                    .ok_or_else(|| format!("since of '{t}' must be {SINCE_FORM}, not {v}"))?,
                None if snapshot => Start::Snapshot,
                None => Start::Live,
            };
            match ctl.epoch.as_ref().and_then(|m| m.get(t)) {
                None => Ok(start),
                Some(serde_json::Value::String(e)) => {
                    with_epoch(start, Some(e)).map_err(|why| format!("topic '{t}': {why}"))
                }
                Some(v) => Err(format!(
                    "epoch of '{t}' must be a string of {EPOCH_FORM}, not {v}"
                )),
            }
        })
        .collect()
}

impl Broadcast {
    /// The longest control message a subscriber may send, in bytes: room for
    /// `max_per_connection` topics of the longest name, each with a `since` and an `epoch`,
    /// twice over for whitespace, and never under 64 KiB. A longer one is answered with an
    /// error and not parsed: its topic list could hold millions of names (one 16 MiB
    /// message of repeats of one topic took a reactor 1.5 s and 580 MB to answer).
    pub fn control_limit(&self) -> usize {
        let r = &self.rules;
        let per_topic = r.max_name_len.saturating_mul(3).saturating_add(48);
        let fill = r
            .max_per_connection
            .saturating_mul(per_topic)
            .saturating_add(256);
        fill.saturating_mul(2).max(CONTROL_LIMIT_MIN)
    }

    fn authorised(&self, req: &UpgradeRequest<'_>) -> Result<(), Upgrade> {
        let Some(want) = &self.publish_token else {
            return Ok(());
        };
        if want.trim().is_empty() {
            return Err(reject(
                500,
                "publishing is refused: the server's publish token is empty (misconfigured)",
            ));
        }
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
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
        let mut topics: Vec<String> = match rest {
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
            // A topic named twice is one subscription, and counts once against the limit.
            let mut seen = std::collections::HashSet::with_capacity(topics.len());
            topics.retain(|t| seen.insert(t.clone()));
            if topics.len() > self.rules.max_per_connection {
                return reject(
                    400,
                    &format!("more than {} topics", self.rules.max_per_connection),
                );
            }
            let start = match query_start(req, topics.len()) {
                Ok(s) => s,
                Err(reason) => return reject(400, &reason),
            };
            return Upgrade::Accept {
                topics,
                publish_to: None,
                start,
            };
        }
        if ["since", "snapshot", "epoch"]
            .iter()
            .any(|k| req.query_param(k).is_some())
        {
            return reject(400, "since, epoch and snapshot are for subscribers (/sub)");
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
            start: Start::Live,
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
        let limit = self.control_limit();
        if text.len() > limit {
            let n = text.len();
            return error(
                client,
                &format!("control message too long: {n} bytes, at most {limit}"),
            );
        }
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
        let starts = match control_starts(&ctl, client.is_v1()) {
            Ok(s) => s,
            Err(e) => return error(client, &e),
        };
        let done: Vec<&str> = ctl.topics.iter().map(String::as_str).collect();
        if subscribe {
            let list: Vec<(&str, Start)> = done.iter().copied().zip(starts).collect();
            if let Err((i, e)) = client.subscribe_all(&list) {
                let t = done[i];
                return error(client, &format!("topic '{t}': {e} (no topic subscribed)"));
            }
        } else {
            for t in &done {
                client.unsubscribe(t);
            }
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

/// The `control` fuzz target: any bytes as a subscriber's control message. Parsing and the
/// starts it asks for never panic; a valid message yields one start per topic, and a
/// plain connection is never given anything but a live start.
#[cfg(fuzzing)]
pub(crate) fn fuzz_control(data: &[u8]) {
    let Ok(ctl) = serde_json::from_slice::<Control>(data) else {
        return;
    };
    for v1 in [false, true] {
        match control_starts(&ctl, v1) {
            Ok(starts) => {
                assert_eq!(starts.len(), ctl.topics.len());
                assert!(v1 || starts.iter().all(|s| *s == Start::Live));
            }
            Err(e) => assert!(!e.is_empty()),
        }
    }
}

fn error(client: &mut Client<'_>, message: &str) {
    // `op` first, as in every other message (a `json!` map would sort the keys).
    let msg = format!(
        r#"{{"op":"error","error":{}}}"#,
        serde_json::Value::from(message)
    );
    client.send_text(&msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(b: &Broadcast, path: &str, query: Option<&str>, auth: Option<&str>) -> Upgrade {
        upgrade_with(b, path, query, auth, None)
    }

    fn upgrade_with(
        b: &Broadcast,
        path: &str,
        query: Option<&str>,
        auth: Option<&str>,
        protocol: Option<&str>,
    ) -> Upgrade {
        let headers: Vec<(String, String)> = auth
            .map(|a| vec![("authorization".to_owned(), a.to_owned())])
            .unwrap_or_default();
        b.on_upgrade(&UpgradeRequest {
            path,
            query,
            headers: &headers,
            protocol,
        })
    }

    fn reason(u: &Upgrade) -> &str {
        match u {
            Upgrade::Accept { .. } => "",
            Upgrade::Reject { reason, .. } => reason,
        }
    }

    #[test]
    fn since_and_snapshot_in_the_query() {
        let b = Broadcast::default();
        let v1 = Some("ringcast.v1");
        let up = |q: &str, p: Option<&str>| upgrade_with(&b, "/sub/a,b", Some(q), None, p);
        let start = |u: Upgrade| match u {
            Upgrade::Accept { start, .. } => start,
            Upgrade::Reject { reason, .. } => panic!("rejected: {reason}"),
        };
        assert_eq!(start(up("since=41", v1)), Start::Since(41));
        assert_eq!(start(up("since=0", v1)), Start::Since(0));
        assert_eq!(start(up("snapshot=1", v1)), Start::Snapshot);
        assert_eq!(start(up("snapshot=true", v1)), Start::Snapshot);
        assert_eq!(start(up("snapshot=0", v1)), Start::Live);
        assert_eq!(start(up("x=1", None)), Start::Live);
        for (q, p, why) in [
            ("since=abc", v1, "since must be a sequence number"),
            ("since=-1", v1, "not '-1'"),
            ("since=1.5", v1, "not '1.5'"),
            ("since=", v1, "not ''"),
            ("since=99999999999999999999", v1, "since must be"),
            ("snapshot=yes", v1, "snapshot must be 1 or 0"),
            ("since=1&snapshot=1", v1, "not both"),
            ("since=1", None, "need the ringcast.v1 subprotocol"),
            ("snapshot=1", None, "need the ringcast.v1 subprotocol"),
        ] {
            let u = up(q, p);
            assert_eq!(status(&u), 400, "{q}");
            assert!(reason(&u).contains(why), "{q}: {}", reason(&u));
        }
        let u = upgrade_with(&b, "/pub/a", Some("since=1"), None, v1);
        assert_eq!(status(&u), 400);
        let u = upgrade_with(&b, "/pub/a", Some("epoch=5f0c93a1d2e47b68"), None, v1);
        assert_eq!(status(&u), 400);
    }

    #[test]
    fn an_epoch_in_the_query_resumes_one_topic() {
        let b = Broadcast::default();
        let v1 = Some("ringcast.v1");
        let epoch = Epoch::parse("5f0c93a1d2e47b68").unwrap();
        match upgrade_with(
            &b,
            "/sub/a",
            Some("since=41&epoch=5f0c93a1d2e47b68"),
            None,
            v1,
        ) {
            Upgrade::Accept { start, .. } => {
                assert_eq!(start, Start::Resume { since: 41, epoch });
            }
            Upgrade::Reject { reason, .. } => panic!("rejected: {reason}"),
        }
        for (path, q, p, why) in [
            (
                "/sub/a,b",
                "since=1&epoch=5f0c93a1d2e47b68",
                v1,
                "one topic in the path",
            ),
            (
                "/sub/a",
                "epoch=5f0c93a1d2e47b68",
                v1,
                "epoch goes with since",
            ),
            (
                "/sub/a",
                "snapshot=1&epoch=5f0c93a1d2e47b68",
                v1,
                "epoch goes with since",
            ),
            (
                "/sub/a",
                "since=1&epoch=5f0c93a1d2e47b6",
                v1,
                "16 hex digits",
            ),
            (
                "/sub/a",
                "since=1&epoch=zz0c93a1d2e47b68",
                v1,
                "not 'zz0c93a1d2e47b68'",
            ),
            (
                "/sub/a",
                "since=1&epoch=5f0c93a1d2e47b68",
                None,
                "ringcast.v1 subprotocol",
            ),
        ] {
            let u = upgrade_with(&b, path, Some(q), None, p);
            assert_eq!(status(&u), 400, "{q}");
            assert!(reason(&u).contains(why), "{q}: {}", reason(&u));
        }
    }

    #[test]
    fn an_epoch_in_subscribe_resumes_its_topic() {
        let ctl = |j: &str| serde_json::from_str::<Control>(j).unwrap();
        let epoch = Epoch::parse("5f0c93a1d2e47b68").unwrap();
        assert_eq!(
            control_starts(
                &ctl(
                    r#"{"op":"subscribe","topics":["a","b"],"since":{"a":41,"b":2},"epoch":{"a":"5f0c93a1d2e47b68"}}"#
                ),
                true
            ),
            Ok(vec![Start::Resume { since: 41, epoch }, Start::Since(2)])
        );
        for (j, why) in [
            (
                r#"{"op":"subscribe","topics":["a"],"epoch":{"a":"5f0c93a1d2e47b68"}}"#,
                "'a', which has no since",
            ),
            (
                r#"{"op":"subscribe","topics":["a","b"],"since":{"a":1},"epoch":{"b":"5f0c93a1d2e47b68"}}"#,
                "'b', which has no since",
            ),
            (
                r#"{"op":"subscribe","topics":["a"],"since":{"a":1},"epoch":{"a":7}}"#,
                "must be a string of 16 hex digits",
            ),
            (
                r#"{"op":"subscribe","topics":["a"],"since":{"a":1},"epoch":{"a":"x"}}"#,
                "topic 'a': epoch must be 16 hex digits",
            ),
            (
                r#"{"op":"unsubscribe","topics":["a"],"epoch":{"a":"5f0c93a1d2e47b68"}}"#,
                "go with subscribe",
            ),
        ] {
            let e = control_starts(&ctl(j), true).unwrap_err();
            assert!(e.contains(why), "{j}: {e}");
        }
    }

    #[test]
    fn since_and_snapshot_in_subscribe() {
        let ctl = |j: &str| serde_json::from_str::<Control>(j).unwrap();
        let starts = |j: &str, v1: bool| control_starts(&ctl(j), v1);
        assert_eq!(
            starts(
                r#"{"op":"subscribe","topics":["a","b"],"since":{"a":41}}"#,
                true
            ),
            Ok(vec![Start::Since(41), Start::Live])
        );
        assert_eq!(
            starts(r#"{"op":"subscribe","topics":["a"],"snapshot":true}"#, true),
            Ok(vec![Start::Snapshot])
        );
        for (j, v1, why) in [
            (
                r#"{"op":"subscribe","topics":["a"],"since":{"a":-1}}"#,
                true,
                "not -1",
            ),
            (
                r#"{"op":"subscribe","topics":["a"],"since":{"a":"7"}}"#,
                true,
                "must be a sequence number",
            ),
            (
                r#"{"op":"subscribe","topics":["a"],"since":{"b":7}}"#,
                true,
                "'b', which is not among",
            ),
            (
                r#"{"op":"subscribe","topics":["a"],"snapshot":1}"#,
                true,
                "true or false",
            ),
            (
                r#"{"op":"subscribe","topics":["a"],"snapshot":true,"since":{"a":1}}"#,
                true,
                "not both",
            ),
            (
                r#"{"op":"subscribe","topics":["a"],"since":{"a":1}}"#,
                false,
                "ringcast.v1",
            ),
            (
                r#"{"op":"unsubscribe","topics":["a"],"snapshot":true}"#,
                true,
                "go with subscribe",
            ),
        ] {
            let e = starts(j, v1).unwrap_err();
            assert!(e.contains(why), "{j}: {e}");
        }
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
            Upgrade::subscribe(vec!["default".into()])
        );
        assert_eq!(
            upgrade(&b, "/sub/BTC-USD,ETH-USD", None, None),
            Upgrade::subscribe(vec!["BTC-USD".into(), "ETH-USD".into()])
        );
        assert_eq!(
            upgrade(&b, "/pub", None, None),
            Upgrade::Accept {
                topics: vec![],
                publish_to: Some(TopicName::new("default")),
                start: Start::Live,
            }
        );
        assert_eq!(status(&upgrade(&b, "/", None, None)), 404);
        assert_eq!(status(&upgrade(&b, "/subway", None, None)), 404);
        assert_eq!(status(&upgrade(&b, "/sub/bad topic", None, None)), 400);
        assert_eq!(status(&upgrade(&b, "/sub/a,,b", None, None)), 400);
        assert_eq!(status(&upgrade(&b, "/pub/a,b", None, None)), 400);
        // Named twice: one subscription, counted once against the limit.
        let two = Broadcast {
            rules: TopicRules {
                max_per_connection: 2,
                ..TopicRules::default()
            },
            ..Broadcast::default()
        };
        assert_eq!(
            upgrade(&two, "/sub/A,B,A,B,A", None, None),
            Upgrade::subscribe(vec!["A".into(), "B".into()])
        );
        assert_eq!(status(&upgrade(&two, "/sub/A,B,C,A", None, None)), 400);
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

    #[test]
    fn an_empty_publish_token_refuses_every_publisher() {
        for token in ["", " "] {
            let b = Broadcast {
                publish_token: Some(token.into()),
                ..Broadcast::default()
            };
            for (query, auth) in [
                (None, None),
                (Some("token="), None),
                (Some("token=%20"), None),
                (None, Some("Bearer ")),
            ] {
                assert_eq!(
                    status(&upgrade(&b, "/pub/x", query, auth)),
                    500,
                    "{query:?}"
                );
            }
            assert_eq!(status(&upgrade(&b, "/sub/x", None, None)), 101);
        }
    }

    /// The largest request the topic rules allow (every topic of the longest name, with a
    /// `since` and an `epoch` each, pretty-printed) fits under the limit, which grows with
    /// the rules and never falls under 64 KiB.
    #[test]
    fn the_control_limit_fits_the_largest_request_the_rules_allow() {
        for (topics, len) in [(1, 1), (64, 64), (64, 255), (1000, 255), (20_000, 64)] {
            let b = Broadcast {
                rules: TopicRules {
                    max_per_connection: topics,
                    max_name_len: len,
                },
                ..Broadcast::default()
            };
            let names: Vec<String> = (0..topics)
                .map(|i| format!("{i:0len$}").chars().take(len).collect())
                .collect();
            let since: serde_json::Map<_, _> = names
                .iter()
                .map(|n| (n.clone(), serde_json::Value::from(u64::MAX)))
                .collect();
            let epoch: serde_json::Map<_, _> = names
                .iter()
                .map(|n| (n.clone(), serde_json::Value::from("0123456789abcdef")))
                .collect();
            let request = serde_json::json!({
                "op": "subscribe", "topics": names, "since": since, "epoch": epoch
            });
            let text = serde_json::to_string_pretty(&request).unwrap();
            let limit = b.control_limit();
            assert!(
                text.len() <= limit,
                "{topics} × {len}: {} > {limit}",
                text.len()
            );
            assert!(limit >= 64 << 10);
        }
    }
}
