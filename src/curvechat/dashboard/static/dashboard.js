// curvechat dashboard: polls the state of every node once a second, through the
// node that served this page (its own origin only), and draws the graphs as
// SVG with the small chart code below (no third-party code). A failed poll
// marks that node "unreachable" and logs a node-down event here, in the page;
// the page itself keeps running and keeps retrying.
//
// The node's HTTP token (when it asks for one) comes in the URL's fragment
// (#token=…, never sent to a server), moves to this tab's sessionStorage and
// is sent as `Authorization: Bearer`. Every text that comes from a node (user
// and client names, events, errors) is put in the page as text, never as
// HTML, with control, bidi and invisible characters shown as placeholders.
"use strict";

const POLL_MS = 1000;
const FETCH_TIMEOUT_MS = 2500;
const NODES_EVERY = 10; // re-read the node list every N polls
const HISTORY_MS = 3600 * 1000;
const MAX_EVENTS = 300;
const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#58a6ff", "#3fb97f", "#e3a23b", "#d2a8ff", "#e5534b", "#39c5cf", "#f778ba"];

// Each chart: which sample fields it draws, per node.
const CHARTS = [
  { id: "chart-clients", title: "Connected clients", unit: "", series: [{ key: "clients", label: "clients" }] },
  {
    id: "chart-messages", title: "Messages / s", unit: "/s",
    series: [{ key: "msgs_in", label: "in (accepted)" }, { key: "msgs_out", label: "out (delivered)" }],
  },
  {
    id: "chart-latency", title: "Delivery latency (send → push)", unit: "ms",
    series: [{ key: "deliver_p50_ms", label: "p50" }, { key: "deliver_p99_ms", label: "p99" }],
  },
  {
    id: "chart-store", title: "Store commit latency", unit: "ms",
    series: [{ key: "store_p50_ms", label: "p50" }, { key: "store_p99_ms", label: "p99" }],
  },
  {
    id: "chart-failures", title: "Reconnects, disconnects, auth failures", unit: "",
    series: [
      { key: "reconnects", label: "reconnects" },
      { key: "disconnects", label: "disconnects" },
      { key: "auth_failures", label: "auth failures" },
    ],
  },
  { id: "chart-process", title: "Node CPU", unit: "%", series: [{ key: "cpu_percent", label: "cpu" }] },
];

const TOKEN_KEY = "curvechat.http-token";

const state = {
  nodes: new Map(), // key (the path the page polls) -> node record
  windowMs: 300 * 1000,
  pageEvents: [], // node up/down as seen from this page
  listError: "", // why the node list could not be read (shown while no node is known)
  needToken: false, // the node refused the page's token (or it has none)
  polls: 0,
};

// --- the token ------------------------------------------------------------------------
// Taken from the fragment once, then the fragment is removed from the address
// bar (and so from history and bookmarks).
function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}
function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

