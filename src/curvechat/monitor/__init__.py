"""`curvechat monitor`: a web application of its own, in its own process and
on its own port, that watches the nodes from outside.

It finds the nodes (a list of URLs, or the cluster registry in etcd), polls
each node's `/api/state` once a second with the nodes' token, keeps its own
rolling history of their metric samples (in memory and in SQLite in its data
dir, so graphs survive node restarts and its own), and keeps an outage
timeline: each node going down and coming back, with durations. Its page
keeps working, and says so, when any or all nodes are down.

* `timeline` — the sans-IO core: node up/down transitions, outages, the
  overall state ("all nodes down since …").
* `view` — what the monitor knows (timeline, histories, each node's last
  answer), changed only by poll results; no I/O.
* `archive` — the SQLite file that keeps the view across restarts.
* `sources` — where the list of nodes comes from (URLs, etcd registry).
* `poller` — one poll of one node's `/api/state`, as a value.
* `web` — the HTTP side (page, JSON), behind the nodes' own HTTP guard.
* `app` — the process: the tasks above, wired together, until SIGINT.

It must never import the chat server, the client or zmq (it reads a node
only over HTTP), and it keeps only numbers: never user names, connection
tables or message contents.
"""
