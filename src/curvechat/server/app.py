"""`curvechat serve`: a node on the embedded SQLite store (or, with
``--store etcd://…``, on etcd as a member of a cluster), its keys and its
connect string, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import resource
import secrets
import signal
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curvechat.protocol.connect import (
    ConnectStringError,
    ServerAddress,
    format_connect,
    parse_connect,
)
from curvechat.protocol.errors import ConfigError, DataDirError
from curvechat.server.datadir import holding
from curvechat.server.diskwatch import DiskWatch
from curvechat.server.http import start_http
from curvechat.server.httpguard import TOKEN_FILE, HttpGuard, load_or_create_token
from curvechat.server.influx import DEFAULT_INTERVAL_S, InfluxPusher
from curvechat.server.keys import load_or_create_keypair
from curvechat.server.node import NODE_NAME_RULE, ChatNode, valid_node_name
from curvechat.server.ratelimit import RateLimits
from curvechat.smallfiles import read_small_text
from curvechat.store import Store
from curvechat.store.reserve import DEFAULT_MIN_FREE
from curvechat.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from curvechat.store.etcd import EtcdSecurity, EtcdStore

log = logging.getLogger("curvechat.server")

STOP_STEP_S = 8.0
NODE_ID_FILE = "node.id"


class NodeNameError(ConfigError):
    """DATA/node.id or --node-name holds something that is not a node name."""

    code = "bad_node_name"


def default_node_name() -> str:
    """This host's name and a random suffix (several nodes may share a host)."""
    host = re.sub(r"[^A-Za-z0-9_.-]+", "-", os.uname().nodename)[:40].strip("-._")
    return f"{host or 'node'}-{secrets.token_hex(3)}"


def load_or_create_node_name(data_dir: Path, name: str | None = None) -> str:
    """The node's stable name, kept in DATA/node.id: made on first start
    (host name and a random suffix), reused after, so a restarted node keeps
    its InfluxDB series and its clients see a reconnect, not a failover.
    `name` (from --node-name) renames the node, and is kept for later starts."""
    path = data_dir / NODE_ID_FILE
    try:
        stored = read_small_text(path).strip() if path.exists() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise NodeNameError(f"cannot read {path}: {exc}") from exc
    if name is None and stored is not None:
        if not valid_node_name(stored):
            raise NodeNameError(f"{path} holds no valid node name ({NODE_NAME_RULE})")
        return stored
    if name is None:
        name = default_node_name()
    elif not valid_node_name(name):
        raise NodeNameError(f"not a valid node name: {name!r} ({NODE_NAME_RULE})")
    if stored != name:
        tmp = path.with_name(f".{NODE_ID_FILE}.{os.getpid()}.tmp")
        tmp.write_text(name + "\n")
        os.replace(tmp, path)
    return name


def advertised_endpoint(bound: str, advertise: str | None) -> str:
    """The endpoint clients should dial: `advertise` if given, else the bound
    endpoint with a wildcard host replaced by 127.0.0.1."""
    if advertise:
        return advertise
    for wildcard in ("tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"):
        if bound.startswith(wildcard):
            return "tcp://127.0.0.1:" + bound[len(wildcard) :]
    return bound


def advertised_http_host(host: str, dial: str) -> str:
    """The host other nodes reach this node's HTTP side at: its bound host,
    or (bound to a wildcard) the host clients dial."""
    if host in ("", "0.0.0.0", "::", "*"):
        host = dial.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    return host


