#!/usr/bin/env python3
"""`make chaos`: a mixed-nemesis fault-injection run against a real cluster
(3 etcd members, 3 chat nodes, engine clients, a reconnect storm), checked
Jepsen-style. Writes results/chaos-<timestamp>/{report.json,summary.txt,
timeline.png}; exits nonzero if any criterion fails.

    .venv/bin/python scripts/chaos.py [--duration 600] [--seed N] [--storm-clients 1000]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from chaos.run import main

if __name__ == "__main__":
    sys.exit(main())