// --- untrusted text -------------------------------------------------------------------
// The rules of curvechat.protocol.text, which the terminal front ends follow:
// control characters (C0, DEL, C1), format characters (bidi overrides and
// isolates, zero-width space, BOM, tags, …), line and paragraph separators
// and lone surrogates become their escape as Python writes it (ESC shows as
// \x1b, a newline as \n, RLO as \u202e); a zero-width (non-)joiner between
// two visible characters and the tags of an emoji subdivision flag stay. The
// result is only ever used as text (text nodes, textContent, attribute
// values), never parsed as HTML.
const UNSAFE = /[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/u;
const INK = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;
const FLAG = /\u{1F3F4}[\u{E0061}-\u{E007A}]{2}[\u{E0030}-\u{E0039}\u{E0061}-\u{E007A}]{1,4}\u{E007F}/gu;
const NAMED = { "\t": "\\t", "\n": "\\n", "\r": "\\r" };
function placeholder(ch) {
  if (NAMED[ch]) return NAMED[ch];
  const cp = ch.codePointAt(0);
  const hex = cp.toString(16);
  if (cp < 0x100) return `\\x${hex.padStart(2, "0")}`;
  if (cp < 0x10000) return `\\u${hex.padStart(4, "0")}`;
  return `\\U${hex.padStart(8, "0")}`;
}
function visible(value) {
  const text = String(value ?? "");
  if (!UNSAFE.test(text)) return text;
  const flags = [...text.matchAll(FLAG)].map((m) => [m.index, m.index + m[0].length]);
  const chars = Array.from(text); // code points (a lone surrogate is one)
  let pos = 0; // UTF-16 offset of chars[i]
  let out = "";
  chars.forEach((ch, i) => {
    const keep = !UNSAFE.test(ch)
      || ((ch === "\u200c" || ch === "\u200d") && i > 0 && i + 1 < chars.length
        && INK.test(chars[i - 1]) && INK.test(chars[i + 1]))
      || flags.some(([lo, hi]) => lo < pos && pos < hi);
    out += keep ? ch : placeholder(ch);
    pos += ch.length;
  });
  return out;
}
const LEVELS = new Set(["info", "warning", "error"]);

function nodeRecord(entry) {
  return {
    key: entry.state, name: entry.name, url: entry.url || "", path: entry.state, info: entry,
    up: null, lastOk: 0, error: "", history: [], events: [], eventsAfter: 0, boot: entry.boot,
    connections: [], downSince: null,
  };
}

class HTTPError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function fetchJSON(path) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  try {
    // Relative to the page: always this node, never another origin.
    const resp = await fetch(new URL(path, location.href), {
      signal: ctl.signal, cache: "no-store", headers, credentials: "omit", redirect: "error",
    });
    if (!resp.ok) {
      let detail = "";
      try {
        detail = (await resp.json()).error || "";
      } catch (err) {
        detail = "";
      }
      throw new HTTPError(resp.status, detail ? `HTTP ${resp.status}: ${detail}` : `HTTP ${resp.status}`);
    }
    return await resp.json();
  } finally {
    clearTimeout(timer);
  }
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

async function pollNode(node) {
  const last = node.history.length ? node.history[node.history.length - 1].t : 0;
  let data;
  try {
    data = await fetchJSON(`${node.path}?since=${Number(last)}&events_after=${Number(node.eventsAfter)}`);
  } catch (err) {
    if (err.status === 401) state.needToken = true;
    node.error = err.name === "AbortError" ? "no answer" : String(err.message || err);
    if (node.up !== false) {
      node.downSince = Date.now();
      pageEvent("node_down", "error", node.name, `${node.name} unreachable (${node.error})`);
    }
    node.up = false;
    return;
  }
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
  for (const s of data.history) node.history.push(s);
  const cutoff = data.now - HISTORY_MS;
  while (node.history.length && node.history[0].t < cutoff) node.history.shift();
  for (const e of data.events) {
    node.events.push(e);
    node.eventsAfter = Math.max(node.eventsAfter, e.seq);
  }
  if (node.events.length > MAX_EVENTS) node.events.splice(0, node.events.length - MAX_EVENTS);
}

async function tick() {
  if (state.polls % NODES_EVERY === 0 || state.nodes.size === 0 || state.needToken) {
    await refreshNodeList();
  }
  state.polls += 1;
  await Promise.all([...state.nodes.values()].map(pollNode));
  render();
}

// --- formatting ---------------------------------------------------------------
function fmtDuration(ms) {
  let s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}
const pad = (n) => String(n).padStart(2, "0");
function fmtTime(ms) {
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fmtNum(v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const abs = Math.abs(v);
  const text = abs >= 100 ? v.toFixed(0) : String(Number(v.toPrecision(3)));
  return unit ? `${text} ${unit}` : text;
}
function fmtBytes(v) {
  if (v === null || v === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}
// An element with text children: strings become text nodes (shown through
// `visible`), never markup.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, String(v));
    else if (k === "colSpan" || k === "title") node[k] = v;
    else throw new Error(`el: unexpected attribute ${k}`);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(visible(c)));
  return node;
}

// --- charts -----------------------------------------------------------------------
// The top of the y axis: four gridline steps of a round size.
function niceMax(v) {
  if (!(v > 0)) return 4;
  const step = v / 4;
  const mag = Math.pow(10, Math.floor(Math.log10(step)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= step) return 4 * m * mag;
  return 40 * mag;
}
function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function drawChart(spec, now) {
  const fig = document.getElementById(spec.id);
  const width = Math.max(280, fig.clientWidth - 32);
  const height = 170;
  const m = { l: 44, r: 10, t: 8, b: 20 };
  const start = now - state.windowMs;
  const nodes = [...state.nodes.values()];
  const multi = nodes.length > 1;
  const lines = [];
  nodes.forEach((node, ni) => {
    const samples = node.history.filter((s) => s.t >= start);
    spec.series.forEach((serie, si) => {
      const color = PALETTE[(multi ? ni * spec.series.length + si : si) % PALETTE.length];
      const pts = samples.map((s) => [s.t, s[serie.key]]);
      const last = [...pts].reverse().find((p) => p[1] !== null && p[1] !== undefined);
      lines.push({
        label: multi ? `${node.name} · ${serie.label}` : serie.label,
        color, pts, last: last ? last[1] : null, node,
      });
    });
  });
  const firstT = Math.min(...lines.flatMap((l) => l.pts.map((p) => p[0])), now);
  const t0 = Math.max(start, firstT);
  const t1 = now;
  const values = lines.flatMap((l) => l.pts.map((p) => p[1]).filter((v) => v !== null && v !== undefined));
  const ymax = niceMax(Math.max(0, ...values) * 1.05);
  const x = (t) => m.l + ((t - t0) / Math.max(1, t1 - t0)) * (width - m.l - m.r);
  const y = (v) => m.t + (1 - v / ymax) * (height - m.t - m.b);

  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
  // Bands where a node was unreachable (from the page's point of view).
  for (const node of nodes) {
    if (node.up === false && node.downSince) {
      const from = Math.max(x(node.downSince), m.l);
      root.append(svg("rect", { class: "down-band", x: from, y: m.t, width: Math.max(2, width - m.r - from), height: height - m.t - m.b }));
    }
  }
  for (let i = 0; i <= 4; i += 1) {
    const v = (ymax * i) / 4;
    const gy = y(v);
    root.append(svg("line", { class: "gridline", x1: m.l, x2: width - m.r, y1: gy, y2: gy }));
    const label = svg("text", { class: "axis", x: m.l - 6, y: gy + 3, "text-anchor": "end" });
    label.textContent = fmtNum(v, "");
    root.append(label);
  }
  const ticks = Math.max(2, Math.floor((width - m.l - m.r) / 110));
  for (let i = 0; i <= ticks; i += 1) {
    const t = t0 + ((t1 - t0) * i) / ticks;
    const label = svg("text", {
      class: "axis", x: x(t), y: height - 5,
      "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle",
    });
    label.textContent = fmtTime(t);
    root.append(label);
  }
  let points = 0;
  for (const line of lines) {
    // Break the line where there is no value (no traffic, node down).
    let d = "";
    let area = "";
    let run = [];
    const base = y(0).toFixed(1);
    const flush = () => {
      if (run.length === 1) d += `M${run[0][0] - 1.5},${run[0][1]}h3`;
      else if (run.length > 1) {
        const path = run.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join("L");
        d += "M" + path;
        area += `M${run[0][0].toFixed(1)},${base}L${path}L${run[run.length - 1][0].toFixed(1)},${base}Z`;
      }
      run = [];
    };
    for (const [t, v] of line.pts) {
      if (v === null || v === undefined) { flush(); continue; }
      run.push([x(t), y(v)]);
      points += 1;
    }
    flush();
    if (area) root.append(svg("path", { class: "area", d: area, fill: line.color }));
    if (d) root.append(svg("path", { class: "line", d, stroke: line.color }));
  }
  if (!points) {
    const empty = svg("text", { class: "empty", x: width / 2, y: height / 2, "text-anchor": "middle" });
    empty.textContent = nodes.some((n) => n.up === false) ? "node unreachable" : "waiting for data…";
    root.append(empty);
  }

  const legend = el("div", { class: "legend" });
  for (const line of lines) {
    const sw = el("span", { class: "sw" });
    sw.style.background = line.color;
    legend.append(el("span", {}, sw, line.label, el("b", {}, fmtNum(line.last, spec.unit))));
  }
  const head = el("div", { class: "chart-head" }, el("h2", {}, spec.title), legend);
  fig.replaceChildren(head, root);
  fig.setAttribute("data-points", String(points));
}

// --- nodes, connections, events --------------------------------------------------
function renderNodes(now) {
  const box = document.getElementById("nodes");
  const cards = [];
  for (const node of state.nodes.values()) {
    const info = node.info || {};
    const latest = node.history.length ? node.history[node.history.length - 1] : {};
    const storeBad = info.store_ok === false;
    const cls = node.up === false ? "down" : storeBad ? "degraded" : "up";
    const label = node.up === false ? "node unreachable" : node.up === null ? "connecting…" : storeBad ? "store unavailable" : "up";
    const stat = (k, v) => el("div", { class: "stat" }, el("div", { class: "v" }, v), el("div", { class: "k" }, k));
    const live = node.up === true;
    const foot = el("div", { class: "node-foot" });
    if (node.up === false) {
      foot.append(el("span", { class: "bad" }, `down for ${fmtDuration(now - node.downSince)}`),
        ` · last seen ${node.lastOk ? fmtTime(node.lastOk) : "never"} · ${node.error}`);
    } else {
      foot.append(`started ${info.started_at ? fmtTime(info.started_at) : "–"} · ${info.endpoint || ""} · store ${storeBad ? "UNAVAILABLE: " + (info.store_error || "") : "ok"}`);
    }
    cards.push(el("div", { class: `card node ${cls}`, "data-node": visible(node.name), "data-up": String(node.up) },
      el("div", { class: "node-head" },
        el("span", { class: "node-name" }, node.name),
        el("span", { class: "node-state" }, label)),
      el("div", { class: "node-stats" },
        stat("uptime", live && info.started_at ? fmtDuration(now - info.started_at) : "–"),
        stat("clients", live ? fmtNum(latest.clients, "") : "–"),
        stat("msgs/s in", live ? fmtNum(latest.msgs_in, "") : "–"),
        stat("msgs/s out", live ? fmtNum(latest.msgs_out, "") : "–"),
        stat("delivery p99", live ? fmtNum(latest.deliver_p99_ms, "ms") : "–"),
        stat("cpu", live ? fmtNum(latest.cpu_percent, "%") : "–"),
        stat("memory", live ? fmtBytes(latest.rss_bytes) : "–")),
      foot));
  }
  box.replaceChildren(...cards);
}

function renderConnections(now) {
  const rows = [];
  for (const node of state.nodes.values()) {
    for (const c of node.connections) rows.push({ ...c, stale: node.up === false });
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
  document.getElementById("token-why").textContent = token()
    ? "The node refused this token."
    : "This node needs its HTTP access token.";
}

function render() {
  const now = Date.now();
  document.getElementById("clock").textContent = fmtTime(now);
  renderTokenForm();
  renderOverall();
  renderNodes(now);
  for (const spec of CHARTS) drawChart(spec, now);
  renderConnections(now);
  renderEvents();
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
  if (input.value.trim()) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  state.needToken = false;
  state.polls = 0;
  render();
});
window.addEventListener("hashchange", takeTokenFromFragment);
window.addEventListener("resize", () => render());
takeTokenFromFragment();
loop();
