// A publisher on the server's /pub/TOPIC WebSocket, and a plain subscriber that tells when
// the server has published what was sent.
import WebSocket from "ws";
import { withTimeout } from "./server.mjs";

export async function publisher(port, topic) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/pub/${topic}`);
  await withTimeout(new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  }), 10000, `publisher on /pub/${topic} did not connect`);
  return {
    /** Sends each text in order; resolves once they are all handed to the socket. */
    send(texts) {
      return new Promise((resolve, reject) => {
        const done = (e) => (e ? reject(e) : resolve());
        texts.forEach((t, i) => ws.send(t, i === texts.length - 1 ? done : undefined));
      });
    },
    close() {
      ws.close();
    },
  };
}

/** A plain subscriber of `topic`: `received(n)` resolves once it has had n messages, so
 *  the server has numbered and delivered them (a publisher's `send` only hands them to
 *  its socket). */
export async function watcher(port, topic) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/sub/${topic}`);
  await withTimeout(new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  }), 10000, `watcher on /sub/${topic} did not connect`);
  let count = 0;
  const waiting = [];
  ws.on("message", () => {
    count += 1;
    for (const w of waiting.filter((w) => count >= w.n)) w.resolve();
  });
  return {
    received(n) {
      const done = new Promise((resolve) => (count >= n ? resolve() : waiting.push({ n, resolve })));
      return withTimeout(done, 10000, `watcher on /sub/${topic}: fewer than ${n} messages`);
    },
    close() {
      ws.close();
    },
  };
}
