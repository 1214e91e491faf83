"""The layers import only what is below them (see curvechat/__init__.py).

Each check runs in a fresh interpreter, so nothing this test process has
already imported can hide (or fake) a dependency.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVER_SIDE_ONLY = ("zmq", "textual", "aiohttp", "curvechat.server", "curvechat.client")


def loaded_after(*modules: str) -> set[str]:
    """The modules in sys.modules after importing `modules` in a new interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout))


def offending(loaded: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        name for name in loaded if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


@pytest.mark.parametrize(
    "module",
    ["curvechat.protocol", "curvechat.crypto", "curvechat.store", "curvechat.store.sqlite"],
)
def test_lower_layers_do_not_load_transport_ui_or_upper_layers(module: str) -> None:
    loaded = loaded_after(module)
    assert module in loaded
    assert offending(loaded, SERVER_SIDE_ONLY) == []


def test_all_lower_layers_together() -> None:
    loaded = loaded_after(
        "curvechat.protocol", "curvechat.crypto", "curvechat.store", "curvechat.store.sqlite"
    )
    assert offending(loaded, SERVER_SIDE_ONLY) == []


def test_protocol_does_not_load_nacl() -> None:
    loaded = loaded_after(
        "curvechat.protocol",
        "curvechat.protocol.codec",
        "curvechat.protocol.connect",
        "curvechat.protocol.errors",
        "curvechat.protocol.limits",
        "curvechat.protocol.messages",
        "curvechat.protocol.peer",
    )
    assert offending(loaded, ("nacl", "curvechat.crypto", "curvechat.store")) == []
    assert offending(loaded, SERVER_SIDE_ONLY) == []


def test_client_trust_core_is_sans_io() -> None:
    """The trust core decides from what it is fed: no transport, no SQLite,
    no UI, no server code."""
    loaded = loaded_after("curvechat.client.trust")
    assert (
        offending(loaded, ("zmq", "sqlite3", "_sqlite3", "textual", "aiohttp", "curvechat.server"))
        == []
    )
    assert offending(loaded, ("curvechat.client.cache", "curvechat.client.connection")) == []


def test_client_recovery_is_sans_io() -> None:
    """Which messages that did not open are tried again, and what replaces
    what, is decided without a transport, SQLite or the cache."""
    loaded = loaded_after("curvechat.client.recovery")
    assert offending(loaded, ("zmq", "sqlite3", "_sqlite3", "textual", "aiohttp")) == []
    assert (
        offending(
            loaded,
            (
                "curvechat.server",
                "curvechat.client.cache",
                "curvechat.client.connection",
                "curvechat.client.recover",
                "curvechat.client.sync",
            ),
        )
        == []
    )


def test_client_push_queue_is_sans_io() -> None:
    """The engine's bounded push queue counts and drops without a transport,
    SQLite or the rest of the client."""
    loaded = loaded_after("curvechat.client.pushqueue")
    assert offending(loaded, ("zmq", "sqlite3", "_sqlite3", "textual", "aiohttp")) == []
    assert offending(loaded, ("curvechat.server", "nacl")) == []
    assert sorted(n for n in loaded if n.startswith("curvechat.client.")) == [
        "curvechat.client.pushqueue"
    ]


def test_client_peer_core_is_sans_io() -> None:
    """The peer core decides who connects, what is served and what is taken
    from what it is fed: no transport, no SQLite, no UI, no server code."""
    loaded = loaded_after("curvechat.client.peer.core", "curvechat.protocol.peer")
    assert offending(loaded, ("zmq", "sqlite3", "_sqlite3", "textual", "aiohttp", "zeroconf")) == []
    assert (
        offending(
            loaded,
            (
                "curvechat.server",
                "curvechat.client.cache",
                "curvechat.client.connection",
                "curvechat.client.peer.shell",
                "curvechat.client.peer.listener",
                "curvechat.client.peer.link",
                "curvechat.client.peer.mdns",
            ),
        )
        == []
    )


def test_ownership_rules_are_sans_io() -> None:
    """Room ownership (server/ownership.py) is decided without sockets,
    etcd or the rest of the server."""
    loaded = loaded_after("curvechat.server.ownership")
    assert (
        offending(loaded, ("zmq", "aetcd", "grpc", "curvechat.store", "curvechat.server.node"))
        == []
    )


def test_handlers_and_the_cluster_do_not_reach_around() -> None:
    """The request handlers see the node through NodeContext (they do not
    import node.py), and cluster.py reaches etcd only through the store's
    feed and registry (it does not import the gRPC messages)."""
    import ast
    import pathlib

    import curvechat

    server = pathlib.Path(curvechat.__file__).parent / "server"

    def imports(name: str) -> set[str]:
        tree = ast.parse((server / name).read_text())
        out = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                out.add(node.module)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
        return out

    assert "curvechat.server.node" not in imports("handlers.py")
    assert "aetcd" not in imports("cluster.py")


def test_the_check_sees_what_is_loaded() -> None:
    # the same check does catch these modules when they are imported
    loaded = loaded_after("curvechat.crypto", "zmq")
    assert "nacl" in loaded
    assert offending(loaded, SERVER_SIDE_ONLY) == sorted(
        n for n in loaded if n == "zmq" or n.startswith("zmq.")
    )
    assert offending(loaded, SERVER_SIDE_ONLY)
