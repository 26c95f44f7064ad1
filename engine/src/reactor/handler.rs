//! The application seam: who may connect, and what their messages do.
//!
//! A [`Handler`] is shared by every reactor (it is `Send + Sync`). It decides each upgrade
//! from the request ([`Handler::on_upgrade`]: accept with initial subscriptions, or reject
//! with an HTTP status), receives the messages clients send ([`Handler::on_message`]),
//! acting through a [`Client`]: reply, subscribe, unsubscribe, publish, close; and answers
//! plain HTTP requests, those without `Upgrade` ([`Handler::on_http`]; default: 404).
//!
//! Two handlers come with ringcast: [`Echo`] (the conformance-suite mode), here, and the
//! broadcast handler of `ringcast serve`, in the server layer above.

use std::sync::atomic::Ordering;

use super::core::absorb;
use super::stats::Counters;
use crate::fanout::outbox::Outbox;
use crate::fanout::ring::{InboxRx, Publication};
use crate::fanout::topic::{Form, Start, TopicError, TopicName, TopicRules, Topics};
use crate::fanout::{Fanout, Published};
use crate::protocol::close::CloseCode;
use crate::protocol::frame::OpCode;
use crate::protocol::{encode, envelope};

pub use crate::protocol::http::{Method as HttpMethod, Response as HttpResponse};

/// The parts of an upgrade request a handler decides on.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeRequest<'a> {
    /// The request path, without the query.
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// All headers (lower-cased names).
    pub headers: &'a [(String, String)],
    /// The subprotocol the handshake selected from the client's offer, if any
    /// (`ringcast.v1`: envelopes, snapshots and resume).
    pub protocol: Option<&'a str>,
}

impl UpgradeRequest<'_> {
    /// Whether the connection will speak `ringcast.v1`.
    pub fn is_v1(&self) -> bool {
        self.protocol == Some(envelope::PROTOCOL)
    }

    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `key`, percent-decoded.
    pub fn query_param(&self, key: &str) -> Option<String> {
        query_param(self.query, key)
    }
}

/// A plain HTTP request (no `Upgrade` header), as a handler sees it. The reactor answers
/// whatever [`Handler::on_http`] returns, then closes the connection.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// `GET` or `HEAD` (other methods are answered 405 before a handler is asked). A
    /// handler answers both alike: the reactor leaves the body out for `HEAD`.
    pub method: HttpMethod,
    /// The request path, without the query.
    pub path: &'a str,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// All headers (lower-cased names).
    pub headers: &'a [(String, String)],
}

impl HttpRequest<'_> {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter named `key`, percent-decoded.
    pub fn query_param(&self, key: &str) -> Option<String> {
        query_param(self.query, key)
    }
}

/// The first parameter named `key` of `query`, percent-decoded.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+` (as space); malformed escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A handler's answer to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// Accept; subscribe the connection to `topics` (checked against the topic rules).
    Accept {
        /// Initial subscriptions.
        topics: Vec<String>,
        /// A topic this connection publishes to, for the handler's own use
        /// ([`Client::publish_topic`]).
        publish_to: Option<TopicName>,
        /// Where the initial subscriptions start (anything but [`Start::Live`] needs the
        /// `ringcast.v1` subprotocol, [`UpgradeRequest::is_v1`]).
        start: Start,
    },
    /// Refuse with an HTTP status (4xx/5xx) and a short reason.
    Reject {
        /// HTTP status.
        status: u16,
        /// Reason, sent as the response body.
        reason: String,
    },
}

impl Upgrade {
    /// Accept with no subscriptions.
    pub fn accept() -> Self {
        Self::Accept {
            topics: Vec::new(),
            publish_to: None,
            start: Start::Live,
        }
    }

    /// Accept, subscribed to `topics` from now on.
    pub fn subscribe(topics: Vec<String>) -> Self {
        Self::Accept {
            topics,
            publish_to: None,
            start: Start::Live,
        }
    }
}

