"""The availability arithmetic of docs/reliability.md, section 4.

Steady-state availability of a block is A = MTBF / (MTBF + MTTR) and its
unavailability U = 1 - A; blocks in series multiply their availabilities;
N chat nodes form a 1-of-N parallel block (U = U_node ** N); etcd is a
k-of-n block (2-of-3, 3-of-5):

    A_k_of_n = sum_{i=k..n} C(n, i) * A_m**i * (1 - A_m)**(n - i)

On top of these come the short outages a client sees while it fails over
(its chat node died under it), while etcd elects a new leader, while the
node waits out a deadline on an etcd member that hung or died silently, or
while a client leaves a node cut off from etcd: events a year x the
measured duration of one. Failures are assumed independent; the
site (power, core network) is one common-cause block shown separately.

    .venv/bin/python scripts/availability.py
    .venv/bin/python scripts/availability.py --recovery recovery.json recovery-etcd.json

With --recovery, the medians measured by scripts/measure_recovery.py
(--json) replace the built-in ones, which are the figures that
docs/reliability.md cites. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from math import comb
from pathlib import Path

HOURS_PER_YEAR = 8760.0
S_PER_YEAR = HOURS_PER_YEAR * 3600


@dataclass(frozen=True)
class Params:
    """Assumptions (hours unless said otherwise). Replace them with your own
    fleet's figures; the structure of the model stays the same."""

    host_mtbf: float = 8760.0  # hardware / VM / kernel: once a year
    host_mttr: float = 1.0  # VM restarted or re-provisioned from an image
    disk_mtbf: float = 876_000.0  # data volume, AFR 1 %
    disk_mttr_single: float = 24.0  # single node: new volume + restore from backup
    disk_mttr_member: float = 1.0  # etcd member / chat node: replace, peers hold the data
    net_mtbf: float = 8760.0  # a host's link, NIC, switch port
    net_mttr: float = 0.5
    site_mtbf: float = 43_800.0  # power or core network of the site: once in 5 years
    site_mttr: float = 4.0
    chat_crashes: float = 4.0  # chat process crashes a year (bug, OOM)
    etcd_crashes: float = 2.0  # etcd process crashes a year, per member
    etcd_hangs: float = 0.5  # etcd hung with its kernel alive (stuck fsync, pause), per member
    restarts: float = 12.0  # planned restarts (upgrades) a year, per process
    supervisor_s: float = 1.0  # systemd Restart=always, RestartSec=1 (not shipped)
    etcd_restart_s: float = 10.0  # etcd process restarted by its supervisor, rejoined
    cutoffs: float = 1.0  # a chat node cut off from etcd but not from its clients, a year
    cutoff_s: float = 600.0  # ... for 10 minutes (what its clients lost before commit 7eb1a3e)
    # True: the code before commits 8b0a5b8 and 7eb1a3e (findings F2 and F3
    # open: a hung member stalled sends about a minute, a silent death 14 s,
    # and clients stayed on a node cut off from etcd), for comparison.
    before_fixes: bool = False
    # Fixed by the code:
    call_deadline_s: float = 5.0  # EtcdStore: deadline of every etcd call
    client_retry_s: float = 1.0  # the outbox resends a store_unavailable refusal after 1 s
    backoff_cap_s: float = 10.0  # after a long outage a client retries within [0, cap]


# Measured by scripts/measure_recovery.py with the engine's default client
# settings (medians, seconds); see docs/reliability.md, section 3. The etcd
# freezes and the cut-off node at commit 73b16a6 (after the F2 and F3 fixes).
MEASURED = {
    "single": 0.97,  # one node on SQLite killed (-9) and restarted at once: ack
    "failover": 0.19,  # the client's chat node killed (-9), another one up: ack
    "freeze": 7.94,  # the client's chat node frozen (SIGSTOP, no TCP reset): ack
    "leader": 1.74,  # the etcd leader killed (-9): first ack after
    "leaderfreeze": 7.75,  # the etcd leader frozen (SIGSTOP): first ack after
    "followerfreeze": 6.05,  # an etcd follower frozen (SIGSTOP): first ack after
    "quorum": 1.80,  # quorum back after 2 of 3 etcd members were down: ack
    "cutoff": 2.31,  # the client's node cut off from etcd (resets): ack on another node
    "cutoffsilent": 17.5,  # the same, silent (SIGSTOP of the member it reaches)
}
# Before commits 8b0a5b8 and 7eb1a3e (same method, n = 3 each).
BEFORE_FIXES = {"leaderfreeze": 61.2, "followerfreeze": 60.3, "member_silent": 14.0}


