// A TCP proxy between the browser and the server, so a test can break the network without
// stopping the server: cut() resets every connection, down() also refuses new ones until
// up(), freeze() stops forwarding on the open ones while keeping them open (a dead peer).
import net from "node:net";

export async function startProxy(targetPort) {
  const pairs = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) return client.resetAndDestroy();
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair = { client, upstream, frozen: false };
    pairs.add(pair);
    const forward = (from, to) =>
      from.on("data", (d) => {
        if (!pair.frozen) to.write(d);
      });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    get connections() {
      return pairs.size;
    },
    cut() {
      for (const { client, upstream } of pairs) {
        client.resetAndDestroy();
        upstream.destroy();
      }
      pairs.clear();
    },
    down() {
      refusing = true;
      this.cut();
    },
    up() {
      refusing = false;
    },
    freeze() {
      for (const pair of pairs) pair.frozen = true;
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
