// The demo page (engine/src/server/web/index.html) in Chromium against the real
// `ringcast serve --demo`: ticks and latency shown, a symbol unsubscribed stops, a server
// restart is survived; ends with the README's screenshot (SCREENSHOT, default
// target/browser/demo.png).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { launch, newPage, fileUrl } from "./util/browser.mjs";
import { startServer, ROOT } from "./util/server.mjs";

const DEMO = ["--demo", "--demo-rate", "20"];
const SYMBOLS = ["BTC-USD", "ETH-USD", "SOL-USD", "EUR-USD", "AAPL"];

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** The page as the server serves it (GET /), or else from its file, told the server. */
async function demoUrl(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/`);
    if (res.ok && /text\/html/.test(res.headers.get("content-type") || "")) {
      return { url: `http://127.0.0.1:${port}/`, served: true };
    }
  } catch (e) {
    // not served (yet): the file it is
  }
  return { url: fileUrl("engine/src/server/web/index.html", `?server=127.0.0.1:${port}`), served: false };
}

function until(page, fn, arg, timeout = 15000) {
  return page.waitForFunction(fn, arg, { timeout, polling: 20 });
}

/** The seq shown in each symbol's row. */
const seqs = (page) =>
  page.evaluate(() =>
    Object.fromEntries(Array.from(document.querySelectorAll("tbody tr"), (tr) =>
      [tr.dataset.symbol, tr.querySelector(".seq").textContent])));

const cell = (page, symbol, name) => page.textContent(`tr[data-symbol="${symbol}"] .${name}`);

test("the demo page: live ticks, unsubscribe, a server restart", { timeout: 60000 }, async (t) => {
  let server = await startServer(DEMO);
  const port = server.port;
  const { url, served } = await demoUrl(port);
  t.diagnostic(served ? `page served by ringcast: ${url}` : `page from its file: ${url}`);
  const page = await newPage(browser, { width: 1200, height: 400 });
  try {
    await page.goto(url);

    await t.test("ticks arrive for every symbol, with latency", async () => {
      await until(page, () => document.getElementById("state").dataset.state === "open");
      await until(page, () => Array.from(document.querySelectorAll("tbody tr")).every((tr) =>
        /^\d+$/.test(tr.querySelector(".seq").textContent) && / ms$/.test(tr.querySelector(".latency").textContent)));
      await until(page, () => Number(document.getElementById("total-rate").textContent) > 0);
      assert.match(await page.textContent("#lat-p50"), /^\d+\.\d ms$/);
      const bid = Number((await cell(page, "BTC-USD", "bid")).replace(/,/g, ""));
      assert.ok(bid > 80000 && bid < 110000, `BTC bid ${bid}`);
      assert.deepEqual(await page.evaluate(() => window.ringcastDemo.conn.topics), SYMBOLS);
      if (served) {
        // The server's own numbers: two reactors (startServer), our one connection at least.
        await until(page, () => !document.getElementById("server").hidden);
        assert.equal(await page.textContent("#s-reactors"), "2");
        assert.ok(Number(await page.textContent("#s-connections")) >= 1);
      } else {
        assert.ok(await page.$eval("#server", (e) => e.hidden), "a /stats panel without /stats");
      }
    });

    await t.test("an unchecked symbol stops updating; checked again, it resumes", async () => {
      await page.uncheck('tr[data-symbol="ETH-USD"] input');
      assert.deepEqual(await page.evaluate(() => window.ringcastDemo.conn.topics), SYMBOLS.filter((s) => s !== "ETH-USD"));
      // Its rate falls to 0 once its last tick leaves the one-second window...
      await until(page, () => document.querySelector('tr[data-symbol="ETH-USD"] .rate').textContent === "0");
      const frozen = await cell(page, "ETH-USD", "seq");
      const btc = Number(await cell(page, "BTC-USD", "seq"));
      // ...and stays put while the others tick on (20 ticks: a second of the feed).
      await until(page, (n) => Number(document.querySelector('tr[data-symbol="BTC-USD"] .seq').textContent) >= n, btc + 20);
      assert.equal(await cell(page, "ETH-USD", "seq"), frozen);
      assert.equal(await cell(page, "ETH-USD", "rate"), "0");
      assert.ok(await page.$eval('tr[data-symbol="ETH-USD"]', (tr) => tr.classList.contains("paused")));
      await page.check('tr[data-symbol="ETH-USD"] input');
      await until(page, (f) => document.querySelector('tr[data-symbol="ETH-USD"] .seq').textContent !== f, frozen);
    });

    await t.test("a restarted server: reconnecting, then open, and the ticks come back", async () => {
      const before = await seqs(page);
      await server.stop();
      await until(page, () => document.getElementById("state").dataset.state === "reconnecting");
      assert.match(await page.textContent("#state-text"), /^reconnecting/);
      server = await startServer(DEMO, port);
      await until(page, () => document.getElementById("state").dataset.state === "open");
      // Every row gets quotes from the new server (its numbers start again from 1).
      await until(page, (b) => Array.from(document.querySelectorAll("tbody tr")).every((tr) =>
        tr.querySelector(".seq").textContent !== b[tr.dataset.symbol]), before);
      if (served) await until(page, () => !document.getElementById("server").hidden);
      const events = await page.textContent("#events");
      assert.match(events, /dropped \(1001/);
      assert.deepEqual(page.errors, []);
    });

    // The picture: a second of the new server's feed (20 ticks/s a symbol).
    await until(page, () => Array.from(document.querySelectorAll("tbody tr")).every((tr) =>
      Number(tr.querySelector(".seq").textContent) >= 20 && Number(tr.querySelector(".rate").textContent) >= 10));
    const shot = process.env.SCREENSHOT ||
      path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "browser", "demo.png");
    mkdirSync(path.dirname(path.resolve(ROOT, shot)), { recursive: true });
    await page.screenshot({ path: path.resolve(ROOT, shot), fullPage: true });
    t.diagnostic(`screenshot: ${shot}`);
  } finally {
    await page.close();
    await server.stop();
  }
});
