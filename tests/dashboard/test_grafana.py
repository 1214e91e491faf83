"""The Grafana dashboards in deploy/ name only what a node really exports.

`grafana-dashboard.json` reads Prometheus (PromQL over the node's `/metrics`),
`grafana-dashboard-influxdb.json` reads InfluxDB (InfluxQL over what the
node's `--influx` pusher writes: one measurement per sample name, the field
`value`, the tag `node` and the metric's labels as tags). A real node is
started with traffic that makes every labelled metric the dashboards use
appear; every metric, label and label value a query names must be among what
it serves on `/metrics`, and every measurement, tag and field among the
points it pushes. A renamed metric, a typo or a metric that was never
written fails here, not in front of an operator with an empty panel.
With `influxd` installed, every InfluxQL query also runs against a real
InfluxDB the node pushes to, and must answer with data.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import zmq
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from curvechat.crypto.identity import Identity
from curvechat.protocol import messages as m

from support.clients import ClientFactory
from support.raw import RawClient
from support.servers import ServerProcess, free_port

if TYPE_CHECKING:
    from .conftest import InfluxD

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_DASHBOARD = DEPLOY / "grafana-dashboard.json"
INFLUX_DASHBOARD = DEPLOY / "grafana-dashboard-influxdb.json"
CALM: dict[str, Any] = {"ping_interval": 0.5, "liveness": 10}

# --- what a node exports ------------------------------------------------------------------

Labels = dict[str, set[str]]  # label -> the values seen


@dataclass
class Exported:
    """Sample names (Prometheus) or measurements (InfluxDB), each with its
    labels or tags and the values seen; and the InfluxDB fields."""

    names: dict[str, Labels] = field(default_factory=dict)
    fields: set[str] = field(default_factory=set)

    def add(self, name: str, labels: dict[str, str]) -> None:
        known = self.names.setdefault(name, {})
        for key, val in labels.items():
            known.setdefault(key, set()).add(val)


SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def parse_metrics(text: str) -> Exported:
    """Every sample of a `/metrics` page; a family declared without samples yet
    (a labelled metric no event has touched) counts with its sample names."""
    out = Exported()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.add(s.name, s.labels)
        if not family.samples:
            for suffix in SUFFIXES.get(family.type, ("",)):
                out.names.setdefault(family.name + suffix, {})
    return out


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, cur, i = [], "", 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            cur += text[i + 1]
            i += 2
            continue
        if text[i] == sep:
            parts.append(cur)
            cur = ""
        else:
            cur += text[i]
        i += 1
    return [*parts, cur]


def parse_line_protocol(body: str) -> Exported:
    """Measurements, tags and fields of InfluxDB line protocol (no string fields)."""
    out = Exported()
    for line in body.splitlines():
        if not line.strip():
            continue
        # measurement,tags fields timestamp: the first unescaped space ends the tags
        head, fields, _t = re.split(r"(?<!\\) ", line, maxsplit=2)
        measurement, *tags = _split_unescaped(head.replace("\\=", "\0"), ",")
        out.add(
            measurement,
            {k: v.replace("\0", "=") for k, _, v in (t.partition("=") for t in tags)},
        )
        out.fields.update(f.partition("=")[0] for f in fields.split(","))
    return out


# --- what the dashboards name ---------------------------------------------------------------


def dashboard_queries(path: Path, key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query of a dashboard, rows included."""
    board = json.loads(path.read_text())

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(board["panels"]):
        for target in panel.get("targets", []):
            assert key in target, (
                f"{path.name}: panel {panel['title']!r} has a target without {key}"
            )
            yield panel["title"], target


PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
PROMQL_GROUPING = r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
# Made by Prometheus itself at each scrape, not by the node.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series


@dataclass
class PromQL:
    metrics: set[str]
    grouping: set[str]  # labels of by/without/on/ignoring/group_*
    matchers: list[tuple[str | None, str, str, str]]  # (metric, label, op, value)