def avail(mtbf: float, mttr: float) -> float:
    return mtbf / (mtbf + mttr)


def k_of_n(k: int, n: int, a: float) -> float:
    """Probability that at least k of n independent blocks of availability a are up."""
    return sum(comb(n, i) * a**i * (1 - a) ** (n - i) for i in range(k, n + 1))


def events(seconds_each: float, per_year: float) -> float:
    """Unavailability of events that happen `per_year` times, `seconds_each` long."""
    return seconds_each * per_year / S_PER_YEAR


def series(*u: float) -> float:
    a = 1.0
    for value in u:
        a *= 1 - value
    return 1 - a


def hard_failures(p: Params) -> float:
    """Host, link or disk failures of one machine a year: no TCP reset reaches
    the peers, they notice by timeouts."""
    return HOURS_PER_YEAR / p.host_mtbf + HOURS_PER_YEAR / p.net_mtbf + HOURS_PER_YEAR / p.disk_mtbf


def single_node(p: Params, ms: dict[str, float]) -> dict[str, float]:
    """Host, disk, link and process in series. After an outage of hours a
    client comes back within its back-off (mean cap/2)."""
    back = p.backoff_cap_s / 2 / 3600
    return {
        "host": 1 - avail(p.host_mtbf, p.host_mttr + back),
        "network link": 1 - avail(p.net_mtbf, p.net_mttr + back),
        "disk": 1 - avail(p.disk_mtbf, p.disk_mttr_single + back),
        "process crash": events(p.supervisor_s + ms["single"], p.chat_crashes),
        "planned restart": events(ms["single"], p.restarts),
    }


def chat_node_down(p: Params) -> float:
    """U of one chat node in the 1-of-N block (a crashed process is back in
    seconds and its clients are elsewhere by then: not counted here)."""
    return series(
        1 - avail(p.host_mtbf, p.host_mttr),
        1 - avail(p.disk_mtbf, p.disk_mttr_member),
        1 - avail(p.net_mtbf, p.net_mttr),
    )


def etcd_member_down(p: Params) -> float:
    return series(
        1 - avail(p.host_mtbf, p.host_mttr),
        1 - avail(p.disk_mtbf, p.disk_mttr_member),
        1 - avail(p.net_mtbf, p.net_mttr),
        events(p.etcd_restart_s, p.etcd_crashes + p.restarts),
    )


def cluster(n_chat: int, n_etcd: int, p: Params, ms: dict[str, float]) -> dict[str, float]:
    k = n_etcd // 2 + 1
    hard = hard_failures(p)
    return {
        f"all {n_chat} chat nodes down (1-of-{n_chat})": chat_node_down(p) ** n_chat,
        f"etcd quorum lost ({k}-of-{n_etcd})": 1 - k_of_n(k, n_etcd, 1 - etcd_member_down(p)),
        # Each user is on one chat node: that node's failures are the user's
        # failovers, silent ones (host, link, disk) and crashes / restarts.
        "failover from the user's node": events(ms["freeze"], hard)
        + events(ms["failover"], p.chat_crashes + p.restarts),
        # The leader is one member at a time; a graceful restart hands its
        # leadership over first (etcd does), a crash costs an election.
        "etcd leader crash (election)": events(ms["leader"], p.etcd_crashes),
        # A member that hangs or dies silently (no TCP reset) fails one call
        # at its deadline; the node then skips it (2 s, doubling to 30 s), and
        # the refused send is resent after 1 s: measured with SIGSTOP. The
        # leader is one of n members; a frozen leader also costs an election.
        "etcd member dies silently": member_stall(n_etcd, hard, p, ms, silent=True),
        "etcd member hung": member_stall(n_etcd, p.etcd_hangs, p, ms),
        # A follower that crashes or restarts fails the calls in flight on
        # it; they are resent after 1 s (an upper bound: not every user has one).
        "etcd follower restart (calls resent)": events(
            p.client_retry_s, (n_etcd - 1) * (p.etcd_crashes + p.restarts)
        ),
        # A client leaves a node that refuses three sends in a row with
        # store_unavailable; a silent cut (calls waiting out their deadline)
        # is the slower case and the one counted. Before the fix the clients
        # stayed for the whole cut (finding F2).
        "user's node cut off from etcd": events(
            p.cutoff_s if p.before_fixes else ms["cutoffsilent"], p.cutoffs
        ),
    }


