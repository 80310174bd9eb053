// The inbox console in headless Chromium, against a real receiver that tests/console.rs
// started (its environment says where). Each step checks what an operator would see; the Rust
// side then checks what the receiver did. Exits non-zero on the first failed check.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const { CHROMIUM, CONSOLE_URL, WEBHOOK_URL, TOKEN, KEY, SEND, DEAD_ID, SECOND_DEAD_ID, EVENT, DATA, SCREENSHOTS } = process.env;
const HOSTILE = "<img src=x onerror=window.pwned=1>";

/// Sends `data` as `event` with the real `meet-webhooks send`, signed as the provider signs.
function send(event, data) {
  const file = path.join(os.tmpdir(), `meet-webhooks-browser-${process.pid}.json`);
  fs.writeFileSync(file, JSON.stringify(data));
  const sent = spawnSync(SEND, ["send", "--url", WEBHOOK_URL, "--key", KEY, "--data", file, event], { encoding: "utf8" });
  fs.unlinkSync(file);
  assert.equal(sent.status, 0, `send: ${sent.stderr}`);
}

/// The API, with the token, as a check of what the page did.
async function api(route) {
  const response = await fetch(`${CONSOLE_URL}${route}`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(response.status, 200, route);
  return response.json();
}

/// The texts of a column of the list.
const column = (page, n) => page.$$eval(`#rows tr td:nth-child(${n})`, (cells) => cells.map((c) => c.textContent));

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--headless", "--no-sandbox"] });
const evil = http.createServer();
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  const scriptErrors = [];
  page.on("pageerror", (e) => scriptErrors.push(e.message));
  page.on("dialog", (dialog) => dialog.accept());

  // Without the token: the prompt, and no data.
  await page.goto(CONSOLE_URL);
  await page.waitForSelector("#login:not([hidden])");
  assert.ok(await page.isHidden("#inbox"), "the inbox is hidden");
  assert.ok(!(await page.content()).includes("room-dead"), "no delivery on the prompt");
  await page.fill("#token", "not-the-token-0000000");
  await page.click("#login button[type=submit]");
  await page.waitForFunction(() => document.getElementById("login-error").textContent.length > 0);
  assert.ok(await page.isHidden("#inbox"), "a wrong token shows nothing");

  // Logged in: the dead delivery is listed, its time in this zone with UTC on hover.
  await page.fill("#token", TOKEN);
  await page.click("#login button[type=submit]");
  await page.waitForSelector(`#rows tr[data-id="${DEAD_ID}"]`);
  assert.match(await page.getAttribute(`#rows tr[data-id="${DEAD_ID}"] time`, "title"), / UTC$/);
  assert.equal(await page.textContent("#count-dead"), "2");

  // A cross-site POST: a page of another origin posts a form to the replay route.
  evil.on("request", (_, res) => {
    res.setHeader("content-type", "text/html");
    res.end(`<form method="post" action="${CONSOLE_URL}/api/replay" enctype="text/plain">
      <input name='{"ids":[${DEAD_ID}],"x":"' value='"}'></form>
      <script>document.forms[0].submit()</script>`);
  });
  await new Promise((ready) => evil.listen(0, "127.0.0.1", ready));
  const attacker = await context.newPage();
  const [refused] = await Promise.all([
    attacker.waitForResponse((r) => r.url().endsWith("/api/replay")),
    attacker.goto(`http://127.0.0.1:${evil.address().port}/`),
  ]);
  assert.equal(refused.status(), 401, "the cross-site POST is refused");
  await attacker.close();
  assert.equal((await api(`/api/deliveries/${DEAD_ID}`)).state, "dead", "and replayed nothing");

  // A delivery sent now appears without a reload; its hostile room name is text.
  await page.evaluate(() => { window.notReloaded = true; });
  send(EVENT, Object.assign(JSON.parse(DATA), { roomId: HOSTILE }));
  await page.waitForFunction((room) => [...document.querySelectorAll("#rows td")].some((td) => td.textContent === room), HOSTILE);
  assert.equal(await page.evaluate(() => window.notReloaded), true, "no reload");
  assert.equal(await page.$$eval("#rows img, #detail img", (images) => images.length), 0, "no element from the room name");
  assert.equal(await page.evaluate(() => window.pwned), undefined, "nothing ran");

  // Filters: by event, by room.
  await page.fill("#event", EVENT);
  await page.click("#filters button[type=submit]");
  await page.waitForFunction((event) => {
    const cells = [...document.querySelectorAll("#rows tr td:nth-child(4)")];
    return cells.length > 0 && cells.every((c) => c.textContent === event);
  }, EVENT);
  await page.fill("#event", "");
  await page.fill("#room", "room-dead");
  await page.click("#filters button[type=submit]");
  await page.waitForFunction(() => document.querySelectorAll("#rows tr").length === 1);
  assert.deepEqual(await column(page, 5), ["room-dead"]);

  // One delivery: its body, its attempt; replayed from the page (confirmed), it runs again.
  await page.click(`#rows tr[data-id="${DEAD_ID}"]`);
  await page.waitForSelector("#detail:not([hidden])");
  assert.equal(JSON.parse(await page.textContent("#body")).data.roomId, "room-dead");
  assert.match(await page.textContent("#attempts"), /dead/);
  if (SCREENSHOTS) await page.screenshot({ path: path.join(SCREENSHOTS, "console-delivery.png"), fullPage: true });
  await page.click("#replay");
  await page.waitForFunction(() => document.querySelectorAll("#attempts tr").length === 2);
  assert.match(await page.textContent("#attempts tr:last-child"), /done/);
  assert.equal((await api(`/api/deliveries/${DEAD_ID}`)).state, "done");

  // The other dead one, ticked in the list and replayed as a selection (confirmed).
  await page.click("#clear");
  await page.waitForSelector(`#rows tr[data-id="${SECOND_DEAD_ID}"] input.select`);
  assert.ok(await page.isDisabled("#replay-selected"), "nothing selected yet");
  await page.check(`#rows tr[data-id="${SECOND_DEAD_ID}"] input.select`);
  assert.equal(await page.textContent("#detail-id"), DEAD_ID, "ticking a row does not open it");
  await page.click("#replay-selected");
  for (let tries = 0; (await api(`/api/deliveries/${SECOND_DEAD_ID}`)).state !== "done"; tries++) {
    assert.ok(tries < 100, "the selected delivery is handled again");
    await new Promise((wait) => setTimeout(wait, 100));
  }
  await page.waitForFunction(() => document.getElementById("count-dead").textContent === "0");

  // The hostile delivery opened: still text.
  await page.waitForFunction((room) => [...document.querySelectorAll("#rows td")].some((td) => td.textContent === room), HOSTILE);
  await page.click(`#rows tr:first-child`);
  await page.waitForFunction((room) => document.getElementById("detail-fields").textContent.includes(room), HOSTILE);
  assert.equal(await page.$$eval("#detail img", (images) => images.length), 0);
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  if (SCREENSHOTS) {
    await page.click("#close");
    // The handled count follows a refresh or two behind.
    await page.waitForFunction(() => document.getElementById("count-done").textContent
      === String([...document.querySelectorAll("#rows td.state")].filter((td) => td.textContent.startsWith("done")).length));
    await page.screenshot({ path: path.join(SCREENSHOTS, "console-list.png") });
  }
  assert.deepEqual(scriptErrors, [], "the page's script ran without errors");
  console.log("the console in Chromium: every check passed");
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  evil.close();
  await browser.close();
}