def advertised_http(host: str, port: int, dial: str) -> str:
    """The base URL other nodes reach this node's HTTP side at (it is put in
    the cluster registry, and printed with the token for the operator)."""
    host = advertised_http_host(host, dial)
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def serve(
    data_dir: Path,
    bind: str,
    http: str | None,
    advertise: str | None = None,
    ready: asyncio.Event | None = None,
    limits: RateLimits | None = None,
    influx: str | None = None,
    influx_db: str | None = None,
    influx_interval: float = DEFAULT_INTERVAL_S,
    store_url: str | None = None,
    etcd_max_txn_ops: int = 128,
    etcd_security: EtcdSecurity | None = None,
    etcd_quota_bytes: int | None = None,
    etcd_slow_s: float | None = None,
    http_hosts: Sequence[str] = (),
    http_token_file: Path | None = None,
    http_require_token: bool = False,
    metrics_open: bool = False,
    node_name: str | None = None,
    link_bind: str | None = None,
    link_advertise: str | None = None,
    rebalance_after_s: float | None = None,
    disk_reserve: int | None = None,
) -> None:
    raise_open_files_limit()
    # Ctrl-C / SIGTERM from here on means "stop cleanly", even during start-up.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Nothing in the data directory is touched before the lock is ours: a
    # second node on it stops here (data_dir_in_use).
    with holding(data_dir):
        try:
            # The connect string of an earlier life is not this one's (until ready).
            (data_dir / "connect").unlink(missing_ok=True)
            public, secret = load_or_create_keypair(data_dir)
            name = load_or_create_node_name(data_dir, node_name)
        except OSError as exc:
            raise DataDirError(f"cannot use the data directory {data_dir}: {exc}") from exc
        # The HTTP side's bearer token: made on first start, reused after.
        token = load_or_create_token(http_token_file or data_dir / TOKEN_FILE) if http else ""
        store: Store
        etcd: EtcdStore | None = None  # cluster mode
        if store_url:
            from curvechat.store.etcd import EtcdSecurity, EtcdStore, parse_etcd_url  # loads gRPC

            endpoints, prefix = parse_etcd_url(store_url)
            store = etcd = EtcdStore(
                endpoints,
                prefix=prefix,
                max_txn_ops=etcd_max_txn_ops,
                security=etcd_security or EtcdSecurity.load(store_url),
            )
        else:
            store = SQLiteStore(
                data_dir / "curvechat.db",
                min_free_bytes=DEFAULT_MIN_FREE if disk_reserve is None else disk_reserve,
            )
        if etcd is None:
            await store.open()
        else:
            from curvechat.server.cluster import refuse_a_taken_name, retrying

            # etcd down for a moment (a leader change, a member restarting)
            # when the node starts: retried, as every other start-up call,
            # unless the node is told to stop meanwhile.
            async def reach_etcd() -> None:
                await retrying("connecting to etcd", etcd.open)
                await retrying("checking the name", lambda: refuse_a_taken_name(etcd, name, public))

            try:
                started = await _unless_stopped(stop, reach_etcd())
            except BaseException:
                await _bounded("store", store.close())
                raise
            if not started:
                log.info("stopped while reaching etcd, before the node started")
                await _bounded("store", store.close())
                return
        node = ChatNode(
            store, public_key=public, secret_key=secret, bind=bind, node_name=name, limits=limits
        )
        try:
            endpoint = await node.start()
        except BaseException:
            await _bounded("node", node.stop())  # its authenticator and context
            await _bounded("store", store.close())
            raise
        runner = None
        pusher = None
        cluster = None
        capacity = None
        disk = None
        dashboard = ""  # this node's HTTP base URL, for the cluster registry
        dashboard_link = ""  # what the operator opens: the URL, with the token if needed
        try:
            if influx:
                pusher = InfluxPusher(
                    node.metrics.registry,
                    influx,
                    node=node.node_name,
                    db=influx_db,
                    interval=influx_interval,
                    events=node.events,
                )
                pusher.start()
                log.info("pushing metrics to InfluxDB every %g s", influx_interval)
            dial = node.dial = advertised_endpoint(endpoint, advertise)
            if http:
                host, _, port = http.rpartition(":")
                bind_host = host.strip("[]") or "127.0.0.1"
                # Host names this node answers to: see HttpGuard.for_bind; the
                # host in its registry URL is one (other nodes fetch its state).
                guard = HttpGuard.for_bind(
                    bind_host,
                    token,
                    extra_hosts=[*http_hosts, advertised_http_host(bind_host, dial)],
                    require_token=http_require_token,
                    metrics_open=metrics_open,
                )
                runner, http_port = await start_http(node, bind_host, int(port), guard)
                dashboard = advertised_http(bind_host, http_port, dial)
                dashboard_link = dashboard + (f"#token={token}" if guard.require_token else "")
                log.info(
                    "HTTP (dashboard, health, metrics) on http://%s:%d/; token %s",
                    host or "127.0.0.1",
                    http_port,
                    "required" if guard.require_token else "not required on loopback",
                )
            # What people paste: curvechat://HOST:PORT/<base32 key> (connect.py).
            address = ServerAddress(dial, public.decode())
            connect = str(address)
            if etcd is not None:
                from curvechat.server.cluster import REBALANCE_AFTER_S, Cluster

                # The registry (and so a welcome's peers) keeps the older z85 form,
                # which clients from before the new form can read too.
                if link_bind is None:  # the client port's host, any free port
                    link_bind = bind.rpartition(":")[0] + ":*"
                cluster = Cluster(
                    node,
                    etcd,
                    address.legacy,
                    http=dashboard,
                    link_bind=link_bind,
                    link_advertise=link_advertise,
                    slow_rtt_s=etcd_slow_s,
                    rebalance_after_s=(
                        REBALANCE_AFTER_S if rebalance_after_s is None else rebalance_after_s
                    ),
                )
                await cluster.start()
                from curvechat.server.capacity import CapacityWatch

                capacity = CapacityWatch(
                    etcd, node.metrics, node.events, quota_bytes=etcd_quota_bytes
                )
                capacity.start()
                node.etcd_quota = capacity.state
                # As listed by the start (it retried etcd's brief refusals).
                print(f"cluster: {len(cluster.nodes)} node(s) registered in etcd", flush=True)
                print(f"cluster connect string: {_cluster_connect(cluster.nodes)}", flush=True)
                if cluster.link is not None:
                    print(f"node link: {cluster.link.endpoint}", flush=True)
            if isinstance(store, SQLiteStore):
                disk = DiskWatch(store.reserve, node.metrics, node.events)
                disk.start()
            # Written once the node is registered: a node refused never writes it.
            (data_dir / "connect").write_text(connect + "\n")
            node.announce()
            print(f"curvechat node {node.node_name} ready", flush=True)
            if dashboard_link:
                print(f"dashboard: {dashboard_link}", flush=True)
            print(f"server fingerprint: {address.fingerprint}", flush=True)
            print(f"connect string: {connect}", flush=True)
            if ready is not None:
                ready.set()
            # What the start made (modules, the node, its store) lives as long as
            # the process: out of the cyclic GC's full collections, which would
            # walk it all again each time, with the event loop stopped. Collected
            # first: a cycle frozen would never be freed.
            gc.collect()
            gc.freeze()
            await stop.wait()
            print("stopping…", flush=True)
        finally:
            if capacity is not None:
                await _bounded("etcd capacity", capacity.stop())
            if disk is not None:
                await _bounded("disk watch", disk.stop())
            if cluster is not None:
                await _bounded("cluster", cluster.stop())
            if pusher is not None:
                await _bounded("influx push", pusher.stop())
            if runner is not None:
                await _bounded("http", runner.cleanup())
            await _bounded("node", node.stop())
            await _bounded("store", store.close())