def member_stall(
    n_etcd: int, per_member: float, p: Params, ms: dict[str, float], *, silent: bool = False
) -> float:
    """Unavailability from etcd members that stop answering without a TCP
    reset, `per_member` times a year each: 1 in n of them is the leader."""
    if p.before_fixes:
        if silent:
            return events(BEFORE_FIXES["member_silent"], n_etcd * per_member)
        leader_s, follower_s = BEFORE_FIXES["leaderfreeze"], BEFORE_FIXES["followerfreeze"]
    else:
        leader_s, follower_s = ms["leaderfreeze"], ms["followerfreeze"]
    return events(leader_s, per_member) + events(follower_s, (n_etcd - 1) * per_member)


def downtime(u: float) -> str:
    seconds = u * S_PER_YEAR
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def designs(p: Params, ms: dict[str, float]) -> dict[str, dict[str, float]]:
    return {
        "single node, SQLite": single_node(p, ms),
        "2 chat nodes, 3-member etcd": cluster(2, 3, p, ms),
        "3 chat nodes, 3-member etcd": cluster(3, 3, p, ms),
        "3 chat nodes, 5-member etcd": cluster(3, 5, p, ms),
    }


def table(p: Params, ms: dict[str, float], title: str) -> None:
    site = 1 - avail(p.site_mtbf, p.site_mttr)
    print(title)
    print(f"  {'design':29} {'availability':>12} {'down/yr':>9}   {'with site':>10} {'down/yr':>9}")
    for name, terms in designs(p, ms).items():
        u = series(*terms.values())
        us = series(u, site)
        print(
            f"  {name:29} {100 * (1 - u):11.5f}% {downtime(u):>9}"
            f"   {100 * (1 - us):9.5f}% {downtime(us):>9}"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--recovery",
        type=Path,
        nargs="+",
        default=[],
        help="JSON files written by measure_recovery.py --json",
    )
    args = parser.parse_args()
    ms = dict(MEASURED)
    for path in args.recovery:
        data = json.loads(path.read_text())["scenarios"]
        for name in ms:
            if name in data:
                ms[name] = data[name]["summary"]["ack"]["median"]
    p = Params()
    print("measured medians (s):", ", ".join(f"{k} {v:.2f}" for k, v in ms.items()))
    print(f"U of one chat node (1-of-N block): {chat_node_down(p):.3e}")
    print(f"U of one etcd member (k-of-n block): {etcd_member_down(p):.3e}")
    print(f"U of the site (common cause): {1 - avail(p.site_mtbf, p.site_mttr):.3e}")
    print()
    for name, terms in designs(p, ms).items():
        print(name)
        for term, value in sorted(terms.items(), key=lambda kv: -kv[1]):
            print(f"    {term:40} U = {value:.2e}  {downtime(value):>9}/yr")
    print()
    table(p, ms, "Baseline")
    table(
        replace(p, before_fixes=True),
        ms,
        "Before commits 8b0a5b8 and 7eb1a3e (findings F2 and F3 open)",
    )
    table(
        replace(p, supervisor_s=1800.0),
        ms,
        "No process supervisor: a crashed node waits 30 min for an operator",
    )
    table(
        replace(p, host_mttr=24.0, disk_mttr_member=24.0),
        ms,
        "Hosts repaired in 24 h (hardware, no spare)",
    )


if __name__ == "__main__":
    main()
