"""Pass criteria, and the report of a run: report.json (everything, with the
whole history), summary.txt (for a human) and timeline.png (acks over time,
send->ack latency, the faults marked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .gaps import summary_lines


def criteria(result: dict[str, Any], storm: dict[str, Any] | None) -> dict[str, bool]:
    c = result["counts"]
    out = {
        "lost == 0": c["lost"] == 0,
        "duplicated == 0": c["duplicated"] == 0,
        "reordered == 0": c["reordered"] == 0,
        "unexpected == 0": c["unexpected"] == 0,
        "false acks while quorum lost == 0": c["false_acks"] == 0,
        "drain converged": bool(result.get("drain", {}).get("converged")),
        "some sends acked": c["acked"] > 0,
    }
    if storm is not None:
        out["storm: all clients reconnected"] = bool(storm.get("all_reconnected"))
    return out


def write(out: Path, report: dict[str, Any], history: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({**report, "history": history}, indent=1))
    (out / "summary.txt").write_text(summary(report))
    timeline(out / "timeline.png", report, history)


def summary(report: dict[str, Any]) -> str:
    r = report["result"]
    c = r["counts"]
    lines = [
        f"curvechat chaos run {report['name']}: {'PASS' if report['passed'] else 'FAIL'}",
        f"duration {report['config']['duration']} s of faults, seed {report['config']['seed']}, "
        f"{report['config']['clients']} engine clients in {report['config']['rooms']} rooms, "
        f"{report['config']['nodes']} chat nodes, etcd x3; wall time {report['wall_s']} s",
        "",
        "criteria:",
        *[f"  [{'ok' if v else 'FAIL'}] {k}" for k, v in report["criteria"].items()],
        "",
        f"sends invoked {c['invoked']}: acked {c['acked']} (in time {c['ok']}), "
        f"failed {c['failed']}, ambiguous {c['ambiguous']} "
        f"(recovered {c['ambiguous_recovered']}), pending {c['pending']}",
        f"lost {c['lost']}  duplicated {c['duplicated']}  reordered {c['reordered']}  "
        f"unexpected {c['unexpected']}",
        f"acks while quorum lost: {c['acks_in_quorum_loss']} (false: {c['false_acks']})",
        f"messages received (engine events): {c['received']}",
    ]
    for key, label in (
        ("send_to_ack_s", "send->ack"),
        ("send_to_deliver_s", "send->deliver"),
        ("send_to_deliver_outside_quorum_loss_s", "  (sent while etcd had quorum)"),
    ):
        q = r["latency"].get(key)
        if q is None:
            continue
        lines.append(
            f"{label:14} n={q['n']} p50={q['p50']} p90={q['p90']} p99={q['p99']} max={q['max']} s"
        )
    drain = r.get("drain", {})
    lines += [
        f"final drain: {drain.get('drain_s')} s, outboxes empty {drain.get('outboxes_empty')}, "
        f"converged {drain.get('converged')}",
        "",
        "faults (recovery = after the heal, until the first / every client had an ack; "
        "gap = longest time without any ack during it):",
    ]
    for f in r["recovery"]:
        lines.append(
            f"  {f['start']:7.1f}-{f['end']:7.1f} s  {f['name']:20} "
            f"first {f['first_s']} s  all {f['all_s']} s  gap {f['gap_s']} s"
        )
    for fault in report.get("faults", []):
        if fault.get("error"):
            lines.append(f"  could not inject {fault['name']}: {fault['error']}")
    for storm in report.get("storms", []):
        lines.append(
            f"reconnect storm at {storm.get('at')} s: {storm.get('clients')} clients cut "
            f"({storm.get('cut')} connections); all back: {storm.get('all_reconnected')} "
            f"in {storm.get('all_s')} s (p50 {storm.get('p50_s')} s, p99 {storm.get('p99_s')} s); "
            f"engine clients all live again after {storm.get('engine_clients_live')} s"
        )
    if r.get("gaps"):
        lines += [*summary_lines(r["gaps"]), ""]
    lines.append(f"watch re-lists after compaction, per node: {report.get('relists')}")
    owners: dict[str, int] = {}
    for f in report.get("link_fallbacks", []):
        owners[f["owner"]] = owners.get(f["owner"], 0) + 1
    lines.append(
        "times a node took over an owner's sends (a forward given up, or the link"
        f" found unreachable by its heartbeat), per owner: {owners}"
    )
    if report.get("workload_errors"):
        lines.append(f"workload errors: {report['workload_errors']}")
    if report.get("node_log_problems"):
        lines.append(f"node logs with tracebacks: {report['node_log_problems']}")
    for kind in ("lost", "duplicated", "reordered", "unexpected", "false_acks"):
        for example in r[kind][:5]:
            lines.append(f"  {kind}: {example}")
    return "\n".join(lines) + "\n"


def timeline(path: Path, report: dict[str, Any], history: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = history["ops"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(14, 7), sharex=True)
    acked = [op for op in ops if op.get("t_ack") is not None]
    end = max([op["t_invoke"] for op in ops] + [1.0])
    bins = max(1, int(end))
    ax1.hist([op["t_ack"] for op in acked], bins=bins, range=(0, bins), color="tab:blue")
    ax1.set_ylabel("acks / s")
    amb = [op["t_timeout"] for op in ops if op["outcome"] == "ambiguous" and op.get("t_timeout")]
    if amb:
        ax1.plot(amb, [0] * len(amb), "x", color="tab:red", label="ambiguous (timed out)")
        ax1.legend(loc="upper right")
    ok = [op for op in ops if op["outcome"] == "ok" and op.get("t_ack") is not None]
    ax2.scatter(
        [op["t_invoke"] for op in ok],
        [max(1e-3, op["t_ack"] - op["t_invoke"]) for op in ok],
        s=3,
        color="tab:green",
    )
    ax2.set_yscale("log")
    ax2.set_ylabel("send->ack (s)")
    ax2.set_xlabel("time since start (s)")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = sorted({f["name"] for f in history["faults"]})
    for f in history["faults"]:
        color = colors[names.index(f["name"]) % len(colors)]
        for ax in (ax1, ax2):
            ax.axvspan(
                f["start"], max(f["end"] or f["start"], f["start"] + 0.3), alpha=0.18, color=color
            )
        if f["name"] == "reconnect-storm":
            continue  # marked below, with a dashed line at the cut
        label = f["name"] + (f" {f['target']}" if f.get("target") else "")
        ax1.annotate(
            label,
            (f["start"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            fontsize=7,
        )
    for storm in report.get("storms", []):
        for ax in (ax1, ax2):
            ax.axvline(storm["at"], color="black", linestyle="--")
        ax1.annotate(
            f"storm x{storm.get('clients')}",
            (storm["at"], 0.5),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
        )
    ax1.set_title(f"curvechat chaos {report['name']}: {'PASS' if report['passed'] else 'FAIL'}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