def parse_promql(expr: str) -> PromQL:
    matchers: list[tuple[str | None, str, str, str]] = []

    def selector(match: re.Match[str]) -> str:
        for label, op, val in re.findall(
            r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', match["body"]
        ):
            matchers.append((match["metric"], label, op, val))
        return f" {match['metric'] or ''} "

    text = re.sub(r"(?P<metric>[A-Za-z_:][\w:]*)?\s*\{(?P<body>[^}]*)\}", selector, expr)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries: [1m], [5m:1m]
    grouping: set[str] = set()
    for _, labels in re.findall(PROMQL_GROUPING, text):
        grouping.update(x.strip() for x in labels.split(",") if x.strip())
    text = re.sub(PROMQL_GROUPING, " ", text)
    text = re.sub(r"\b\d[\w.]*", " ", text)  # numbers and durations
    metrics = {
        word
        for word, call in re.findall(r"([A-Za-z_:][\w:]*)\s*(\()?", text)
        if not call and word.lower() not in PROMQL_KEYWORDS
    }
    return PromQL(metrics, grouping, matchers)


def check_prometheus(queries: list[tuple[str, str]], exported: Exported) -> list[str]:
    problems: list[str] = []
    for where, expr in queries:
        q = parse_promql(expr)
        if not q.metrics:
            problems.append(f"{where}: names no metric: {expr}")
        for name in sorted(q.metrics - PROMETHEUS_SERIES):
            if name not in exported.names:
                problems.append(f"{where}: the node exports no metric {name!r}")
        known = [exported.names.get(n, {}) for n in q.metrics]
        for label in sorted(q.grouping - TARGET_LABELS):
            if not any(label in labels for labels in known):
                problems.append(f"{where}: no metric of {sorted(q.metrics)} has a label {label!r}")
        for metric, label, op, val in q.matchers:
            if label in TARGET_LABELS or (metric or "") in PROMETHEUS_SERIES:
                continue
            labels = exported.names.get(metric, {}) if metric else {}
            if label not in labels:
                problems.append(f"{where}: {metric} has no label {label!r}")
            elif op == "=" and val not in labels[label]:
                problems.append(
                    f"{where}: {metric}{{{label}={val!r}}} never appeared"
                    f" (seen: {sorted(labels[label])})"
                )
    return problems


# Grafana's macros, as Grafana expands them (for a check of the InfluxQL text).
GRAFANA_MACROS = {"$timeFilter": "time > now() - 5m", "$__interval": "1s", "$interval": "1s"}


@dataclass
class InfluxQL:
    measurements: set[str]
    identifiers: set[str]  # every double-quoted name
    aliases: set[str]  # AS "x", and the default column names of functions (last, sum…)
    conditions: list[tuple[str, str, str]]  # ("tag", op, 'value')


def parse_influxql(query: str) -> InfluxQL:
    measurements = set()
    for ref in re.findall(r'\bFROM\s+((?:"[^"]+"|\w+)(?:\.(?:"[^"]+"|\w+))*)', query, re.I):
        measurements.add(re.findall(r'"([^"]+)"|(\w+)', ref)[-1][0] or ref.split(".")[-1])
    aliases = set(re.findall(r'\bAS\s+"([^"]+)"', query, re.I))
    aliases |= {f.lower() for f in re.findall(r"\b([A-Za-z_]\w*)\s*\(", query)}
    conditions = re.findall(r'"([^"]+)"\s*(=~|!~|!=|<>|=)\s*\'((?:[^\'\\]|\\.)*)\'', query)
    return InfluxQL(measurements, set(re.findall(r'"([^"]+)"', query)), aliases, conditions)


def check_influx(targets: list[tuple[str, dict[str, Any]]], exported: Exported) -> list[str]:
    problems: list[str] = []
    for where, target in targets:
        query = str(target["query"])
        q = parse_influxql(query)
        if not q.measurements:
            problems.append(f"{where}: names no measurement: {query}")
        tags: Labels = {}
        for name in sorted(q.measurements):
            if name not in exported.names:
                problems.append(f"{where}: the node writes no measurement {name!r}")
            for key, values in exported.names.get(name, {}).items():
                tags.setdefault(key, set()).update(values)
        for ident in sorted(q.identifiers - q.measurements - q.aliases):
            if ident not in exported.fields and ident not in tags:
                problems.append(
                    f"{where}: {ident!r} is neither a field nor a tag of {sorted(q.measurements)}"
                )
        for tag, op, val in q.conditions:
            if tag in tags and op == "=" and val not in tags[tag]:
                problems.append(
                    f"{where}: {tag} = {val!r} never written (seen: {sorted(tags[tag])})"
                )
        for tag in re.findall(r"\$tag_(\w+)", str(target.get("alias", ""))):
            if tag not in tags:
                problems.append(f"{where}: the alias names a tag {tag!r} that is not written")
    return problems


