// The inbox console. Everything a delivery carries is provider data that people typed: it is
// only ever written as text (textContent, never innerHTML). The token is kept in this tab's
// sessionStorage and sent as a header, which no other site can make a browser send.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
const PAGE = 50;
let token = sessionStorage.getItem("meet-webhooks-token") || "";
// The page shown: the cursors of the pages before it (empty: the newest).
let cursors = [];
let next = null;
let openId = null;
let timer = null;
// The deliveries ticked for a replay, kept across refreshes.
const selected = new Set();

/// A fetch with the token; a 401 sends the operator back to the login prompt.
async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${token}` }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = { error: `${response.status} ${response.statusText}` };
  }
  if (response.status === 401) {
    logout(body.error);
    throw new Error(body.error);
  }
  if (!response.ok) throw new Error(body.error || `${response.status}`);
  return body;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

/// A time in the browser's zone, with UTC on hover.
function time(ms) {
  if (ms === null || ms === undefined) return el("span", "–");
  const date = new Date(ms);
  const node = el("time", date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" }));
  node.dateTime = date.toISOString();
  node.title = date.toISOString().replace("T", " ").replace("Z", " UTC");
  return node;
}

function filters() {
  const params = new URLSearchParams();
  for (const name of ["state", "event", "room", "q"]) {
    const value = $(name).value.trim();
    if (value && !(name === "state" && value === "all")) params.set(name, value);
  }
  return params;
}

async function load() {
  const params = filters();
  params.set("limit", String(PAGE));
  const before = cursors[cursors.length - 1];
  if (before !== undefined) params.set("before", String(before));
  try {
    const page = await api(`/api/deliveries?${params}`);
    $("error").textContent = "";
    render(page);
  } catch (e) {
    $("error").textContent = e.message;
  }
  schedule();
}

/// Polls while the newest page is shown.
function schedule() {
  clearTimeout(timer);
  const live = cursors.length === 0 && token !== "";
  $("live").classList.toggle("paused", !live);
  $("live").textContent = live ? "live" : "paused (older page)";
  if (live) timer = setTimeout(() => { load(); if (openId !== null) show(openId, false); }, POLL_MS);
}

function render(page) {
  // The handled count is taken apart, every few seconds: "…" until the first.
  for (const [state, count] of Object.entries(page.counts)) $(`count-${state}`).textContent = count ?? "…";
  if (page.done_counted_at) $("count-done").title = `counted at ${new Date(page.done_counted_at).toLocaleTimeString()}`;
  $("claims").textContent = page.claims.map((c) => `${c.replica}: ${c.claims} claimed`).join(" · ");
  const rows = $("rows");
  rows.replaceChildren();
  const events = new Set();
  for (const d of page.deliveries) {
    const tr = el("tr");
    tr.dataset.id = d.id;
    if (d.id === openId) tr.classList.add("open");
    // A pending delivery is handled (or being handled) already: nothing to replay.
    const tick = Object.assign(el("input"), { type: "checkbox", checked: selected.has(d.id), disabled: d.state === "pending" });
    tick.className = "select";
    tick.addEventListener("click", (e) => {
      e.stopPropagation();
      if (tick.checked) selected.add(d.id); else selected.delete(d.id);
      $("replay-selected").disabled = selected.size === 0;
    });
    tr.append(td(tick), el("td", d.id), td(time(d.received_at)), el("td", d.event ?? "–"), el("td", d.room ?? "–"),
      el("td", d.state + (d.kind === "fallback" ? " (fallback)" : ""), `state state-${d.state}`),
      el("td", d.attempts), el("td", note(d), "note"));
    tr.addEventListener("click", () => show(d.id, true));
    rows.append(tr);
    if (d.event) events.add(d.event);
  }
  const list = $("events");
  for (const event of events) {
    if (![...list.options].some((o) => o.value === event)) list.append(Object.assign(el("option"), { value: event }));
  }
  $("empty").hidden = page.deliveries.length > 0;
  $("select-page").checked = false;
  $("replay-selected").disabled = selected.size === 0;
  $("replay-selected").textContent = selected.size ? `Replay ${selected.size} selected…` : "Replay selected…";
  next = page.next;
  $("older").disabled = next === null;
  $("newest").disabled = cursors.length === 0;
}

function td(child) {
  const cell = el("td");
  cell.append(child);
  return cell;
}

function note(d) {
  if (d.last_error) return d.last_error;
  if (d.claimed_by) return `claimed by ${d.claimed_by}`;
  return "";
}

async function show(id, scroll) {
  let d;
  try {
    d = await api(`/api/deliveries/${encodeURIComponent(id)}`);
  } catch (e) {
    $("error").textContent = e.message;
    return;
  }
  openId = id;
  for (const tr of $("rows").children) tr.classList.toggle("open", tr.dataset.id === String(id));
  $("detail").hidden = false;
  $("detail-id").textContent = d.id;
  const fields = $("detail-fields");
  fields.replaceChildren();
  const field = (name, value) => {
    fields.append(el("dt", name));
    const dd = el("dd");
    dd.append(value instanceof Node ? value : document.createTextNode(value ?? "–"));
    fields.append(dd);
  };
  field("event", d.event);
  field("state", `${d.state} (${d.kind})`);
  field("attempts", String(d.attempts));
  field("room", d.room);
  field("recording", d.recording);
  field("received", time(d.received_at));
  field("created (creationDate)", time(d.created_at));
  field(d.state === "dead" ? "dead since" : "handled", time(d.done_at));
  if (d.claimed_by) field("claimed by", `${d.claimed_by} until ${new Date(d.claimed_until).toISOString()}`);
  if (d.last_error) field("last error", d.last_error);
  if (d.fallback_reason) field("fallback because", d.fallback_reason);
  if (d.late) field("late", `handled after ${d.late.event ?? "an event"} (delivery ${d.late.id}), a later event of its room`);
  const attempts = $("attempts");
  attempts.replaceChildren();
  for (const a of d.history) {
    const tr = el("tr");
    tr.append(el("td", a.attempt), el("td", a.replica ?? "–"), td(time(a.started_at)),
      el("td", a.duration_ms === null ? "never finished" : `${a.duration_ms} ms`), el("td", a.outcome), el("td", a.error ?? ""));
    attempts.append(tr);
  }
  if (d.history.length === 0) {
    const tr = el("tr");
    tr.append(el("td", "none yet"));
    attempts.append(tr);
  }
  $("headers").textContent = Object.entries(d.headers).map(([k, v]) => `${k}: ${v}`).join("\n");
  $("body").textContent = d.body !== null ? JSON.stringify(d.body, null, 2) : d.body_text;
  $("raw").textContent = d.body_hex.replace(/(.{64})/g, "$1\n");
  $("replay").hidden = d.state === "pending";
  if (scroll) $("detail").scrollIntoView({ behavior: "smooth", block: "start" });
}

async function replay(body, what) {
  if (!window.confirm(`Replay ${what}? Its handler runs again.`)) return false;
  try {
    const answer = await api("/api/replay", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    $("error").textContent = `${answer.replayed} delivery(ies) pending again`;
  } catch (e) {
    $("error").textContent = e.message;
    return false;
  }
  await load();
  if (openId !== null) show(openId, false);
  return true;
}

function logout(reason) {
  token = "";
  sessionStorage.removeItem("meet-webhooks-token");
  clearTimeout(timer);
  $("inbox").hidden = $("detail").hidden = $("counts").hidden = $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = reason || "";
  $("token").focus();
}

async function login(candidate) {
  token = candidate;
  try {
    const page = await api(`/api/deliveries?limit=${PAGE}`);
    sessionStorage.setItem("meet-webhooks-token", token);
    $("login").hidden = true;
    $("inbox").hidden = $("counts").hidden = $("logout").hidden = false;
    render(page);
    schedule();
  } catch (e) {
    $("login-error").textContent = e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (e) => { e.preventDefault(); login($("token").value); });
  $("logout").addEventListener("click", () => logout(""));
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); cursors = []; load(); });
  $("clear").addEventListener("click", () => { $("filters").reset(); cursors = []; load(); });
  $("state").addEventListener("change", () => { cursors = []; load(); });
  $("older").addEventListener("click", () => { if (next !== null) { cursors.push(next); load(); } });
  $("newest").addEventListener("click", () => { cursors = []; load(); });
  $("close").addEventListener("click", () => { openId = null; $("detail").hidden = true; load(); });
  $("replay").addEventListener("click", () => replay({ ids: [openId] }, `delivery ${openId}`));
  $("replay-selected").addEventListener("click", async () => {
    const ids = [...selected];
    if (await replay({ ids }, `${ids.length} selected deliver${ids.length === 1 ? "y" : "ies"}`)) {
      selected.clear();
      load();
    }
  });
  $("select-page").addEventListener("change", () => {
    for (const tick of document.querySelectorAll("#rows input.select:not(:disabled)")) {
      tick.checked = $("select-page").checked;
      const id = Number(tick.closest("tr").dataset.id);
      if (tick.checked) selected.add(id); else selected.delete(id);
    }
    $("replay-selected").disabled = selected.size === 0;
  });
  $("replay-dead").addEventListener("click", () => replay({ dead: true }, `every dead delivery (${$("count-dead").textContent})`));
  for (const state of document.querySelectorAll(".count")) {
    state.addEventListener("click", () => { $("state").value = state.dataset.state; cursors = []; load(); });
  }
  if (token) login(token); else logout("");
});
