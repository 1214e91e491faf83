"""The etcd v3 backend: the cluster's shared state, and what a chat node
needs of etcd beyond the `Store`.

* `keys`: the key layout under a prefix, and the ``etcd://`` URL;
* `records`: the values stored (msgpack arrays);
* `conn`: TLS, client certificates and etcd authentication;
* `pool`: the members, one gRPC channel each, deadlines and penalties;
* `client`: the RPC helpers and the lifecycle over the pool;
* `rooms`: rooms and membership (ops, epochs, key packets);
* `store`: `EtcdStore`, the `Store` on etcd (users and messages here);
* `messages`: the group commit's transactions (the fast path and the read path);
* `runs`: the message runs, written and read;
* `feed`: the cluster feed (typed watch events) and the node registry;
* `health`: the probe that finds members not serving;
* `status`: the members' status and space quota.

Importing this package loads gRPC, never zmq, a UI or any crypto.
"""

from curvechat.store.etcd.conn import EtcdSecurity
from curvechat.store.etcd.keys import DEFAULT_PREFIX, parse_etcd_url, prefix_end
from curvechat.store.etcd.store import EtcdStore

__all__ = ["DEFAULT_PREFIX", "EtcdSecurity", "EtcdStore", "parse_etcd_url", "prefix_end"]
