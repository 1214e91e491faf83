"""curvechat's benchmark suite: `make bench` or `python -m bench`.

Every run measures curvechat side by side with the bare components beneath it
(pyzmq with CURVE, SQLite WAL group commit, etcd batched transactions, PyNaCl)
so that the ratios hold on a noisy machine. See docs/performance.md.
"""
