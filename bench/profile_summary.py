"""Summarise py-spy collapsed stacks: where the samples went, by thread and
by function (idle samples included, as `--profile` records them).

python -m bench.profile_summary results/profile-*/throughput-server0.collapsed.txt
"""

from __future__ import annotations

import collections
import sys


def summarise(path: str, top: int = 25) -> str:
    threads: collections.Counter[str] = collections.Counter()
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, count = line.rstrip().rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            # With --threads the first frame names the thread: "thread (tid): name".
            thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread (") else "-"
            threads[thread] += n
            own[thread][frames[-1]] += n
            for f in set(frames[1:] if thread != "-" else frames):
                incl[f] += n
    out = [f"{path}: {total} samples"]
    for thread, n in threads.most_common():
        out.append(f"-- thread {thread}: {100 * n / total:.1f}% of the samples; self --")
        out += [f"{100 * k / n:5.1f}%  {f}" for f, k in own[thread].most_common(top)]
    out.append("-- inclusive, all threads --")
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(summarise(p))
