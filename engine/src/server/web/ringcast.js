/* ringcast.js: the browser client of a ringcast server. No dependencies, no build step:
 * load it with <script src="ringcast.js"></script> (served at /ringcast.js, or from a file)
 * and call ringcast.connect(url, options). It speaks the ringcast.v1 subprotocol by default
 * (topic and sequence number on every message, resume after a dropped connection) and plain
 * WebSocket broadcast when asked (payloads as they come).
 *
 *   const conn = ringcast.connect("ws://127.0.0.1:8080", {
 *     topics: ["BTC-USD", "ETH-USD"],
 *     onMessage(data, meta) {},   // data: JSON value (v1 text), string (plain text),
 *                                 // Uint8Array (v1 binary) or ArrayBuffer (plain binary);
 *                                 // meta: {topic, seq} (null both in plain mode)
 *     onState(state, info) {},    // "connecting" | "open" | "reconnecting" | "closed";
 *                                 // info: {retryAt, attempt, code, reason, protocol}
 *     onGap(gap) {},              // {topic, from, to}: messages the server no longer held;
 *                                 // {topic, from, to: null, reset: true}: its numbering restarted
 *                                 // (the server restarted or forgot the topic: seqs from 1 again)
 *     onError(message) {},        // the server's {"op":"error"} replies (default: console.warn)
 *   });
 *   conn.subscribe(["SOL-USD"], {snapshot: true}); // a promise: true once the server has it
 *   conn.unsubscribe(["ETH-USD"]);                 // a promise: resolved once it is gone
 *   conn.close();                                  // for good: no reconnection
 *
 * Further options: protocol ("ringcast.v1", the default; null for plain), snapshot (start
 * each new topic with its latest message; v1), heartbeat (the server's --heartbeat in ms,
 * 5000: after a heartbeat has been seen, 3 intervals without any message count as a dead
 * connection), retry ({base: 500, max: 30000} ms: full-jitter exponential back-off).
 * ringcast.sameOrigin() is the ws(s) URL of the server that served the page (null from a
 * file); connect() uses it when given no URL.
 */
