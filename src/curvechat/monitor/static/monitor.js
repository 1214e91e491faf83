// curvechat monitor: asks the monitor (this page's own origin, never a node)
// once a second for the nodes' state, the outage timeline and the samples it
// has not shown yet. Everything comes from the monitor's memory, so the page
// keeps working whether the nodes are up or down; if the monitor itself
// does not answer, the page says so and keeps what it has.
//
// The state of every node (up, down, since when) is decided by the monitor
// (curvechat.monitor.timeline); this page only shows it. The shared code
// (token, fetching, untrusted text, graphs) is in shared.js.
"use strict";

const UI = CurvechatUI;
const POLL_MS = 1000;
const RESYNC_MS = 10 * 1000; // samples are asked for again this far back (arrival order varies by node)

const page = {
  overview: null,
  nodes: new Map(), // url -> {name, history}
  monitorBoot: "",
  lastT: 0,
  skew: 0, // the monitor's clock minus this browser's
  windowMs: 300 * 1000,
  error: "", // why the monitor did not answer ("" when it did)
  needToken: false,
  polls: 0,
};

const now = () => Date.now() + page.skew;

async function tick() {
  let overview;
  try {
    overview = await UI.fetchJSON("api/overview");
  } catch (err) {
    page.error = err.name === "AbortError" ? "no answer" : String(err.message || err);
    page.needToken = err.status === 401;
    return;
  }
  page.error = "";
  page.needToken = false;
  page.skew = overview.now - Date.now();
  if (overview.monitor.boot !== page.monitorBoot) {
    // The monitor restarted: it may hold samples this page never saw.
    page.monitorBoot = overview.monitor.boot;
    page.lastT = 0;
    page.nodes.clear();
  }
  const history = await UI.fetchJSON(`api/history?since=${Math.max(0, page.lastT - RESYNC_MS)}`);
  const cutoff = overview.now - overview.history_s * 1000;
  for (const [url, samples] of Object.entries(history.nodes)) {
    let rec = page.nodes.get(url);
    if (!rec) page.nodes.set(url, (rec = { name: url, history: [] }));
    const last = rec.history.length ? rec.history[rec.history.length - 1].t : 0;
    for (const s of samples) {
      if (s.t > last) rec.history.push(s);
      page.lastT = Math.max(page.lastT, s.t);
    }
    while (rec.history.length && rec.history[0].t < cutoff) rec.history.shift();
  }
  const known = new Set(overview.nodes.map((n) => n.url));
  for (const url of [...page.nodes.keys()]) if (!known.has(url)) page.nodes.delete(url);
  for (const n of overview.nodes) if (page.nodes.has(n.url)) page.nodes.get(n.url).name = n.name;
  page.overview = overview;
}

// --- the overall state --------------------------------------------------------------
function sinceText(t) {
  return `since ${UI.fmtTime(t)} (${UI.fmtDuration(now() - t)})`;
}

function overallText(ov) {
  const s = ov.summary;
  const one = s.total === 1;
  switch (s.state) {
    case "no_nodes":
      return ["pill-bad", ov.monitor.source_error ? "no nodes: the node list cannot be read" : "no nodes found yet"];
    case "connecting":
      return ["pill-wait", "connecting…"];
    case "up":
      return ["pill-ok", one ? "node up" : `all ${s.total} nodes up`];
    case "down":
      return ["pill-bad", one ? `node down ${sinceText(s.since)}` : `all nodes down ${sinceText(s.since)}`];
    default:
      if (s.down) return ["pill-bad", `${s.down} of ${s.total} nodes down ${sinceText(s.since)}`];
      return ["pill-wait", `${s.up} of ${s.total} nodes up, ${s.unknown} connecting`];
  }
}

function renderOverall() {
  const pill = document.getElementById("overall");
  let cls = "pill-wait";
  let text = "connecting…";
  if (page.needToken) [cls, text] = ["pill-bad", "access token required"];
  else if (page.error) [cls, text] = ["pill-bad", `monitor unreachable (${page.error})`];
  else if (page.overview) [cls, text] = overallText(page.overview);
  pill.className = `pill ${cls}`;
  pill.textContent = UI.visible(text);
}

