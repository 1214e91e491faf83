"""Freeing space in a real etcd, through a member's HTTP gateway: delete a
key prefix, and defragment every member (after `EtcdCluster.compact`), as an
operator would with etcdctl."""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any

from support.etcd import EtcdCluster


def _post(url: str, body: dict[str, object], timeout: float = 30) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        result: dict[str, Any] = json.loads(resp.read())
    return result


def _b64(data: bytes | bytearray) -> str:
    return base64.b64encode(data).decode()


def delete_prefix(cluster: EtcdCluster, prefix: bytes) -> int:
    """Delete every key under `prefix`; returns how many were deleted."""
    end = bytearray(prefix)
    end[-1] += 1  # the prefixes used here never end in 0xff
    member = next(m for m in cluster.members if m.alive())
    answer = _post(
        member.client_url + "/v3/kv/deleterange", {"key": _b64(prefix), "range_end": _b64(end)}
    )
    return int(answer.get("deleted", 0))


def defragment(cluster: EtcdCluster) -> None:
    """Defragment every live member, one at a time."""
    for member in cluster.members:
        if member.alive():
            _post(member.client_url + "/v3/maintenance/defragment", {}, timeout=60)