/// A complete message from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// Text (valid UTF-8).
    Text(&'a str),
    /// Binary.
    Binary(&'a [u8]),
}

/// The application: decides upgrades and handles client messages.
pub trait Handler: Send + Sync + 'static {
    /// Decides an upgrade request that passed the RFC 6455 checks.
    fn on_upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade;

    /// A message from a client. The default ignores it.
    fn on_message(&self, client: &mut Client<'_>, msg: Message<'_>) {
        let _ = (client, msg);
    }

    /// Answers a plain HTTP request (`GET` or `HEAD` without `Upgrade`); `None` is
    /// answered `404 Not Found`. Called on a reactor thread: keep it short. The default
    /// serves nothing.
    fn on_http(&self, req: &HttpRequest<'_>) -> Option<HttpResponse> {
        let _ = req;
        None
    }
}

/// One connection, as a handler sees it while handling its message.
pub struct Client<'a> {
    pub(crate) key: usize,
    pub(crate) form: Form,
    pub(crate) outbox: &'a mut Outbox,
    pub(crate) topics: &'a mut Topics,
    pub(crate) rules: &'a TopicRules,
    pub(crate) source: Source<'a>,
    pub(crate) publish_to: Option<&'a TopicName>,
    pub(crate) close: &'a mut Option<(CloseCode, String)>,
}

/// Where a subscription's messages come from: the node's sequence numbers and this
/// reactor's inbox (drained into the logs before a `ringcast.v1` subscription starts, so
/// it sees everything numbered before it).
pub(crate) struct Source<'a> {
    pub(crate) fanout: &'a Fanout,
    /// The reactor's counters (resumes and resets).
    pub(crate) stats: &'a Counters,
    pub(crate) inbox: &'a InboxRx,
    pub(crate) batch: &'a mut Vec<Publication>,
}

impl std::fmt::Debug for Client<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("key", &self.key)
            .field("subscriptions", &self.subscriptions())
            .finish_non_exhaustive()
    }
}