(function (root, factory) {
  "use strict";
  const api = factory();
  if (typeof module === "object" && module.exports) {
    module.exports = api;
  } else {
    root.ringcast = api;
  }
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  const V1 = "ringcast.v1";
  // The topic a bare /sub subscribes to (the server's DEFAULT_TOPIC).
  const DEFAULT_TOPIC = "default";
  // The reply to a resume whose since the server has never reached: it restarted and
  // numbers from 1 again (engine/src/fanout/topic.rs, TopicError::SinceAhead).
  const SINCE_AHEAD = /past the topic's latest seq/;
  // A connection that stays up this long resets the back-off.
  const STABLE_MS = 5000;

  /** The WebSocket URL of `path` on `base` (ws:, wss:, http:, https:, or relative). */
  function endpoint(base, path, query) {
    const here = typeof location !== "undefined" && /^https?:/.test(location.href);
    const u = new URL(base, here ? location.href : undefined);
    if (u.protocol === "http:") u.protocol = "ws:";
    if (u.protocol === "https:") u.protocol = "wss:";
    u.pathname = u.pathname.replace(/\/+$/, "") + path;
    u.search = query;
    u.hash = "";
    return u.toString();
  }

  /** The server that served this page (same origin), or null from a file. */
  function sameOrigin() {
    if (typeof location === "undefined" || !/^https?:$/.test(location.protocol)) return null;
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
  }

  function connect(url, options) {
    const opts = options || {};
    const base = url || sameOrigin();
    if (!base) throw new Error("ringcast.connect: no server URL (and the page was not served by one)");
    const protocol = opts.protocol === undefined ? V1 : opts.protocol;
    const heartbeatMs = opts.heartbeat === undefined ? 5000 : opts.heartbeat;
    const retry = Object.assign({ base: 500, max: 30000 }, opts.retry);
    const noop = function () {};
    const onMessage = opts.onMessage || noop;
    const onState = opts.onState || noop;
    const onGap = opts.onGap || noop;
    const onError = opts.onError || ((m) => console.warn("ringcast:", m));

    const want = new Set(opts.topics || []); // the topics asked for, kept across connections
    const last = new Map(); // v1: topic -> last seq seen (delivered, skipped in a gap, or heartbeat)
    const epochs = new Map(); // v1: topic -> the numbering those seqs belong to (its epoch message)
    const held = new Set(); // topics whose resume is unanswered: their messages wait for it
    const active = new Set(); // topics the server has confirmed on this connection
    const waiting = new Map(); // topic -> resolvers of subscribe() promises not yet confirmed
    let pending = []; // control requests sent, in order: the server answers each once, in order
    let ws = null;
    let v1 = false;
    let state = null;
    let attempt = 0;
    let retryTimer = null;
    let stableTimer = null;
    let watchdog = null;
    let lastHeard = 0;
    let sawHeartbeat = false;
    let closed = false;

    function setState(next, info) {
      state = next;
      const defaults = { retryAt: null, attempt, code: null, reason: "", protocol: v1 ? V1 : "" };
      onState(next, Object.assign(defaults, info));
    }

    function request(msg, meta) {
      pending.push(meta);
      ws.send(JSON.stringify(msg));
    }

    /** The server confirmed (`ok`) or refused a subscription of `topic`. */
    function settle(topic, ok) {
      if (ok) active.add(topic);
      const w = waiting.get(topic);
      waiting.delete(topic);
      if (w) for (const resolve of w) resolve(ok);
    }

    function confirmation(topic) {
      if (active.has(topic)) return Promise.resolve(true);
      return new Promise((resolve) => {
        if (!waiting.has(topic)) waiting.set(topic, []);
        waiting.get(topic).push(resolve);
      });
    }

    function dial() {
      retryTimer = null;
      if (state === "reconnecting") setState("reconnecting", { retryAt: null }); // trying now
      // Topics never heard from go in the path; resumed ones get one subscribe each, so a
      // refused since comes back as a readable error (a refused upgrade is only a 1006).
      const live = Array.from(want).filter((t) => !last.has(t));
      const query = protocol === V1 && opts.snapshot && live.length ? "?snapshot=1" : "";
      // With no topic for the path, a bare /sub takes the default topic: dropped at once.
      const path = live.length ? "/sub/" + live.join(",") : "/sub";
      const target = endpoint(base, path, query);
      const sock = protocol ? new WebSocket(target, [protocol]) : new WebSocket(target);
      sock.binaryType = "arraybuffer";
      ws = sock;
      sock.onopen = function () {
        v1 = sock.protocol === V1;
        lastHeard = Date.now();
        sawHeartbeat = false;
        // The path as dialled, brought up to date with subscribe/unsubscribe calls made
        // while connecting.
        const stale = live.length ? live.filter((t) => !want.has(t)) : [DEFAULT_TOPIC];
        for (const t of stale) request({ op: "unsubscribe", topics: [t] }, { op: "unsubscribe", topic: t });
        for (const t of live) if (want.has(t)) settle(t, true);
        for (const t of want) {
          if (live.includes(t)) continue;
          if (v1 && last.has(t)) {
            held.add(t);
            const msg = { op: "subscribe", topics: [t], since: { [t]: last.get(t) } };
            // Named, a numbering the server no longer uses is answered with a reset.
            if (epochs.has(t)) msg.epoch = { [t]: epochs.get(t) };
            request(msg, { op: "resume", topic: t });
          } else {
            const msg = { op: "subscribe", topics: [t] };
            if (v1 && opts.snapshot) msg.snapshot = true;
            request(msg, { op: "subscribe", topic: t });
          }
        }
        stableTimer = setTimeout(() => (attempt = 0), STABLE_MS);
        if (heartbeatMs > 0) watchdog = setInterval(checkAlive, heartbeatMs);
        setState("open");
      };
      sock.onmessage = function (ev) {
        lastHeard = Date.now();
        if (typeof ev.data === "string") onText(ev.data);
        else onBinary(ev.data);
      };
      // Every error is followed by a close event; the browser tells nothing more.
      sock.onerror = noop;
      sock.onclose = function (ev) {
        if (sock !== ws) return;
        drop(ev.code, ev.reason);
      };
    }

    /** Forgets the current socket and, unless closed on purpose, schedules the next try. */
    function drop(code, reason) {
      const sock = ws;
      ws = null;
      sock.onopen = sock.onmessage = sock.onclose = null;
      if (sock.readyState === WebSocket.CONNECTING || sock.readyState === WebSocket.OPEN) {
        if (closed) sock.close(1000);
        else sock.close();
      }
      clearTimeout(stableTimer);
      clearInterval(watchdog);
      for (const req of pending) if (req.done) req.done(false);
      pending = [];
      held.clear();
      active.clear();
      v1 = false;
      if (closed) return;
      // Full jitter: anywhere in [0, min(max, base * 2^attempt)), so a restarted server is not
      // met by every client at once.
      const delay = Math.random() * Math.min(retry.max, retry.base * Math.pow(2, attempt));
      attempt += 1;
      retryTimer = setTimeout(dial, delay);
      setState("reconnecting", { retryAt: Date.now() + delay, code, reason });
    }

    function checkAlive() {
      if (sawHeartbeat && Date.now() - lastHeard > 3 * heartbeatMs) drop(null, "no heartbeat");
    }

    function deliver(topic, seq, data) {
      if (!want.has(topic) || held.has(topic)) return;
      const prev = last.get(topic);
      // The server never repeats a number; this guards a resume overlapping what arrived.
      if (prev !== undefined && seq <= prev) return;
      last.set(topic, seq);
      onMessage(data, { topic, seq });
    }

    function onText(text) {
      if (!v1) {
        // Plain mode: only an expected reply is taken for one; everything else is a payload.
        if (pending.length && text.startsWith('{"op":')) {
          const m = parse(text);
          if (m && /^(subscribed|unsubscribed|error)$/.test(m.op)) return reply(m);
        }
        return onMessage(text, { topic: null, seq: null });
      }
      const m = parse(text);
      if (!m) return onError("unreadable message: " + text.slice(0, 80));
      if (m.op === undefined) return deliver(m.topic, m.seq, m.data);
      switch (m.op) {
        case "heartbeat":
          sawHeartbeat = true;
          // The last number sent of each topic: a quiet topic can resume from it.
          for (const t of Object.keys(m.seq || {})) {
            if (want.has(t) && !held.has(t) && !(last.get(t) >= m.seq[t])) last.set(t, m.seq[t]);
          }
          return;
        case "epoch":
          if (want.has(m.topic)) epochs.set(m.topic, m.epoch);
          return;
        case "reset":
          // A resume of a numbering the server no longer has (it restarted, or forgot the
          // topic): what follows is the new numbering from the oldest message held.
          if (!want.has(m.topic)) return;
          epochs.set(m.topic, m.epoch);
          return restart(m.topic);
        case "gap":
          if (!want.has(m.topic)) return;
          if (!(last.get(m.topic) >= m.to)) last.set(m.topic, m.to);
          return onGap({ topic: m.topic, from: m.from, to: m.to });
        case "subscribed":
        case "unsubscribed":
        case "error":
          return reply(m);
        default:
          return; // an op of a later protocol version
      }
    }

    function onBinary(buf) {
      if (!v1) return onMessage(buf, { topic: null, seq: null });
      // 0x01, topic length (u8), topic, seq (u64 big-endian), payload.
      const b = new Uint8Array(buf);
      const n = b[1];
      if (b[0] !== 1 || b.length < 10 + n) return onError("unreadable binary envelope");
      const topic = String.fromCharCode.apply(null, b.subarray(2, 2 + n));
      const dv = new DataView(buf, 2 + n, 8);
      const seq = dv.getUint32(0) * 4294967296 + dv.getUint32(4);
      deliver(topic, seq, b.subarray(10 + n));
    }

    function reply(m) {
      const req = pending.shift();
      if (!req) return m.op === "error" ? onError(m.error) : undefined;
      if (req.op === "resume") held.delete(req.topic);
      if (req.done) req.done(m.op !== "error");
      const t = req.topic;
      if (m.op === "subscribed") return want.has(t) && settle(t, true);
      if (m.op !== "error") return;
      if (req.op === "resume" && SINCE_AHEAD.test(m.error) && want.has(t)) {
        // A restarted server that could not be told our epoch: its numbers are not ours.
        // Start the topic again from what it holds (or its latest message, with snapshot).
        restart(t);
        return opts.snapshot
          ? request({ op: "subscribe", topics: [t], snapshot: true }, { op: "subscribe", topic: t })
          : request({ op: "subscribe", topics: [t], since: { [t]: 0 } }, { op: "subscribe", topic: t });
      }
      if (req.op === "subscribe" || req.op === "resume") {
        want.delete(t);
        last.delete(t);
        epochs.delete(t);
        settle(t, false);
      }
      onError(m.error);
    }

    /** Topic `t`'s numbering restarted: its seqs start again, and continuity is broken. */
    function restart(t) {
      const from = last.has(t) ? last.get(t) + 1 : 1;
      last.delete(t);
      onGap({ topic: t, from, to: null, reset: true });
    }

    function parse(text) {
      try {
        const m = JSON.parse(text);
        return m && typeof m === "object" ? m : null;
      } catch (e) {
        return null;
      }
    }

    function isOpen() {
      return ws !== null && ws.readyState === WebSocket.OPEN;
    }

    function online() {
      // Back on the network: try now rather than at the end of a long back-off.
      if (retryTimer !== null) {
        clearTimeout(retryTimer);
        dial();
      }
    }

    const conn = {
      /** "connecting", "open", "reconnecting" or "closed". */
      get state() {
        return state;
      },
      /** The topics asked for, in the order they were added. */
      get topics() {
        return Array.from(want);
      },
      /** "ringcast.v1" when the open connection speaks it, else "". */
      get protocol() {
        return v1 ? V1 : "";
      },
      /** The last sequence number seen of `topic` (v1), or undefined. */
      lastSeq(topic) {
        return last.get(topic);
      },
      /** Adds topics; with v1 and `snapshot` each starts with its latest message. Resolves
       *  once the server has them all (true; after a reconnection if need be), or refused one
       *  (false; onError tells why). */
      subscribe(topics, how) {
        const snapshot = how && how.snapshot !== undefined ? how.snapshot : opts.snapshot;
        const confirmed = [];
        for (const t of topics) {
          if (closed) break;
          if (!want.has(t)) {
            want.add(t);
            if (isOpen()) {
              const msg = { op: "subscribe", topics: [t] };
              if (v1 && snapshot) msg.snapshot = true;
              request(msg, { op: "subscribe", topic: t });
            } // else the next connection's path carries it
          }
          confirmed.push(confirmation(t));
        }
        return Promise.all(confirmed).then((oks) => !closed && oks.every(Boolean));
      },
      /** Removes topics; one subscribed again later starts afresh, not from its old seq.
       *  Resolves once the server has confirmed (at once when not connected). */
      unsubscribe(topics) {
        const confirmed = [];
        for (const t of topics) {
          if (!want.delete(t)) continue;
          last.delete(t);
          epochs.delete(t);
          held.delete(t);
          active.delete(t);
          settle(t, false);
          if (isOpen()) {
            const msg = { op: "unsubscribe", topics: [t] };
            confirmed.push(new Promise((done) => request(msg, { op: "unsubscribe", topic: t, done })));
          }
        }
        return Promise.all(confirmed).then(() => undefined);
      },
      /** Closes for good: no reconnection. */
      close() {
        if (closed) return;
        closed = true;
        clearTimeout(retryTimer);
        retryTimer = null;
        if (typeof removeEventListener === "function") removeEventListener("online", online);
        if (ws) drop(1000, "");
        for (const t of Array.from(waiting.keys())) settle(t, false);
        setState("closed", { code: 1000 });
      },
    };

    if (typeof addEventListener === "function") addEventListener("online", online);
    setState("connecting");
    dial();
    return conn;
  }

  return { connect, endpoint, sameOrigin, V1 };
});
