//! A reactor thread's part in the `resume` scenario: resetting subscribers' connections
//! when the [`Schedule`] says so, and reconnecting them with `?since=` the last sequence
//! number each has seen.
//!
//! A reset subscriber keeps its slab entry (and so its token), its payload streams and its
//! [`Checker`](crate::envelope::Checker): the run goes on across the reconnection, which
//! must deliver what was missed or announce it as a gap. Reconnections wait for a
//! handshake slot like the first connections do (`--max-pending`), so a storm is as fast
//! as the client side allows, and the wait counts in the time to resume.

use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::{Interest, Token};

use super::{
    Conn, Ctx, Job, MAX_SLEEP, Reactor, State, describe_connect_error, drop_socket, open_socket,
};
use crate::frame::FrameState;
use crate::resume::Schedule;

impl Reactor<'_> {
    /// Called once when the run phase begins: the drop schedule over the subscribers
    /// open here, if the run has one.
    pub(super) fn start_schedule(&mut self, t0: u64) {
        let Some(plan) = self.ctx.shared.settings.rejoin else {
            return;
        };
        let keys = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(c.state, State::Open) && matches!(c.job, Job::Subscriber { .. })
            })
            .map(|(k, _)| k)
            .collect();
        self.schedule = Some(Schedule::new(&plan, keys, t0, self.ctx.t2));
    }

    /// Resets the subscribers due at `now`; returns how long until the next are due.
    pub(super) fn rejoin_due(&mut self, now: u64) -> Duration {
        let Some(schedule) = self.schedule.as_mut() else {
            return MAX_SLEEP;
        };
        if let Some(drops) = schedule.poll(now) {
            for key in drops.keys {
                if let Some(conn) = self.conns.get_mut(key)
                    && reset(conn, &mut self.ctx, now, drops.storm)
                {
                    self.rejoin_queue.push_back(key);
                }
            }
        }
        self.schedule
            .as_ref()
            .and_then(Schedule::next_at)
            .map_or(MAX_SLEEP, |t| Duration::from_nanos(t.saturating_sub(now)))
    }

    /// Reconnects queued subscribers while handshake slots are free.
    pub(super) fn reopen_more(&mut self, now: u64) {
        let max = self.ctx.shared.settings.max_pending;
        while self.ctx.pending < max {
            let Some(key) = self.rejoin_queue.pop_front() else {
                return;
            };
            if let Some(conn) = self.conns.get_mut(key) {
                reopen(key, conn, &mut self.ctx, now);
            }
        }
    }
}

/// Resets an open subscriber's connection; returns whether it did (and the subscriber
/// must be queued to reconnect).
fn reset(conn: &mut Conn, ctx: &mut Ctx<'_>, now: u64, storm: bool) -> bool {
    if !matches!(conn.state, State::Open) {
        return false;
    }
    let Job::Subscriber {
        topic,
        rejoin: Some(r),
        ..
    } = &mut conn.job
    else {
        return false;
    };
    let shared = ctx.shared;
    if let Some(sock) = &conn.sock {
        // SO_LINGER 0: close sends a RST, no FIN and no close frame, the way a client that
        // vanished looks to the server; and no TIME_WAIT holds the port on this side.
        let _ = socket2::SockRef::from(sock).set_linger(Some(Duration::ZERO));
    }
    shared.open_now.fetch_sub(1, Ordering::Relaxed);
    if let Some(n) = shared.topic_open.get(*topic as usize) {
        n.fetch_sub(1, Ordering::Relaxed);
    }
    r.handle_drop(now, storm, &mut ctx.tally.resume);
    drop_socket(conn, shared);
    // A frame cut off by the reset is gone with the connection.
    conn.frames = FrameState::default();
    conn.state = State::Rejoin;
    true
}

/// Opens a new connection for reset subscriber `key`, on its path with `?since=`.
fn reopen(key: usize, conn: &mut Conn, ctx: &mut Ctx<'_>, now: u64) {
    if !matches!(conn.state, State::Rejoin) {
        return;
    }
    let shared = ctx.shared;
    let s = &shared.settings;
    let Job::Subscriber {
        topic,
        v1,
        rejoin: Some(r),
        ..
    } = &mut conn.job
    else {
        return;
    };
    let since = v1.as_mut().and_then(|v1| {
        if v1.last_seq(0).is_none() {
            // Nothing arrived yet: resume where the topic's stream began for the other
            // subscribers here; if none has seen it either, nothing was published yet.
            let first = shared
                .topic_first_seq
                .get(*topic as usize)
                .map(|f| f.load(Ordering::Relaxed))
                .filter(|&f| f != u64::MAX);
            if let Some(f) = first {
                v1.expect_first(0, f);
            }
        }
        v1.last_seq(0)
    });
    // With the numbering `since` belongs to: a server that lost it answers with a reset.
    conn.path = r.path(since);
    if s.rejoin.is_some_and(|p| p.elsewhere) && s.sub_targets.len() > 1 {
        // Subscribers' nodes are 1..=N (see `Settings::target_of`).
        conn.node = conn.node % s.sub_targets.len() + 1;
    }
    let fail = |ctx: &mut Ctx<'_>, why: String| {
        ctx.tally.resume.reconnect_failed += 1;
        ctx.tally
            .first_problem
            .get_or_insert_with(|| format!("reconnecting: {why}"));
    };
    let mut sock = match open_socket(s.target_of(conn.node).addr, s.source_ip) {
        Ok(sock) => sock,
        Err(e) => {
            let (msg, _) = describe_connect_error(&e, s.target.addr, shared);
            fail(ctx, msg);
            conn.state = State::Closed;
            return;
        }
    };
    if let Err(e) = ctx.poll.registry().register(
        &mut sock,
        Token(key),
        Interest::READABLE | Interest::WRITABLE,
    ) {
        fail(ctx, format!("cannot register a socket with epoll: {e}"));
        conn.state = State::Closed;
        return;
    }
    shared.sockets.fetch_add(1, Ordering::Relaxed);
    conn.sock = Some(sock);
    let deadline = now + s.handshake_timeout.as_nanos() as u64;
    conn.state = State::Connecting { deadline };
    ctx.handshakes.push_back((deadline, key));
    ctx.pending += 1;
}
