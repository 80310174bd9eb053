// The console's first paint of the list in headless Chromium: from navigation (the token in
// the tab's storage, as after a login) to the list's rows on screen, REPEAT times; prints
// {"paint_p50_ms", "paint_max_ms", "runs"} as JSON. For bench/console.py.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../tests/browser/package.json"));
const { chromium } = require("playwright-core");
const { CONSOLE_URL, TOKEN } = process.env;
const REPEAT = Number(process.env.REPEAT || 20);

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--headless", "--no-sandbox"] });
try {
  const context = await browser.newContext();
  await context.addInitScript((token) => sessionStorage.setItem("meet-webhooks-token", token), TOKEN);
  const page = await context.newPage();
  const times = [];
  for (let i = 0; i < REPEAT; i++) {
    await page.goto(`${CONSOLE_URL}/?run=${i}`);
    await page.waitForSelector("#rows tr");
    // The rows are in the DOM; the next frame puts them on screen.
    times.push(await page.evaluate(() => new Promise((done) => requestAnimationFrame(() => done(performance.now())))));
  }
  times.sort((a, b) => a - b);
  const at = (q) => Math.round(times[Math.min(times.length - 1, Math.floor(q * times.length))] * 10) / 10;
  console.log(JSON.stringify({ request: "first paint of the list (Chromium)", paint_p50_ms: at(0.5), paint_max_ms: at(1), runs: times.length }));
} finally {
  await browser.close();
}
