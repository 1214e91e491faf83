// curvechat dashboard: polls the state of every node once a second, through the
// node that served this page (its own origin only), and draws the graphs as
// SVG with the chart code of shared.js (no third-party code). A failed poll
// marks that node "unreachable" and logs a node-down event here, in the page;
// the page itself keeps running and keeps retrying.
//
// The token, fetching, untrusted text, formatting and graphs are shared.js's
// (`CurvechatUI`, also the monitor's): every text that comes from a node
// (user and client names, events, errors) is put in the page as text, never
// as HTML, with control, bidi and invisible characters shown as placeholders.
"use strict";

const POLL_MS = 1000;
const NODES_EVERY = 10; // re-read the node list every N polls
const HISTORY_MS = 3600 * 1000;
const MAX_EVENTS = 300;
const UI = CurvechatUI;
const { CHARTS, visible, fetchJSON, fmtDuration, fmtTime, fmtNum, fmtBytes, el } = UI;

const state = {
  nodes: new Map(), // key (the path the page polls) -> node record
  windowMs: 300 * 1000,
  pageEvents: [], // node up/down as seen from this page
  listError: "", // why the node list could not be read (shown while no node is known)
  needToken: false, // the node refused the page's token (or it has none)
  polls: 0,
};

const LEVELS = new Set(["info", "warning", "error"]);

function nodeRecord(entry) {
  return {
    key: entry.state, name: entry.name, url: entry.url || "", path: entry.state, info: entry,
    up: null, lastOk: 0, error: "", history: [], events: [], eventsAfter: 0, boot: entry.boot,
    connections: [], downSince: null, peerReturns: null,
  };
}

async function refreshNodeList() {
  try {
    const data = await fetchJSON("api/nodes");
    for (const entry of data.nodes) {
      if (typeof entry.state !== "string" || !entry.state.startsWith("api/")) continue;
      if (!state.nodes.has(entry.state)) state.nodes.set(entry.state, nodeRecord(entry));
    }
    state.listError = "";
    state.needToken = false;
  } catch (err) {
    // The node serving this page is down: keep showing the nodes we know.
    state.listError = String(err.message || err);
    if (err.status === 401) state.needToken = true;
  }
}

function pageEvent(kind, level, node, detail) {
  state.pageEvents.push({ t: Date.now(), kind, level, node, detail, user: null, source: "page" });
  if (state.pageEvents.length > MAX_EVENTS) state.pageEvents.shift();
}

function markDown(node, error) {
  node.error = error;
  if (node.up !== false) {
    node.downSince = Date.now();
    pageEvent("node_down", "error", node.name, `${node.name} unreachable (${node.error})`);
  }
  node.up = false;
}

async function pollNode(node) {
  const last = node.history.length ? node.history[node.history.length - 1].t : 0;
  let data;
  try {
    data = await fetchJSON(`${node.path}?since=${Number(last)}&events_after=${Number(node.eventsAfter)}`);
  } catch (err) {
    if (err.status === 401) state.needToken = true;
    markDown(node, err.name === "AbortError" ? "no answer" : String(err.message || err));
    return;
  }
  const lists = [data && data.history, data && data.events, data && data.connections];
  if (!data || !data.node || !lists.every(Array.isArray)) throw new Error("not a node's state");
  if (node.boot && data.node.boot !== node.boot) {
    // The node restarted: its history and event numbers start over.
    node.history = [];
    node.eventsAfter = 0;
    pageEvent("node_restarted", "warning", node.name, `${node.name} restarted`);
  }
  if (node.up === false) {
    pageEvent("node_up", "info", node.name, `${node.name} reachable again`);
  }
  node.up = true;
  node.error = "";
  node.downSince = null;
  node.lastOk = Date.now();
  node.boot = data.node.boot;
  node.info = data.node;
  node.name = data.node.name;
  node.connections = data.connections;
  node.peerReturns = data.peer_returns || null;
  for (const s of data.history) node.history.push(s);
  const cutoff = (UI.finite(data.now) ? data.now : Date.now()) - HISTORY_MS;
  while (node.history.length && node.history[0].t < cutoff) node.history.shift();
  for (const e of data.events) {
    node.events.push(e);
    node.eventsAfter = Math.max(node.eventsAfter, e.seq);
  }
  if (node.events.length > MAX_EVENTS) node.events.splice(0, node.events.length - MAX_EVENTS);
}

