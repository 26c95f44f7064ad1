// ringcast.js in Chromium against the real server: ordered delivery across a dropped
// connection (resume), a restarted server (reset, also once it has published past the
// client's seq: told by the epoch), a dead connection (heartbeat watchdog),
// run-time subscribe/unsubscribe, binary and plain mode. The page is client.html.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, newPage, fileUrl } from "./util/browser.mjs";
import { startServer } from "./util/server.mjs";
import { startProxy } from "./util/proxy.mjs";
import { publisher, watcher } from "./util/publish.mjs";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** client.html connected to `url` with `options`; `early` topics are subscribed at once,
 *  while the connection is still being made (window.early: the state then, the promise). */
async function open(url, options, early) {
  const page = await newPage(browser);
  await page.goto(fileUrl("engine/tests/browser/client.html"));
  await page.evaluate(([u, o, e]) => {
    window.start(u, o);
    if (e) window.early = [window.conn.state, window.conn.subscribe(e)];
  }, [url, options, early]);
  return page;
}

/** Waits until `fn(arg)`, evaluated in the page, is true. */
function until(page, fn, arg, timeout = 15000) {
  return page.waitForFunction(fn, arg, { timeout, polling: 20 });
}

const seen = (page) => page.evaluate(() => window.seen);
const texts = (from, to) => Array.from({ length: to - from }, (_, k) => JSON.stringify({ i: from + k }));
const range = (from, to) => Array.from({ length: to - from }, (_, k) => from + k);
const states = (s) => s.states.map((x) => x.state);

/** Publishes `sentinel` on `topic` and waits for it: everything sent before has arrived. */
async function settle(page, pub, topic, sentinel) {
  await pub.send([sentinel]);
  await until(page, ([t, d]) => window.seen.messages.some((m) => m.topic === t && m.data === d), [topic, sentinel]);
}

test("1 000 messages arrive in order, none missed and none twice, across a dropped connection", { timeout: 60000 }, async () => {
  const server = await startServer([]);
  const proxy = await startProxy(server.port);
  const page = await open(`ws://127.0.0.1:${proxy.port}`, { topics: ["prices"], retry: { base: 100, max: 1000 } });
  try {
    await until(page, () => window.conn.state === "open");
    const pub = await publisher(server.port, "prices");
    await pub.send(texts(0, 100));
    await until(page, () => window.seen.messages.length === 100);
    // 300 are lost on the way (the network stops carrying anything), the connection
    // breaks, and 600 more are published while the client cannot connect. Resuming from
    // its last seq must bring all 900, once each and in order.
    proxy.freeze();
    await pub.send(texts(100, 400));
    proxy.down();
    await until(page, () => window.conn.state === "reconnecting");
    await pub.send(texts(400, 1000));
    proxy.up();
    await until(page, () => window.seen.messages.length >= 1000);
    await pub.send(['"end"']);
    await until(page, () => window.seen.messages.at(-1)?.data === "end");
    const s = await seen(page);
    assert.deepEqual(s.messages.map((m) => m.seq), range(1, 1002));
    assert.deepEqual(s.messages.slice(0, 1000).map((m) => m.data.i), range(0, 1000));
    assert.ok(s.messages.every((m) => m.topic === "prices"));
    assert.deepEqual(s.gaps, []);
    assert.deepEqual(s.errors, []);
    assert.deepEqual(states(s).filter((x, k, a) => x !== a[k - 1]), ["connecting", "open", "reconnecting", "open"]);
    assert.equal(s.states[1].protocol, "ringcast.v1");
    pub.close();
  } finally {
    await page.close();
    await proxy.close();
    await server.stop();
  }
});

test("a restarted server, numbering from 1 again, is reported as a reset and followed from its start", { timeout: 60000 }, async () => {
  let server = await startServer([]);
  const port = server.port;
  const page = await open(`ws://127.0.0.1:${port}`, { topics: ["prices"], retry: { base: 100, max: 1000 } });
  try {
    await until(page, () => window.conn.state === "open");
    let pub = await publisher(port, "prices");
    await pub.send(texts(0, 50));
    await until(page, () => window.seen.messages.length === 50);
    await server.stop();
    await until(page, () => window.conn.state === "reconnecting");
    server = await startServer([], port);
    pub = await publisher(port, "prices");
    await pub.send(texts(100, 105));
    await until(page, () => window.seen.messages.length === 55);
    const s = await seen(page);
    assert.deepEqual(s.gaps, [{ topic: "prices", from: 51, to: null, reset: true }]);
    assert.deepEqual(s.messages.slice(50).map((m) => [m.seq, m.data.i]), [[1, 100], [2, 101], [3, 102], [4, 103], [5, 104]]);
    // The server said goodbye (1001 going away): not a deliberate close, so it came back.
    assert.equal(s.states.find((x) => x.state === "reconnecting").code, 1001);
    assert.equal(await page.evaluate(() => window.conn.state), "open");
    pub.close();
  } finally {
    await page.close();
    await server.stop();
  }
});

