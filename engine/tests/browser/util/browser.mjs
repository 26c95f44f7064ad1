// Debian's Chromium, headless, driven through playwright-core (never a downloaded browser).
import { existsSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";
import { chromium } from "playwright-core";
import { ROOT } from "./server.mjs";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

export async function launch() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium (or set CHROMIUM)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    // This machine has no network beyond loopback: keep Chromium from calling home.
    args: [
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** A new page that fails the test on any script error it reports. */
export async function newPage(browser, viewport = { width: 1200, height: 560 }) {
  const page = await browser.newPage({ viewport });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error" && !/WebSocket connection to|Failed to load resource|net::ERR_|blocked by CORS policy/.test(m.text())) {
      errors.push(m.text());
    }
  });
  page.errors = errors;
  return page;
}

/** The file:// URL of a file of the repository, with a query. */
export function fileUrl(relative, query = "") {
  return pathToFileURL(path.join(ROOT, relative)).href + query;
}