// Each node's poll on its own: an answer this page cannot use marks that
// node unreachable, and the other nodes are polled and drawn as ever.
async function pollGuarded(node) {
  try {
    await pollNode(node);
  } catch (err) {
    console.error(`polling ${node.path} failed`, err);
    markDown(node, `its answer cannot be shown (${String(err.message || err)})`);
  }
}

async function tick() {
  if (state.polls % NODES_EVERY === 0 || state.nodes.size === 0 || state.needToken) {
    await refreshNodeList();
  }
  state.polls += 1;
  await Promise.all([...state.nodes.values()].map(pollGuarded));
}

// --- charts -----------------------------------------------------------------------
function drawChart(spec, now) {
  const nodes = [...state.nodes.values()];
  const start = now - state.windowMs;
  // Shaded from when a node became unreachable (from the page's point of view).
  const bands = nodes.filter((n) => n.up === false && n.downSince).map((n) => [n.downSince, null]);
  UI.drawChart(document.getElementById(spec.id), spec, UI.chartLines(spec, nodes, start), {
    start, now, bands,
    emptyText: nodes.some((n) => n.up === false) ? "node unreachable" : "waiting for data…",
  });
}

// --- nodes, connections, events --------------------------------------------------
// etcd's space quota (cluster mode): the fullest member's file against the
// quota, as text; amber from 60 %, red from 80 % (the node logs both).
function quotaLine(q) {
  if (!q || typeof q.used !== "number" || typeof q.quota_bytes !== "number") return null;
  const pct = q.used * 100;
  const cls = pct >= 80 ? "bad" : pct >= 60 ? "warn" : "ok";
  const source = q.quota_source === "etcd" ? "reported by etcd" : String(q.quota_source || "");
  return el("div", { class: "node-quota", "data-quota": cls, title: `fullest member: ${q.member || "?"}` },
    "etcd quota ", el("span", { class: cls }, `${fmtNum(pct, "%")} used`),
    ` · ${fmtBytes(q.db_bytes)} of ${fmtBytes(q.quota_bytes)} (${fmtBytes(q.in_use_bytes)} in use) · quota ${source}`);
}

function renderNodes(now) {
  const box = document.getElementById("nodes");
  const cards = [];
  for (const node of state.nodes.values()) {
    if (!UI.guarded("drawing a node's card", () => cards.push(nodeCard(node, now)))) {
      cards.push(el("div", { class: "card node down", "data-node": visible(node.name), "data-up": "false" },
        el("div", { class: "node-head" }, el("span", { class: "node-name" }, node.name),
          el("span", { class: "node-state" }, "cannot be shown"))));
    }
  }
  box.replaceChildren(...cards);
}

function nodeCard(node, now) {
  const info = node.info || {};
  const latest = node.history.length ? node.history[node.history.length - 1] : {};
  const storeBad = info.store_ok === false;
  const cls = node.up === false ? "down" : storeBad || info.draining ? "degraded" : "up";
  const label = node.up === false ? "node unreachable" : node.up === null ? "connecting…" : storeBad ? "store unavailable" : info.draining ? "draining" : "up";
  const stat = (k, v) => el("div", { class: "stat" }, el("div", { class: "v" }, v), el("div", { class: "k" }, k));
  const live = node.up === true;
  const foot = el("div", { class: "node-foot" });
  // What another node reports comes through as it sent it: `el` shows its
  // texts with `visible`, and a string appended to the footer as it is
  // needs `visible` of its own (its endpoint, or the error of fetching it,
  // which names its registered URL and what it answered).
  if (node.up === false) {
    foot.append(el("span", { class: "bad" }, `down for ${fmtDuration(now - node.downSince)}`),
      ` · last seen ${node.lastOk ? fmtTime(node.lastOk) : "never"} · ${visible(node.error)}`);
  } else {
    const where = visible(info.endpoint || "") + (info.bound && info.bound !== info.endpoint ? ` (bound ${visible(info.bound)})` : "");
    foot.append(`started ${info.started_at ? fmtTime(info.started_at) : "–"} · ${where} · store ${storeBad ? "UNAVAILABLE: " + visible(info.store_error || "") : "ok"}`);
  }
  return el("div", { class: `card node ${cls}`, "data-node": visible(node.name), "data-up": String(node.up) },
    el("div", { class: "node-head" },
      el("span", { class: "node-name" }, node.name),
      el("span", { class: "node-state" }, label)),
    el("div", { class: "node-stats" },
      stat("uptime", live && info.started_at ? fmtDuration(now - info.started_at) : "–"),
      stat("clients", live ? clientShare(latest.clients) : "–"),
      stat("msgs/s in", live ? fmtNum(latest.msgs_in, "") : "–"),
      stat("msgs/s out", live ? fmtNum(latest.msgs_out, "") : "–"),
      stat("delivery p99", live ? fmtNum(latest.deliver_p99_ms, "ms") : "–"),
      stat("cpu", live ? fmtNum(latest.cpu_percent, "%") : "–"),
      stat("memory", live ? fmtBytes(latest.rss_bytes) : "–")),
    ...(live && info.etcd_quota ? [quotaLine(info.etcd_quota)].filter(Boolean) : []),
    foot);
}