function renderBanner() {
  const box = document.getElementById("banner");
  const ov = page.overview;
  let kind = "";
  const parts = [];
  if (page.error && !page.needToken) {
    kind = "bad";
    parts.push(UI.el("b", {}, "The monitor does not answer"), ` (${page.error}). What is shown is from ${UI.fmtTime(page.lastT || Date.now())} or before; this page keeps asking.`);
  } else if (ov && ov.summary.state === "down") {
    kind = "bad";
    const what = ov.summary.total === 1 ? "The node is down" : `All ${ov.summary.total} nodes are down`;
    parts.push(UI.el("b", {}, `${what} ${sinceText(ov.summary.since)}.`),
      UI.el("p", {}, "The monitor keeps polling every second and will show when they come back; the graphs keep their history."));
  } else if (ov && ov.monitor.source_error) {
    kind = "warn";
    parts.push(UI.el("b", {}, "The node list cannot be read: "), ov.monitor.source_error,
      UI.el("p", {}, `Watching the ${ov.nodes.length} node(s) known so far.`));
  }
  box.hidden = !kind;
  box.className = `banner ${kind === "warn" ? "warn" : ""}`;
  box.setAttribute("data-kind", kind);
  box.replaceChildren(...parts);
}

// --- node cards ---------------------------------------------------------------------
function nodeCard(n, t) {
  const card = n.card || {};
  const latest = n.latest || {};
  const up = n.health === "up";
  const storeBad = up && card.store_ok === false;
  const cls = n.health === "down" ? "down" : n.health === "unknown" ? "unknown" : storeBad ? "degraded" : "up";
  const label = n.health === "down" ? "down" : n.health === "unknown" ? "connecting…" : storeBad ? "store unavailable" : "up";
  const stat = (k, v) => UI.el("div", { class: "stat" }, UI.el("div", { class: "v" }, v), UI.el("div", { class: "k" }, k));
  const foot = UI.el("div", { class: "node-foot" });
  if (n.health === "down") {
    foot.append(UI.el("span", { class: "bad" }, `down ${sinceText(n.since)}`),
      ` · last answered ${n.last_ok ? UI.fmtTime(n.last_ok) : "never"} · ${UI.visible(n.error)}`);
  } else if (up) {
    foot.append(`up since ${UI.fmtTime(n.since)} · process started ${card.started_at ? UI.fmtTime(card.started_at) : "–"} · ${UI.visible(card.endpoint || "")} · store ${storeBad ? "UNAVAILABLE: " + UI.visible(card.store_error || "") : "ok"}`);
  } else {
    foot.append(n.error ? `no answer yet: ${UI.visible(n.error)}` : "waiting for its first answer");
  }
  if (!n.listed && n.unlisted_since) foot.append(` · not in the ${n.source} since ${UI.fmtTime(n.unlisted_since)}`);
  return UI.el("div", { class: `card node ${cls}`, "data-node": n.url, "data-health": n.health },
    UI.el("div", { class: "node-head" },
      UI.el("span", {}, UI.el("span", { class: "node-name" }, n.name), " ", UI.el("span", { class: "node-url" }, n.url)),
      UI.el("span", { class: "node-state" }, label)),
    UI.el("div", { class: "node-stats" },
      stat("uptime", up && card.started_at ? UI.fmtDuration(t - card.started_at) : "–"),
      stat("clients", up ? UI.fmtNum(latest.clients, "") : "–"),
      stat("msgs/s in", up ? UI.fmtNum(latest.msgs_in, "") : "–"),
      stat("msgs/s out", up ? UI.fmtNum(latest.msgs_out, "") : "–"),
      stat("delivery p99", up ? UI.fmtNum(latest.deliver_p99_ms, "ms") : "–"),
      stat("cpu", up ? UI.fmtNum(latest.cpu_percent, "%") : "–"),
      stat("memory", up ? UI.fmtBytes(latest.rss_bytes) : "–")),
    foot);
}