def prometheus_queries() -> list[tuple[str, str]]:
    return [(title, str(t["expr"])) for title, t in dashboard_queries(PROMETHEUS_DASHBOARD, "expr")]


def influx_targets() -> list[tuple[str, dict[str, Any]]]:
    return list(dashboard_queries(INFLUX_DASHBOARD, "query"))


# --- a node with traffic --------------------------------------------------------------------


class InfluxSink:
    """An InfluxDB stand-in: takes the node's writes and keeps them."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[str] = []
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        async def write(request: web.Request) -> web.Response:
            self.bodies.append(await request.text())
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/write", write)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def scrape(server: ServerProcess) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.http_port}/metrics") as resp,
    ):
        assert resp.status == 200
        return await resp.text()


def _has(exported: Exported, name: str, **labels: str) -> bool:
    known = exported.names.get(name)
    return known is not None and all(v in known.get(k, set()) for k, v in labels.items())


# What the traffic below must have made appear (the labelled metrics the
# dashboards read exist only once something happened).
WANTED = [
    ("curvechat_client_disconnects_total", {"reason": "left"}),
    ("curvechat_client_disconnects_total", {"reason": "disconnected"}),
    ("curvechat_auth_failures_total", {"reason": "not_registered"}),
    ("curvechat_requests_total", {"type": "send", "code": "ok"}),
    ("curvechat_send_deliver_seconds_bucket", {"le": "+Inf"}),
]


async def make_traffic(server: ServerProcess, clients: ClientFactory) -> Exported:
    """Sends, a reconnect, a clean exit, a killed client, an auth failure and a
    failover; returns the scrape once all of it shows."""
    alice, _ = await clients.make("alice", server.connect, **CALM)
    bob, bob_events = await clients.make("bob", server.connect, **CALM)
    carol, _ = await clients.make("carol", server.connect, **CALM)
    dave, _ = await clients.make("dave", server.connect, **CALM)
    await alice.create_room("graphs", ["bob"])
    for i in range(5):
        await alice.send("graphs", f"m{i}")
    bob.conn.drop("cut by the test")
    await bob_events.until(lambda: bob.conn.reconnects == 1 and bob.conn.live)
    await clients.close(carol)  # says goodbye
    await dave.conn.close(goodbye=False)  # killed
    await clients.close(dave)

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    stranger = RawClient(ctx, server.connect, Identity.generate("stranger"))
    try:
        assert isinstance(stranger.request(m.ListRooms()), m.Error)  # not registered
        stranger.request(m.Ping(t=1, reconnects=1, prev_node="elsewhere"))  # a failover
    finally:
        stranger.close()
        ctx.term()

    async with asyncio.timeout(20):
        while True:
            exported = parse_metrics(await scrape(server))
            if all(_has(exported, name, **labels) for name, labels in WANTED):
                return exported
            await asyncio.sleep(0.1)


# --- the tests ------------------------------------------------------------------------------


async def test_dashboards_name_only_what_a_node_exports(
    tmp_path: Path, clients: ClientFactory
) -> None:
    assert PROMETHEUS_DASHBOARD.exists() and INFLUX_DASHBOARD.exists()
    sink = InfluxSink()
    await sink.start()
    server = ServerProcess(
        tmp_path / "node", extra_args=("--influx", sink.url, "--influx-interval", "0.2")
    ).start()
    try:
        prometheus = await make_traffic(server, clients)
        node = (tmp_path / "node" / "node.id").read_text().strip()
        async with asyncio.timeout(10):  # a push made after all of it
            while True:
                pushed = parse_line_protocol(sink.bodies[-1] if sink.bodies else "")
                if all(_has(pushed, name, **labels) for name, labels in WANTED):
                    break
                await asyncio.sleep(0.1)
    finally:
        assert server.stop() == 0
        await sink.stop()
    assert "Traceback" not in server.log()

    # The pusher writes what /metrics shows, with the node's stable name.
    assert pushed.fields == {"value"}
    assert set(pushed.names) <= set(prometheus.names)
    assert all(tags.get("node") == {node} for tags in pushed.names.values())

    problems = check_prometheus(prometheus_queries(), prometheus)
    problems += check_influx(influx_targets(), pushed)
    assert not problems, "\n".join(problems)
    # and the dashboards cover the same ground
    prom_metrics = set().union(*(parse_promql(e).metrics for _, e in prometheus_queries()))
    influx_metrics = set().union(
        *(parse_influxql(t["query"]).measurements for _, t in influx_targets())
    )
    base = re.compile(r"_(bucket|count|sum)$")
    assert {
        base.sub("", n) for n in prom_metrics - PROMETHEUS_SERIES - {"curvechat_node_info"}
    } <= {base.sub("", n) for n in influx_metrics}


def test_the_check_finds_names_that_are_not_exported() -> None:
    exported = parse_metrics(
        "# TYPE curvechat_x_total counter\n"
        'curvechat_x_total{reason="a"} 1\n'
        "# TYPE curvechat_h_seconds histogram\n"
        'curvechat_h_seconds_bucket{le="+Inf"} 1\n'
        "curvechat_h_seconds_count 1\n"
        "curvechat_h_seconds_sum 1\n"
        "# TYPE curvechat_empty_total counter\n"
    )
    good = [
        ("ok", 'sum by (reason) (increase(curvechat_x_total{reason="a", job="c"}[1m]))'),
        ("ok", "histogram_quantile(0.99, sum by (le) (rate(curvechat_h_seconds_bucket[5m])))"),
        ("ok", "rate(curvechat_empty_total[1m]) / on(instance) up"),
    ]
    assert check_prometheus(good, exported) == []
    bad = [
        ("typo", "sum(rate(curvechat_x_totl[1m]))"),
        ("label", "sum by (why) (rate(curvechat_x_total[1m]))"),
        ("value", 'curvechat_x_total{reason="b"}'),
        ("matcher", 'curvechat_x_total{why!="b"}'),
        ("none", "time()"),
    ]
    found = check_prometheus(bad, exported)
    assert [p.split(":")[0] for p in found] == ["typo", "label", "value", "matcher", "none"], found

    pushed = parse_line_protocol(
        r"curvechat_x_total,node=n\ 1,reason=a value=1.0 1" + "\n"
        r"curvechat_h_seconds_bucket,le=+Inf,node=n\ 1 value=1.0 1" + "\n"
    )
    assert pushed.names["curvechat_x_total"] == {"node": {"n 1"}, "reason": {"a"}}
    ok = {
        "query": 'SELECT sum("rate") FROM (SELECT non_negative_derivative(last("value"), 1s)'
        ' AS "rate" FROM "curvechat_x_total" WHERE "reason" = \'a\' GROUP BY time(1s), "node")'
        ' GROUP BY "reason"',
        "alias": "$tag_reason",
    }
    assert check_influx([("ok", ok)], pushed) == []
    wrong = [
        ("measurement", {"query": 'SELECT last("value") FROM "curvechat_y_total"'}),
        ("field", {"query": 'SELECT last("count") FROM "curvechat_x_total"'}),
        ("tag", {"query": 'SELECT last("value") FROM "curvechat_x_total" GROUP BY "why"'}),
        (
            "tag value",
            {"query": 'SELECT last("value") FROM "curvechat_x_total" WHERE "reason" = \'b\''},
        ),
        ("alias", {"query": 'SELECT last("value") FROM "curvechat_x_total"', "alias": "$tag_le"}),
    ]
    found = check_influx(wrong, pushed)  # type: ignore[arg-type]
    assert [p.split(":")[0] for p in found] == [w for w, _ in wrong], found


async def test_influx_dashboard_queries_answer_on_a_real_influxdb(
    influxd: InfluxD, tmp_path: Path, clients: ClientFactory
) -> None:
    db = "curvechat"
    await influxd.query(f'CREATE DATABASE "{db}"')
    server = ServerProcess(
        tmp_path / "node", extra_args=("--influx", influxd.url, "--influx-interval", "0.2")
    ).start()
    try:
        await make_traffic(server, clients)
        await asyncio.sleep(3.0)  # a few seconds of pushes: rates need two points
    finally:
        assert server.stop() == 0
    problems = []
    for title, target in influx_targets():
        query = str(target["query"])
        for macro, value in GRAFANA_MACROS.items():
            query = query.replace(macro, value)
        result = (await influxd.query(query, db))["results"][0]
        if "error" in result:
            problems.append(f"{title}: {result['error']}: {query}")
        elif not result.get("series"):
            problems.append(f"{title}: no data: {query}")
    assert not problems, "\n".join(problems)