// Clients per node: the count and its share of the clients of the nodes up
// (clients spread over the nodes by a hash of their user name).
function clientShare(count) {
  if (typeof count !== "number") return fmtNum(count, "");
  let total = 0;
  for (const n of state.nodes.values()) {
    const last = n.up === true && n.history.length ? n.history[n.history.length - 1].clients : 0;
    total += typeof last === "number" ? last : 0;
  }
  const share = total > 0 && state.nodes.size > 1 ? ` (${Math.round((count * 100) / total)} %)` : "";
  return `${fmtNum(count, "")}${share}`;
}

function renderConnections(now) {
  const rows = [];
  for (const node of state.nodes.values()) {
    for (const c of node.connections || []) rows.push({ ...c, stale: node.up === false });
  }
  const body = document.querySelector("#connections tbody");
  const trs = rows.map((c) => {
    const gone = c.state !== "live";
    const left = c.state === "left" && !c.stale; // a clean exit (goodbye): grey, not a failure
    const st = c.stale ? "node unreachable" : gone ? `${c.state} ${c.gone_since ? fmtTime(c.gone_since) : ""}` : "live";
    const hb = c.last_heartbeat
      ? [fmtTime(c.last_heartbeat), el("span", { class: "ago" }, `${fmtDuration(now - c.last_heartbeat)} ago`)]
      : ["–"];
    return el("tr", { class: gone || c.stale ? "gone" : "", "data-user": visible(c.user), "data-state": visible(c.state) },
      el("td", {}, c.user || `key ${c.key}…`),
      el("td", { class: "client", title: visible(c.client) }, c.client || "–"),
      el("td", {}, c.node),
      el("td", {}, el("span", { class: `state ${left ? "left" : gone || c.stale ? "gone" : "live"}` }, st)),
      el("td", {}, fmtTime(c.connected_since), el("span", { class: "ago" }, `(${fmtDuration(now - c.connected_since)})`)),
      el("td", {}, ...hb),
      el("td", { class: "num" }, String(c.outbox ?? 0)),
      el("td", { class: "num" }, typeof c.rtt_ms === "number" ? `${c.rtt_ms.toFixed(1)} ms` : "–"),
      el("td", { class: "num" }, String(c.reconnects)));
  });
  if (!trs.length) trs.push(el("tr", { class: "empty-row" }, el("td", { colSpan: 9 }, "no client connections")));
  body.replaceChildren(...trs);
  const live = rows.filter((r) => r.state === "live" && !r.stale).length;
  const left = rows.filter((r) => r.state === "left" && !r.stale).length;
  const lost = rows.length - live - left;
  document.getElementById("conn-count").textContent =
    `${live} live · ${lost} lost` + (left ? ` · ${left} left` : "");
}

