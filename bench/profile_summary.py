"""Summarise py-spy collapsed stacks: where the samples went, by function.

python -m bench.profile_summary results/profile-*/throughput-server0.collapsed.txt
"""

from __future__ import annotations

import collections
import sys


def summarise(path: str, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, count = line.rstrip().rpartition(" ")
            n = int(count)
            total += n
            frames = stack.split(";")
            own[frames[-1]] += n
            for f in set(frames):
                incl[f] += n
    out = [f"{path}: {total} samples", "-- self --"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out.append("-- inclusive --")
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(summarise(p))