test("a restarted server that has already published past the client's seq is told apart by its epoch", { timeout: 60000 }, async () => {
  let server = await startServer([]);
  const port = server.port;
  const proxy = await startProxy(port);
  const page = await open(`ws://127.0.0.1:${proxy.port}`, { topics: ["prices"], retry: { base: 100, max: 1000 } });
  try {
    await until(page, () => window.conn.state === "open");
    let pub = await publisher(port, "prices");
    await pub.send(texts(0, 50));
    await until(page, () => window.seen.messages.length === 50);
    // The client cannot reconnect while the restarted server publishes 60: seq 1..60,
    // past its last seq 50, which a bare since=50 would take for a real position.
    proxy.down();
    await until(page, () => window.conn.state === "reconnecting");
    await server.stop();
    server = await startServer([], port);
    pub = await publisher(port, "prices");
    await pub.send(texts(100, 160));
    proxy.up();
    await until(page, () => window.seen.messages.length === 110);
    const s = await seen(page);
    assert.deepEqual(s.gaps, [{ topic: "prices", from: 51, to: null, reset: true }]);
    assert.deepEqual(s.messages.slice(50).map((m) => [m.seq, m.data.i]), range(1, 61).map((k) => [k, 99 + k]));
    assert.deepEqual(s.errors, []);
    pub.close();
  } finally {
    await page.close();
    await proxy.close();
    await server.stop();
  }
});

test("a connection gone silent past three heartbeats is replaced", { timeout: 60000 }, async () => {
  const server = await startServer(["--heartbeat", "200ms"]);
  const proxy = await startProxy(server.port);
  const page = await open(`ws://127.0.0.1:${proxy.port}`, {
    topics: ["quiet"],
    heartbeat: 200,
    retry: { base: 100, max: 1000 },
  });
  try {
    // A heartbeat tells a quiet topic's last seq (0): the watchdog is armed.
    await until(page, () => window.conn.lastSeq("quiet") === 0);
    proxy.freeze(); // open, but nothing gets through: a dead peer
    await until(page, () => window.seen.states.some((x) => x.reason === "no heartbeat"));
    await until(page, () => window.conn.state === "open");
    const pub = await publisher(server.port, "quiet");
    await settle(page, pub, "quiet", "after");
    const s = await seen(page);
    assert.deepEqual(s.messages.map((m) => [m.seq, m.data]), [[1, "after"]]);
    pub.close();
  } finally {
    await page.close();
    await proxy.close();
    await server.stop();
  }
});

test("run-time subscribe with snapshot, unsubscribe, binary and non-JSON payloads (ringcast.v1)", { timeout: 60000 }, async () => {
  const server = await startServer([]);
  const page = await open(`ws://127.0.0.1:${server.port}`, { topics: ["a"] }, ["early"]);
  try {
    // Subscribed while connecting, so not in the path dialled: subscribed once open.
    assert.deepEqual(await page.evaluate(async () => [window.early[0], await window.early[1]]), ["connecting", true]);
    assert.equal(await page.evaluate(() => window.conn.state), "open");
    const a = await publisher(server.port, "a");
    const b = await publisher(server.port, "b");
    const bPublished = await watcher(server.port, "b");
    await b.send(['{"px":1}', '{"px":2}']);
    // Both numbered before the snapshot is asked for (the send only reached a socket).
    await bPublished.received(2);
    bPublished.close();
    assert.equal(await page.evaluate(() => window.conn.subscribe(["b"], { snapshot: true })), true);
    await until(page, () => window.seen.messages.length === 1);
    await a.send([Buffer.from([0, 1, 255]), "halted"]);
    await until(page, () => window.seen.messages.length === 3);
    const early = await publisher(server.port, "early");
    await settle(page, early, "early", "first");
    await page.evaluate(() => window.conn.unsubscribe(["a"]));
    assert.equal(await page.evaluate(() => window.conn.subscribe(["no spaces"])), false);
    await a.send(["not for us"]);
    await settle(page, b, "b", "end");
    const s = await seen(page);
    assert.deepEqual(s.messages.map((m) => [m.topic, m.seq, m.data]), [
      ["b", 2, { px: 2 }], // the latest only: a snapshot
      ["a", 1, [0, 1, 255]],
      ["a", 2, "halted"],
      ["early", 1, "first"],
      ["b", 3, "end"],
    ]);
    assert.deepEqual(await page.evaluate(() => window.conn.topics), ["early", "b"]);
    assert.equal(s.errors.length, 1);
    assert.match(s.errors[0], /topic 'no spaces'/);
    for (const p of [a, b, early]) p.close();
  } finally {
    await page.close();
    await server.stop();
  }
});

test("plain mode: payloads as they come, run-time topics, reconnection", { timeout: 60000 }, async () => {
  const server = await startServer([]);
  const proxy = await startProxy(server.port);
  const page = await open(`ws://127.0.0.1:${proxy.port}`, {
    topics: ["news"],
    protocol: null,
    retry: { base: 100, max: 1000 },
  });
  try {
    await until(page, () => window.conn.state === "open");
    assert.equal(await page.evaluate(() => window.conn.protocol), "");
    const news = await publisher(server.port, "news");
    const sports = await publisher(server.port, "sports");
    await news.send(['{"op":"not a reply"}', Buffer.from([7, 8])]);
    await until(page, () => window.seen.messages.length === 2);
    // Both answered by the server before anything is published on them.
    const answered = await page.evaluate(() =>
      Promise.all([window.conn.subscribe(["sports"]), window.conn.unsubscribe(["news"])]));
    assert.deepEqual(answered, [true, undefined]);
    await settle(page, sports, null, "goal");
    proxy.cut();
    await until(page, () => window.seen.states.filter((x) => x.state === "open").length === 2);
    await news.send(["not for us"]);
    await settle(page, sports, null, "again");
    const s = await seen(page);
    assert.deepEqual(s.messages.map((m) => [m.topic, m.seq, m.data]), [
      [null, null, '{"op":"not a reply"}'],
      [null, null, [7, 8]],
      [null, null, "goal"],
      [null, null, "again"],
    ]);
    assert.deepEqual(s.errors, []);
    news.close();
    sports.close();
  } finally {
    await page.close();
    await proxy.close();
    await server.stop();
  }
});
