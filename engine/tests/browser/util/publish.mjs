// A publisher on the server's /pub/TOPIC WebSocket.
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