impl Client<'_> {
    /// Sends a text message to this client.
    pub fn send_text(&mut self, text: &str) {
        self.outbox
            .push(encode::frame(OpCode::Text, text.as_bytes()));
    }

    /// Sends a binary message to this client.
    pub fn send_binary(&mut self, data: &[u8]) {
        self.outbox.push(encode::frame(OpCode::Binary, data));
    }

    /// Whether this client speaks `ringcast.v1` (envelopes, snapshots, resume).
    pub fn is_v1(&self) -> bool {
        self.form == Form::V1
    }

    /// The topics this client is subscribed to, in the order it subscribed.
    pub fn subscriptions(&self) -> Vec<TopicName> {
        self.outbox
            .subs()
            .iter()
            .map(|s| self.topics.entry(s.topic).name.clone())
            .collect()
    }

    /// The topic given in [`Upgrade::Accept::publish_to`], if any.
    pub fn publish_topic(&self) -> Option<&TopicName> {
        self.publish_to
    }

    /// Subscribes this client to `topic` from now on (messages published before are not
    /// sent); returns whether it was new.
    ///
    /// # Errors
    /// A bad name or too many topics ([`TopicRules`]).
    pub fn subscribe(&mut self, topic: &str) -> Result<bool, TopicError> {
        self.subscribe_from(topic, Start::Live)
    }

    /// Subscribes this client to `topic` starting at `start`: live, with the latest
    /// message, or after a sequence number (a `gap` message first announces what is no
    /// longer held); returns whether it was new (an existing subscription is unchanged).
    ///
    /// # Errors
    /// A bad name, too many topics, `start` other than live without `ringcast.v1`, or a
    /// `since` past the topic's latest sequence number (in a cluster: on a node that
    /// follows the topic; one that does not learns the numbers from the broker, and
    /// announces what it cannot give as a `gap`).
    pub fn subscribe_from(&mut self, topic: &str, start: Start) -> Result<bool, TopicError> {
        let sub = Subscriber {
            key: self.key,
            form: self.form,
            rules: self.rules,
        };
        sub.subscribe(self.outbox, self.topics, &mut self.source, topic, start)
    }

    /// Subscribes this client to every topic of `list` from its start, or to none: all
    /// are checked before any is subscribed, so a refused request changes nothing (a
    /// topic named twice counts once). Returns how many subscriptions are new.
    ///
    /// # Errors
    /// The index in `list` of the first topic that cannot be subscribed, and why (as for
    /// [`subscribe_from`](Self::subscribe_from)).
    pub fn subscribe_all(&mut self, list: &[(&str, Start)]) -> Result<usize, (usize, TopicError)> {
        let sub = Subscriber {
            key: self.key,
            form: self.form,
            rules: self.rules,
        };
        let fanout = self.source.fanout;
        let mut adding: Vec<&str> = Vec::new();
        for (i, &(topic, start)) in list.iter().enumerate() {
            if adding.contains(&topic) {
                continue;
            }
            match sub.check(self.outbox, self.topics, fanout, topic, start, adding.len()) {
                Ok(true) => adding.push(topic),
                Ok(false) => {}
                Err(e) => return Err((i, e)),
            }
        }
        let mut new = 0;
        for (i, &(topic, start)) in list.iter().enumerate() {
            match sub.subscribe(self.outbox, self.topics, &mut self.source, topic, start) {
                Ok(n) => new += usize::from(n),
                // Checked above; nothing between can make it fail (sequence numbers
                // only grow), but say so rather than assume.
                Err(e) => return Err((i, e)),
            }
        }
        Ok(new)
    }

    /// Unsubscribes this client from `topic`; returns whether it was subscribed. A message
    /// of the topic already partly written is finished; the rest is not sent.
    pub fn unsubscribe(&mut self, topic: &str) -> bool {
        let Some(id) = self.topics.id(topic, self.form) else {
            return false;
        };
        let Some(s) = self.outbox.remove_sub(self.topics, id) else {
            return false;
        };
        self.topics.unsubscribe(id, self.key, s.pos);
        true
    }

    /// Publishes to every subscriber of `topic` on every reactor (this client included
    /// if it subscribes); the answer carries the message's sequence number.
    pub fn publish(&mut self, topic: &TopicName, opcode: OpCode, payload: &[u8]) -> Published {
        self.source.fanout.publish(topic, opcode, payload)
    }

    /// Closes this connection with `code` and `reason` after this message.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        *self.close = Some((code, reason.to_owned()));
    }
}

/// A connection about to subscribe.
pub(crate) struct Subscriber<'a> {
    pub(crate) key: usize,
    pub(crate) form: Form,
    pub(crate) rules: &'a TopicRules,
}

