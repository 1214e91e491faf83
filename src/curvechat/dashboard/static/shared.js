// What the pages of curvechat share (the node's dashboard and the monitor's
// page): the access
// token, fetching JSON from the page's own origin, showing untrusted text,
// formatting, and the SVG graphs of metric samples. Everything is in one
// global object, `CurvechatUI`, so that it cannot clash with a page's own
// names.
//
// The token (when the server asks for one) comes in the URL's fragment
// (#token=…, never sent to a server), moves to this tab's sessionStorage and
// is sent as `Authorization: Bearer`. Every text that comes from a server is
// put in the page as text, never as HTML, with control, bidi and invisible
// characters shown as placeholders.
"use strict";

const CurvechatUI = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const TOKEN_KEY = "curvechat.http-token";
  const PALETTE = ["#58a6ff", "#3fb97f", "#e3a23b", "#d2a8ff", "#e5534b", "#39c5cf", "#f778ba"];

  // Each chart: which sample fields it draws, per node (the fields of a
  // node's history sample: curvechat.dashboard.history).
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

  // --- the token ----------------------------------------------------------------------
  // Taken from the fragment once, then the fragment is removed from the address
  // bar (and so from history and bookmarks).
  function takeTokenFromFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    const value = params.get("token");
    if (value) {
      sessionStorage.setItem(TOKEN_KEY, value);
      history.replaceState(null, "", location.pathname + location.search);
    }
  }
  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }
  function setToken(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
  }

  // --- untrusted text -------------------------------------------------------------------
  // The rules of curvechat.protocol.text, which the terminal front ends follow:
  // control characters (C0, DEL, C1), format characters (bidi overrides and
  // isolates, zero-width space, BOM, tags, …), line and paragraph separators
  // and lone surrogates become their escape as Python writes it; a zero-width
  // (non-)joiner between two visible characters and the tags of an emoji
  // subdivision flag stay. The result is only ever used as text.
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
    const chars = Array.from(text);
    let pos = 0;
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

  // --- fetching -----------------------------------------------------------------------
  class HTTPError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function fetchJSON(path, timeoutMs = 2500) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    try {
      // Relative to the page: always its own origin, never another.
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

  // --- formatting -----------------------------------------------------------------------
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
  // A value that can be drawn and printed as a number: anything else a
  // server sent (true, "3", {}) is shown as "–", never computed with.
  const finite = (v) => typeof v === "number" && Number.isFinite(v);
  function fmtNum(v, unit) {
    if (!finite(v)) return "–";
    const abs = Math.abs(v);
    const text = abs >= 100 ? v.toFixed(0) : String(Number(v.toPrecision(3)));
    return unit ? `${text} ${unit}` : text;
  }
  function fmtBytes(v) {
    if (!finite(v)) return "–";
    const units = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  // Runs one part of a page's update: if it throws, the error is logged and
  // the other parts are still drawn (one bad node or value stops nothing else).
  function guarded(what, fn) {
    try {
      fn();
      return true;
    } catch (err) {
      console.error(`${what} failed`, err);
      return false;
    }
  }

  // An element with text children: strings become text nodes (shown through
  // `visible`), never markup.
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, visible(v));
      else if (k === "colSpan" || k === "title") node[k] = visible(v);
      else throw new Error(`el: unexpected attribute ${k}`);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(visible(c)));
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  // --- graphs -------------------------------------------------------------------------
  // The top of the y axis: four gridline steps of a round size.
  function niceMax(v) {
    if (!(v > 0)) return 4;
    const step = v / 4;
    const mag = Math.pow(10, Math.floor(Math.log10(step)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= step) return 4 * m * mag;
    return 40 * mag;
  }

  // The lines of one chart: one per node and series, from each node's
  // samples (`{name, history}`, oldest first) since `start`; a value that is
  // not a finite number is no value (the line breaks there).
  function chartLines(spec, nodes, start) {
    const multi = nodes.length > 1;
    const lines = [];
    nodes.forEach((node, ni) => {
      const samples = node.history.filter((s) => s && finite(s.t) && s.t >= start);
      spec.series.forEach((serie, si) => {
        const color = PALETTE[(multi ? ni * spec.series.length + si : si) % PALETTE.length];
        const pts = samples.map((s) => [s.t, finite(s[serie.key]) ? s[serie.key] : null]);
        const last = [...pts].reverse().find((p) => p[1] !== null);
        lines.push({ label: multi ? `${node.name} · ${serie.label}` : serie.label, color, pts, last: last ? last[1] : null });
      });
    });
    return lines;
  }

  // Draws `lines` into the figure `fig` over [start, now]. Options: `bands`,
  // [from, to] times to shade (a node down; `to` null: until now); `gapMs`,
  // a line breaks where two samples are further apart (no value, or no
  // sample: a node down); `emptyText`, shown when there is no point.
  // Sets `data-points` on the figure (tests read it).
  function drawChart(fig, spec, lines, { start, now, bands = [], gapMs = Infinity, emptyText = "waiting for data…" }) {
    const width = Math.max(280, fig.clientWidth - 32);
    const height = 170;
    const m = { l: 44, r: 10, t: 8, b: 20 };
    const firstT = Math.min(...lines.flatMap((l) => l.pts.map((p) => p[0])), now);
    const t0 = Math.max(start, firstT);
    const t1 = now;
    const values = lines.flatMap((l) => l.pts.map((p) => p[1]).filter(finite));
    const ymax = niceMax(Math.max(0, ...values) * 1.05);
    const x = (t) => m.l + ((t - t0) / Math.max(1, t1 - t0)) * (width - m.l - m.r);
    const y = (v) => m.t + (1 - v / ymax) * (height - m.t - m.b);

    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
    for (const [from, to] of bands) {
      const left = Math.max(x(from), m.l);
      const right = Math.min(x(to === null || to === undefined ? now : to), width - m.r);
      if (right < m.l || left > width - m.r) continue;
      root.append(svg("rect", { class: "down-band", x: left, y: m.t, width: Math.max(2, right - left), height: height - m.t - m.b }));
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
      // Break the line where there is no value (no traffic) or no sample (node down).
      let d = "";
      let area = "";
      let run = [];
      let prevT = null;
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
        if (prevT !== null && t - prevT > gapMs) flush();
        prevT = t;
        if (!finite(v)) { flush(); continue; }
        run.push([x(t), y(v)]);
        points += 1;
      }
      flush();
      if (area) root.append(svg("path", { class: "area", d: area, fill: line.color }));
      if (d) root.append(svg("path", { class: "line", d, stroke: line.color }));
    }
    if (!points) {
      const empty = svg("text", { class: "empty", x: width / 2, y: height / 2, "text-anchor": "middle" });
      empty.textContent = emptyText;
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

  return Object.freeze({
    CHARTS, PALETTE, HTTPError, takeTokenFromFragment, token, setToken, visible, fetchJSON,
    fmtDuration, fmtTime, finite, fmtNum, fmtBytes, guarded, el, svg, niceMax, chartLines, drawChart,
  });
})();
