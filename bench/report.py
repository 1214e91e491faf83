"""Ratios against the bare limits, the targets, and the printed table."""

from __future__ import annotations

from typing import Any


def _late(late: dict[str, float] | None) -> str:
    """The event loop's lateness (bench/engines.py `LoopLag`), if measured."""
    if not late:
        return ""
    return f"; its event loop late p50/p99/max {late['p50']} / {late['p99']} / {late['max']} ms"


def _get(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def crypto_bound(r: dict[str, Any], members: int) -> float | None:
    """Messages/s that two cores could seal once and open `members` - 1 times
    (curvechat's own seal and open, same run): what end-to-end encryption
    alone allows a room of real clients on this machine."""
    seal = _get(r, "limits", "crypto", "seal_us")
    open_ = _get(r, "limits", "crypto", "open_us")
    if not seal or not open_:
        return None
    return round(2e6 / (seal + (members - 1) * open_), 1)


def ratios(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: measured, bare, ratio, goal, met."""
    rows: list[dict[str, Any]] = []

    def add(name: str, measured: Any, bare: Any, goal: str, note: str = "") -> None:
        """`goal` is ">= x" or "<= x" on the ratio, or "(no target)"."""
        ratio = measured / bare if measured is not None and bare else None
        met = None
        if ratio is not None and not goal.startswith("("):
            op, limit = goal.split()
            met = ratio >= float(limit) if op == ">=" else ratio <= float(limit)
        rows.append(
            {
                "target": name,
                "measured": measured,
                "bare": bare,
                "ratio": round(ratio, 3) if ratio is not None else None,
                "goal": goal,
                "met": met,
                "note": note,
            }
        )

    def bare_latency(q: str, *, paced: bool = False) -> float | None:
        """Bare RTT plus bare 1-row commit, at percentile `q`: back to back,
        or (`paced`) on the latency rows' schedule (`paced_interval_s`)."""
        rtt = _get(r, "limits", "zmq_rtt_paced" if paced else "zmq_rtt", q)
        fsync = _get(r, "limits", "sqlite", "commit_1_paced" if paced else "commit_1", q)
        return round(rtt + fsync, 3) if rtt is not None and fsync is not None else None

    add(
        "single: acked msgs/s vs bare SQLite group commit (256 rows/commit)",
        _get(r, "single", "throughput", "acked_per_s"),
        _get(r, "limits", "sqlite", "rows_per_s_batch_256"),
        ">= 0.25",
    )
    # With one frame per push (--plain-frames): what the row above could reach
    # if receiving, storing and acking cost nothing: the bare fan-out's
    # deliveries/s over this workload's pushes per acked message (both from
    # this run). With `batch` frames a frame carries many pushes: no ceiling.
    acked = _get(r, "single", "throughput", "acked_per_s")
    pushed = _get(r, "single", "throughput", "delivered_per_s")
    fan = _get(r, "limits", "zmq_fanout", "deliveries_per_s")
    if _get(r, "meta", "args", "plain_frames"):
        ceiling = round(fan * acked / pushed, 1) if acked and pushed and fan else None
        add(
            "single: its ceiling from bare fan-out alone, vs bare SQLite group commit",
            ceiling,
            _get(r, "limits", "sqlite", "rows_per_s_batch_256"),
            "(no target)",
            "bare fan-out deliveries/s / the throughput run's pushes per acked message",
        )
        add(
            "single: acked msgs/s vs that ceiling",
            acked,
            ceiling,
            "(no target)",
        )
    add(
        "single: 100-member room deliveries/s vs bare pyzmq fan-out",
        _get(r, "single", "fanout", "delivered_per_s"),
        _get(r, "limits", "zmq_fanout", "deliveries_per_s"),
        ">= 0.60",
    )
    latency_p99 = _get(r, "single", "latency", "send_deliver_ms", "p99")
    add(
        "single: latency p99 send->deliver vs (bare RTT p99 + bare commit p99)",
        latency_p99,
        bare_latency("p99"),
        "<= 3",
        "the bare round trip and commit back to back",
    )
    interval = _get(r, "limits", "paced_interval_s")
    if interval and bare_latency("p99", paced=True):
        add(
            f"single: the same, bare RTT+commit on its schedule (one every {interval * 1000:g} ms)",
            latency_p99,
            bare_latency("p99", paced=True),
            "(no target)",
            "a diagnostic: the bare round trip and commit after the idle time between messages",
        )
    add(
        "single: latency p99 send->deliver vs (bare RTT p50 + bare commit p50) [stricter]",
        latency_p99,
        bare_latency("p50"),
        "(no target)",
    )
    add(
        "idle clients: active room p99 with / without them",
        _get(r, "single", "idle", "latency", "send_deliver_ms", "p99"),
        latency_p99,
        "<= 1.50",
        f"{_get(r, 'single', 'idle', 'clients')} idle clients",
    )
    idle_run = _get(r, "single", "idle", "latency") or {}
    if idle_run.get("sent") and not idle_run.get("acked"):
        rows[-1]["met"] = False  # not one send of the active room was acked
        rows[-1]["note"] += "; no send acked during the run"
    bare_open = _get(r, "limits", "crypto", "bare_open_us")
    add(
        "catch-up msgs/s vs bare verify+decrypt rate",
        _get(r, "catchup", "per_s"),
        round(1e6 / bare_open, 1) if bare_open else None,
        ">= 0.70",
        f"{_get(r, 'catchup', 'messages')} messages",
    )
    bare_seal = _get(r, "limits", "crypto", "bare_seal_us")
    add(
        "one client's acked sends/s vs its bare seal rate",
        _get(r, "real", "solo", "acked_per_s"),
        round(1e6 / bare_seal, 1) if bare_seal else None,
        ">= 0.50",
        f"{_get(r, 'real', 'solo', 'count')} messages queued at once, real engine",
    )
    add(
        "real clients, 10 members, 5 senders: acked/s vs the clients' crypto bound",
        _get(r, "real", "room10", "acked_per_s"),
        crypto_bound(r, 10),
        "(no target)",
        "bound: 2 cores / (seal + 9 opens) per message",
    )
    bound100 = crypto_bound(r, 100)
    add(
        "real clients, 100 members at 50/s: deliveries/s vs the clients' crypto bound",
        _get(r, "real", "room100", "delivered_per_s"),
        round(99 * bound100, 1) if bound100 else None,
        "(no target)",
        "bound: 2 cores / (seal + 99 opens) per message, times 99 deliveries",
    )
    add(
        "cluster: acked msgs/s vs bare etcd batched puts/s",
        _get(r, "cluster", "throughput", "acked_per_s"),
        _get(r, "cluster", "bare_etcd", "puts_per_s"),
        ">= 0.30",
    )
    add(
        "client: seal (encrypt+sign) time vs bare PyNaCl",
        _get(r, "limits", "crypto", "seal_us"),
        _get(r, "limits", "crypto", "bare_seal_us"),
        "(no target)",
    )
    add(
        "client: open (verify+decrypt) time vs bare PyNaCl",
        _get(r, "limits", "crypto", "open_us"),
        _get(r, "limits", "crypto", "bare_open_us"),
        "(no target)",
    )
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"
    return str(v)


def _lat(run: dict[str, Any] | None, key: str) -> str:
    s = _get(run or {}, key)
    if not s or not s.get("n"):
        return "-"
    return f"{s['p50']:.2f} / {s['p99']:.2f} / {s['max']:.1f}"


def table(r: dict[str, Any]) -> str:
    lines = []
    lim = r.get("limits", {})
    lines.append("\n== bare limits ==")
    if lim:
        lines.append(
            f"pyzmq CURVE round trip ({lim['push_frame_bytes']} B) p50/p99/max ms: "
            f"{lim['zmq_rtt']['p50']:.3f} / {lim['zmq_rtt']['p99']:.3f} / "
            f"{lim['zmq_rtt']['max']:.1f}"
        )
        paced = lim.get("zmq_rtt_paced") or {}
        every = f"one every {lim.get('paced_interval_s', 0) * 1000:g} ms"
        if paced.get("n"):
            lines.append(
                f"  the same, {every}: {paced['p50']:.3f} / {paced['p99']:.3f} / {paced['max']:.1f}"
            )
        lines.append(
            f"pyzmq CURVE fan-out to 100: {lim['zmq_fanout']['deliveries_per_s']:,.0f} deliveries/s"
        )
        sq = lim["sqlite"]
        lines.append(
            f"SQLite WAL FULL: 1-row commit p50/p99 {sq['commit_1']['p50']:.2f} / "
            f"{sq['commit_1']['p99']:.2f} ms; group commit {sq['rows_per_s_batch_8']:,.0f} rows/s "
            f"(8/commit), {sq['rows_per_s_batch_256']:,.0f} rows/s (256/commit)"
        )
        if sq.get("commit_1_paced", {}).get("n"):
            lines.append(
                f"  1-row commit {every} p50/p99: {sq['commit_1_paced']['p50']:.2f} / "
                f"{sq['commit_1_paced']['p99']:.2f} ms"
            )
        c = lim["crypto"]
        lines.append(
            f"PyNaCl per message: sign+encrypt {c['bare_seal_us']:.0f} us, "
            f"verify+decrypt {c['bare_open_us']:.0f} us; curvechat seal {c['seal_us']:.0f} us, "
            f"open {c['open_us']:.0f} us"
        )
    if "cluster" in r and "bare_etcd" in r["cluster"]:
        e = r["cluster"]["bare_etcd"]
        lines.append(f"etcd (3 members) txn of 128 puts: {e['puts_per_s']:,.0f} puts/s")
    lines.append("\n== workloads ==")
    hdr = (
        f"{'workload':28} {'acked/s':>9} {'deliv/s':>9} {'ack p50/p99/max ms':>22} "
        f"{'deliver p50/p99/max ms':>24} {'srv CPU%':>9} {'srv MB':>7}  bottleneck"
    )
    lines.append(hdr)
    rows = [
        ("single: latency", _get(r, "single", "latency")),
        ("single: throughput", _get(r, "single", "throughput")),
        ("single: fan-out 100", _get(r, "single", "fanout")),
        ("single: latency + idle", _get(r, "single", "idle", "latency")),
        ("real: 10 members, 5 senders", _get(r, "real", "room10")),
        ("real: 100 members, 50/s", _get(r, "real", "room100")),
        ("cluster: latency", _get(r, "cluster", "latency")),
        ("cluster: throughput", _get(r, "cluster", "throughput")),
    ]
    for name, run in rows:
        if not run:
            continue
        cpu = "+".join(f"{c:.0f}" for c in run.get("server_cpu_pct", []))
        mem = "+".join(f"{c:.0f}" for c in run.get("server_peak_rss_mb", []))
        lines.append(
            f"{name:28} {_fmt(run.get('acked_per_s')):>9} {_fmt(run.get('delivered_per_s')):>9} "
            f"{_lat(run, 'send_ack_ms'):>22} {_lat(run, 'send_deliver_ms'):>24} {cpu:>9} "
            f"{mem:>7}  {run.get('bottleneck', '')}"
        )
    idle = _get(r, "single", "idle")
    if idle:
        lines.append(
            f"idle: {idle['clients']} clients connected in {idle['connect_s']} s; server RSS "
            f"{idle['rss_before_mb']} -> {idle['rss_connected_mb']} MB "
            f"({idle['bytes_per_connection']:,} B per connection)"
            + _registered(_get(r, "single", "idle_registration"))
        )
    cu = r.get("catchup")
    if cu and "seconds" in cu:
        lines.append(
            f"catch-up: {cu['messages']:,} messages synced, verified, decrypted and cached in "
            f"{cu['seconds']:.1f} s ({cu['per_s']:,.0f}/s; client CPU {cu['client_cpu_pct']}%, "
            f"server CPU {cu['server_cpu_pct']}%)"
        )
    for name in ("room10", "room100"):
        run = _get(r, "real", name)
        if run:
            lines.append(
                f"real clients ({name}): client CPU% per process "
                f"{'+'.join(f'{c:.0f}' for c in run['client_cpu_pct'])}, delivered "
                f"{run['delivered']:,} of {run['deliveries_expected']:,}, order violations "
                f"{run['order_violations']}, failed sends {run.get('failed', 0)}, unacked at "
                f"the end {run.get('unacked_at_end', 0)}, reconnects {run.get('reconnects', 0)}"
            )
    solo = _get(r, "real", "solo")
    if solo:
        lines.append(
            f"one real client: {solo['count']:,} messages queued at once, all acked in "
            f"{solo['seconds']:.2f} s ({solo['acked_per_s']:,.0f}/s; client CPU "
            f"{solo['client_cpu_pct']}%)" + _late(solo.get("loop_late_ms"))
        )
    tp = _get(r, "single", "throughput")
    if tp:
        srv = _get(tp, "processes", "server0") or {}
        lines.append(
            f"stalled client (member of every throughput room, never reads): server RSS "
            f"{srv.get('rss_start_mb')} -> {srv.get('rss_end_mb')} MB "
            f"(peak {srv.get('rss_peak_mb')}); pushes dropped at the "
            f"high-water mark: {tp.get('pushes_dropped', 0):,.0f}"
        )
    lines.append("\n== targets (ratios in this run) ==")
    for row in r.get("ratios", []):
        met = {True: "MET", False: "not met", None: "-"}[row["met"]]
        if row["met"] is False and row["ratio"] is None:
            met = "not met (no send acked)"
        lines.append(
            f"{row['target'][:78]:78} {_fmt(row['measured']):>9} / {_fmt(row['bare']):>9} = "
            f"{_fmt(row['ratio']):>7}  goal {row['goal']:>11}  {met}"
        )
    return "\n".join(lines)


def _registered(reg: dict[str, Any] | None) -> str:
    """How the idle clients' users were registered before the workloads."""
    if not reg:
        return ""
    return f"; their {reg['registered']} users registered first, in {reg['seconds']} s"