// Clients that came back from an outage with messages exchanged peer to peer,
// over the nodes (each counts since it started; a node down keeps its last).
function renderPeerReturns() {
  const count = (v) => (Number.isSafeInteger(v) && v >= 0 ? v : 0);
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const known = [...state.nodes.values()].filter((n) => n.peerReturns);
  const clients = known.reduce((sum, n) => sum + count(n.peerReturns.clients), 0);
  const messages = known.reduce((sum, n) => sum + count(n.peerReturns.messages), 0);
  const box = document.getElementById("peer-returns");
  box.setAttribute("data-clients", String(clients));
  box.setAttribute("data-messages", String(messages));
  box.replaceChildren("came back with peer-to-peer messages: ",
    el("b", {}, known.length ? `${plural(clients, "client")}, ${plural(messages, "message")}` : "–"));
}

function renderEvents() {
  const all = [...state.pageEvents];
  for (const node of state.nodes.values()) all.push(...node.events);
  all.sort((a, b) => b.t - a.t);
  const items = all.slice(0, 100).map((e) =>
    el("li", { class: LEVELS.has(e.level) ? e.level : "", "data-kind": visible(e.kind), "data-user": visible(e.user) },
      el("span", { class: "t" }, fmtTime(e.t)),
      el("span", { class: "kind" }, String(e.kind).replaceAll("_", " ")),
      el("span", {}, e.detail, " ", el("span", { class: "src" }, e.source === "page" ? "(seen by this page)" : `· ${e.node}`))));
  if (!items.length) items.push(el("li", {}, el("span", { class: "none" }, "no events yet")));
  document.getElementById("events").replaceChildren(...items);
}

function renderOverall() {
  const nodes = [...state.nodes.values()];
  const pill = document.getElementById("overall");
  let cls = "pill-wait";
  let text = "connecting…";
  if (state.needToken) {
    cls = "pill-bad";
    text = "access token required";
  } else if (!nodes.length && state.listError) {
    cls = "pill-bad";
    text = "node unreachable";
  } else if (nodes.some((n) => n.up === false)) {
    cls = "pill-bad";
    const down = nodes.filter((n) => n.up === false).length;
    text = nodes.length === 1 ? "node unreachable" : `${down} of ${nodes.length} nodes unreachable`;
  } else if (nodes.some((n) => n.info && n.info.store_ok === false)) {
    cls = "pill-warn";
    text = "store unavailable";
  } else if (nodes.length && nodes.every((n) => n.up === true)) {
    cls = "pill-ok";
    text = `healthy · ${nodes.length} node${nodes.length > 1 ? "s" : ""} up`;
  }
  pill.className = `pill ${cls}`;
  pill.textContent = text;
}

function renderTokenForm() {
  const form = document.getElementById("token-form");
  if (form.hidden === !state.needToken) return;
  form.hidden = !state.needToken;
  document.getElementById("token-why").textContent = UI.token()
    ? "The node refused this token."
    : "This node needs its HTTP access token.";
}

// Each part on its own (`UI.guarded`): one that throws leaves the others drawn.
function render() {
  const now = Date.now();
  document.getElementById("clock").textContent = fmtTime(now);
  UI.guarded("the token form", renderTokenForm);
  UI.guarded("the status line", renderOverall);
  UI.guarded("the node cards", () => renderNodes(now));
  for (const spec of CHARTS) UI.guarded(`drawing ${spec.id}`, () => drawChart(spec, now));
  UI.guarded("the connection table", () => renderConnections(now));
  UI.guarded("the peer-to-peer count", renderPeerReturns);
  UI.guarded("the events", renderEvents);
  const samples = [...state.nodes.values()].reduce((n, node) => n + node.history.length, 0);
  document.body.setAttribute("data-samples", String(samples));
  document.body.setAttribute("data-polls", String(state.polls));
}

async function loop() {
  for (;;) {
    const started = Date.now();
    try {
      await tick();
    } catch (err) {
      console.error("dashboard update failed", err);
    }
    render();
    await new Promise((resolve) => setTimeout(resolve, Math.max(100, POLL_MS - (Date.now() - started))));
  }
}

document.getElementById("window").addEventListener("change", (ev) => {
  state.windowMs = Number(ev.target.value) * 1000;
  render();
});
document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token-input");
  UI.setToken(input.value.trim());
  input.value = "";
  state.needToken = false;
  state.polls = 0;
  render();
});
window.addEventListener("hashchange", UI.takeTokenFromFragment);
window.addEventListener("resize", () => render());
UI.takeTokenFromFragment();
loop();