def _cluster_connect(nodes: Sequence[Any]) -> str:
    """The registered nodes' connect strings as one string of the new form."""
    addresses: list[ServerAddress] = []
    for n in nodes:
        with contextlib.suppress(ConnectStringError):  # a malformed entry is left out
            addresses += [a for a in parse_connect(n.connect) if a not in addresses]
    return format_connect(addresses)


OPEN_FILES_WANTED = 1 << 20
"""The soft limit on open files a node asks for (up to its hard limit)."""


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files as far as its hard
    limit lets it (at most OPEN_FILES_WANTED): every client connection holds
    a descriptor, and the usual soft limit (1,024) is reached by that many
    connections from one host, after which no one else is accepted. Returns
    the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("could not raise the limit on open files from %d: %s", soft, exc)
    return soft


async def _unless_stopped(stop: asyncio.Event, step: Coroutine[Any, Any, None]) -> bool:
    """Run a start-up step that may take long (etcd retried for up to
    START_RETRY_S) unless Ctrl-C or SIGTERM comes first: then the step is
    cancelled and the answer is False."""
    task = asyncio.ensure_future(step)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        task.result()  # what it raised, if anything
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def _bounded(what: str, step: Coroutine[Any, Any, None]) -> None:
    """One step of shutdown, given STOP_STEP_S: a step that hangs (a store
    that does not answer) must not keep the process from exiting."""
    try:
        async with asyncio.timeout(STOP_STEP_S):
            await step
    except TimeoutError:
        log.warning("stopping: %s did not finish within %g s; going on", what, STOP_STEP_S)
