// The real `ringcast` binary as a child process: started on a port (0: any free one, read
// back from its log line), stopped with SIGTERM as an operator would, restartable on the
// same port.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..");

// A test that dies half-way leaves no server behind.
const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** The binary scripts/browser-test.sh built (RINGCAST_BIN), else the default target's. */
export function binary() {
  const bin = process.env.RINGCAST_BIN ||
    path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug", "ringcast");
  if (!existsSync(bin)) {
    throw new Error(`no ringcast binary at ${bin}: run scripts/browser-test.sh (it builds one) or set RINGCAST_BIN`);
  }
  return bin;
}

/** A server running `ringcast serve ARGS --listen 127.0.0.1:PORT`, ready when it resolves. */
export async function startServer(args, port = 0) {
  const child = spawn(binary(), ["serve", "--listen", `127.0.0.1:${port}`, "--threads", "2", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  running.add(child);
  const log = [];
  const exited = new Promise((resolve) =>
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }));
  const listening = new Promise((resolve, reject) => {
    let buf = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        log.push(line);
        const m = /listening on ws:\/\/127\.0\.0\.1:(\d+)/.exec(line);
        if (m) resolve(Number(m[1]));
      }
    });
    exited.then(({ code, signal }) =>
      reject(new Error(`ringcast exited (${code ?? signal}) before listening:\n${log.join("\n")}`)));
  });
  const bound = await withTimeout(listening, 20000, "ringcast did not start listening");
  return {
    port: bound,
    log,
    /** SIGTERM (close 1001 to every client, flush, exit 0); resolves on exit. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const { code, signal } = await withTimeout(exited, 20000, "ringcast did not exit after SIGTERM");
      if (code !== 0) throw new Error(`ringcast exited with ${code ?? signal}:\n${log.join("\n")}`);
    },
  };
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} (after ${ms} ms)`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