// Each card on its own: a node that cannot be drawn is a card saying so.
function renderNodes(t) {
  const ov = page.overview;
  const cards = [];
  for (const n of ov ? ov.nodes : []) {
    if (!UI.guarded("drawing a node's card", () => cards.push(nodeCard(n, t)))) {
      cards.push(UI.el("div", { class: "card node unknown", "data-node": String(n && n.url), "data-health": "unknown" },
        UI.el("div", { class: "node-head" }, UI.el("span", { class: "node-name" }, String(n && n.url)),
          UI.el("span", { class: "node-state" }, "cannot be shown"))));
    }
  }
  document.getElementById("nodes").replaceChildren(...cards);
}

// --- the outage timeline -------------------------------------------------------------
// One lane per node over the same time as the graphs: green where the
// monitor has its samples, red where it was down.
function renderLanes(t, start) {
  const box = document.getElementById("lanes");
  const ov = page.overview;
  const nodes = ov ? ov.nodes : [];
  let first = t;
  for (const rec of page.nodes.values()) if (rec.history.length) first = Math.min(first, rec.history[0].t);
  for (const o of ov ? ov.outages : []) if (o.end === null || o.end >= start) first = Math.min(first, o.start);
  start = Math.max(start, first);
  const width = Math.max(300, box.clientWidth);
  const lane = 22;
  const m = { l: 190, r: 10, t: 4, b: 18 };
  const height = m.t + nodes.length * lane + m.b;
  const x = (v) => m.l + ((Math.min(Math.max(v, start), t) - start) / Math.max(1, t - start)) * (width - m.l - m.r);
  const root = UI.svg("svg", { viewBox: `0 0 ${width} ${height}`, height: String(height), role: "img" });
  nodes.forEach((n, i) => UI.guarded("drawing a node's lane", () => {
    const y = m.t + i * lane;
    const label = UI.svg("text", { class: "lane-label", x: 0, y: y + 15 });
    label.textContent = UI.visible(n.name.length > 28 ? `${n.name.slice(0, 27)}…` : n.name);
    root.append(label);
    root.append(UI.svg("rect", { class: "lane-unknown", x: m.l, y: y + 3, width: width - m.l - m.r, height: lane - 6, rx: 3 }));
    const rec = page.nodes.get(n.url);
    if (rec && rec.history.length) {
      const from = x(rec.history[0].t);
      const to = n.health === "up" ? x(t) : x(rec.history[rec.history.length - 1].t);
      root.append(UI.svg("rect", { class: "lane-bg", x: from, y: y + 3, width: Math.max(2, to - from), height: lane - 6 }));
    }
    for (const o of ov.outages) {
      if (o.node !== n.url) continue;
      const end = o.end === null ? t : o.end;
      if (end < start) continue;
      const from = x(o.start);
      root.append(UI.svg("rect", { class: "lane-down", x: from, y: y + 3, width: Math.max(2, x(end) - from), height: lane - 6, "data-node": UI.visible(n.url) }));
    }
  }));
  for (let i = 0; i <= 4; i += 1) {
    const v = start + ((t - start) * i) / 4;
    const label = UI.svg("text", { class: "axis", x: x(v), y: height - 4, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" });
    label.textContent = UI.fmtTime(v);
    root.append(label);
  }
  box.replaceChildren(root);
}

function renderOutages(t) {
  const ov = page.overview;
  const rows = (ov ? ov.outages : []).slice(0, 50).map((o) => {
    const ongoing = o.end === null;
    const notes = [];
    if (o.restarted) notes.push("came back restarted");
    if (!o.start_known) notes.push("down before it was first polled");
    if (!o.watched) notes.push("the monitor was stopped during it");
    return UI.el("tr", { class: ongoing ? "ongoing" : "", "data-node": o.node, "data-ongoing": String(ongoing), "data-duration-ms": String(ongoing ? t - o.start : o.duration_ms) },
      UI.el("td", {}, o.name),
      UI.el("td", {}, UI.fmtTime(o.start)),
      UI.el("td", {}, ongoing ? "still down" : UI.fmtTime(o.end)),
      UI.el("td", { class: "num" }, UI.fmtDuration(ongoing ? t - o.start : o.duration_ms)),
      UI.el("td", {}, o.error, ...(notes.length ? [UI.el("span", { class: "note" }, `(${notes.join("; ")})`)] : [])));
  });
  if (!rows.length) rows.push(UI.el("tr", { class: "empty-row" }, UI.el("td", { colSpan: 5 }, "no outage seen")));
  document.querySelector("#outages tbody").replaceChildren(...rows);
}

function renderEvents() {
  const ov = page.overview;
  const items = (ov ? ov.events : []).slice(0, 100).map((e) =>
    UI.el("li", { class: ["info", "warning", "error"].includes(e.level) ? e.level : "", "data-kind": e.kind, "data-node": e.node },
      UI.el("span", { class: "t" }, UI.fmtTime(e.t)),
      UI.el("span", { class: "kind" }, String(e.kind).replaceAll("_", " ")),
      UI.el("span", {}, e.detail,
        ...(e.duration_ms !== null && e.duration_ms !== undefined
          ? [UI.el("span", { class: "dur" }, e.kind === "node_up" ? `after ${UI.fmtDuration(e.duration_ms)} down` : `(${UI.fmtDuration(e.duration_ms)})`)]
          : []))));
  if (!items.length) items.push(UI.el("li", {}, UI.el("span", { class: "none" }, "no events yet")));
  document.getElementById("events").replaceChildren(...items);
}

// --- graphs ---------------------------------------------------------------------------
function renderCharts(t, start) {
  const ov = page.overview;
  const nodes = ov ? ov.nodes.filter((n) => page.nodes.has(n.url)).map((n) => page.nodes.get(n.url)) : [];
  const bands = (ov ? ov.outages : []).map((o) => [o.start, o.end]);
  const gapMs = 3000 * (ov ? ov.interval_s : 1) + 2000;
  const allDown = ov && ov.summary.state === "down";
  for (const spec of UI.CHARTS) {
    UI.guarded(`drawing ${spec.id}`, () => UI.drawChart(document.getElementById(spec.id), spec, UI.chartLines(spec, nodes, start), {
      start, now: t, bands, gapMs, emptyText: allDown ? "all nodes down" : "waiting for data…",
    }));
  }
}

function renderTokenForm() {
  const form = document.getElementById("token-form");
  if (form.hidden === !page.needToken) return;
  form.hidden = !page.needToken;
  document.getElementById("token-why").textContent = UI.token()
    ? "The monitor refused this token."
    : "This monitor needs its HTTP access token.";
}

// Each part on its own (`UI.guarded`): one that throws leaves the others drawn.
function render() {
  const t = now();
  const start = t - page.windowMs;
  document.getElementById("clock").textContent = UI.fmtTime(t);
  UI.guarded("the token form", renderTokenForm);
  UI.guarded("the status line", renderOverall);
  UI.guarded("the banner", renderBanner);
  UI.guarded("the node cards", () => renderNodes(t));
  UI.guarded("the outage lanes", () => renderLanes(t, start));
  UI.guarded("the outage table", () => renderOutages(t));
  UI.guarded("the graphs", () => renderCharts(t, start));
  UI.guarded("the events", renderEvents);
  let samples = 0;
  let first = 0;
  for (const rec of page.nodes.values()) {
    samples += rec.history.length;
    if (rec.history.length && (!first || rec.history[0].t < first)) first = rec.history[0].t;
  }
  document.body.setAttribute("data-samples", String(samples));
  document.body.setAttribute("data-first-sample", String(first));
  document.body.setAttribute("data-polls", String(page.polls));
}

async function loop() {
  for (;;) {
    const started = Date.now();
    try {
      await tick();
    } catch (err) {
      page.error = String(err.message || err);
    }
    page.polls += 1;
    try {
      render();
    } catch (err) {
      console.error("monitor page update failed", err);
    }
    await new Promise((resolve) => setTimeout(resolve, Math.max(100, POLL_MS - (Date.now() - started))));
  }
}

document.getElementById("window").addEventListener("change", (ev) => {
  page.windowMs = Number(ev.target.value) * 1000;
  render();
});
document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = document.getElementById("token-input");
  UI.setToken(input.value.trim());
  input.value = "";
  page.needToken = false;
  render();
});
window.addEventListener("hashchange", UI.takeTokenFromFragment);
window.addEventListener("resize", () => render());
UI.takeTokenFromFragment();
loop();