impl Subscriber<'_> {
    /// Whether [`subscribe`](Self::subscribe) would succeed, without changing anything:
    /// `Ok(true)` for a new subscription, `Ok(false)` for one the connection has. `adding`
    /// counts new subscriptions that go before this one (the rest of a request).
    pub(crate) fn check(
        &self,
        outbox: &Outbox,
        topics: &Topics,
        fanout: &Fanout,
        topic: &str,
        start: Start,
        adding: usize,
    ) -> Result<bool, TopicError> {
        self.rules.check(topic)?;
        if self.form == Form::Plain && start != Start::Live {
            return Err(TopicError::NeedsV1);
        }
        if topics
            .id(topic, self.form)
            .is_some_and(|id| outbox.sub_index(id).is_some())
        {
            return Ok(false);
        }
        if outbox.subs().len() + adding >= self.rules.max_per_connection {
            return Err(TopicError::TooMany(self.rules.max_per_connection));
        }
        let since = match start {
            Start::Since(since) => Some(since),
            // A resume of another numbering is a reset: its `since` is not checked.
            Start::Resume { since, epoch } => {
                (fanout.sequencer().epoch(topic) == Some(epoch)).then_some(since)
            }
            Start::Live | Start::Snapshot => None,
        };
        if self.form == Form::V1
            && let Some(since) = since
        {
            // A cluster node that does not follow the topic learns its numbers as it
            // begins to (what it cannot give is announced as a gap then).
            let last = fanout.last_seq(topic);
            if since > last && !fanout.may_lag(topic) {
                return Err(TopicError::SinceAhead {
                    since,
                    latest: last,
                });
            }
        }
        Ok(true)
    }

    /// Adds a subscription to `topic` starting at `start`, checking the rules; returns
    /// whether it was new.
    pub(crate) fn subscribe(
        &self,
        outbox: &mut Outbox,
        topics: &mut Topics,
        source: &mut Source<'_>,
        topic: &str,
        start: Start,
    ) -> Result<bool, TopicError> {
        if !self.check(outbox, topics, source.fanout, topic, start, 0)? {
            return Ok(false);
        }
        let name = TopicName::new(topic);
        let mut last = 0;
        // Held until the topic's entry holds it: the counter read is the one that goes
        // on numbering the topic (an idle one may be forgotten meanwhile otherwise).
        let mut counter = None;
        if self.form == Form::V1 {
            // Everything numbered up to `last` is in this reactor's inbox: taken into the
            // log, it is where the subscription can start from.
            let c = source.fanout.sequencer().counter(&name);
            last = c.last();
            counter = Some(c);
            absorb(source.inbox, topics, source.batch, usize::MAX);
        }
        let (id, pos) = topics.subscribe(&name, self.form, self.key, last);
        let start = match &counter {
            None => start,
            Some(c) => {
                let now = c.epoch();
                let (start, reset) = match start {
                    Start::Resume { since, epoch } if epoch == now => (Start::Since(since), false),
                    // Another numbering: the client's numbers mean nothing here; it gets
                    // all this one still holds, its oldest missing ones announced.
                    Start::Resume { .. } => (Start::Since(0), true),
                    s => (s, false),
                };
                if reset {
                    source.stats.v1_resets.fetch_add(1, Ordering::Relaxed);
                    outbox.push(envelope::reset(topic, now.get()));
                } else {
                    if let Start::Since(_) = start {
                        source.stats.v1_resumes.fetch_add(1, Ordering::Relaxed);
                    }
                    outbox.push(envelope::epoch(topic, now.get()));
                }
                start
            }
        };
        // A connection's resumes replay at most `max_replay` over all its topics (the lag
        // limit is the connection's): what it has pending leaves this one the rest.
        let budget = topics
            .max_replay()
            .saturating_sub(outbox.backlog(topics, None));
        let (cursor, gap) = topics.start(id, start, budget);
        if let Some((from, to)) = gap {
            outbox.push(envelope::gap(topic, from, to));
        }
        outbox.add_sub(id, pos, cursor);
        Ok(true)
    }
}

/// Echoes every message back with its type, on the paths `/` and `/echo`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    fn on_upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
        match req.path {
            "/" | "/echo" => Upgrade::accept(),
            _ => Upgrade::Reject {
                status: 404,
                reason: format!("no WebSocket endpoint at {} (try / or /echo)", req.path),
            },
        }
    }

    fn on_message(&self, client: &mut Client<'_>, msg: Message<'_>) {
        match msg {
            Message::Text(t) => client.send_text(t),
            Message::Binary(b) => client.send_binary(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        let req = UpgradeRequest {
            path: "/pub/x",
            query: Some("a=1&token=s%20e+c%2Fret&empty"),
            headers: &[],
            protocol: None,
        };
        assert_eq!(req.query_param("token").as_deref(), Some("s e c/ret"));
        assert_eq!(req.query_param("a").as_deref(), Some("1"));
        assert_eq!(req.query_param("empty").as_deref(), Some(""));
        assert_eq!(req.query_param("nope"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
