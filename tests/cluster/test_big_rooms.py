"""Membership changes are one etcd transaction each: a room too big for
etcd's --max-txn-ops is refused whole with `too_large` (never half written),
and an operator who raises the limit on etcd and on the node gets it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from curvechat.client.errors import ServerRefused

from support.clients import ClientFactory
from support.etcd import etcd_cluster
from support.servers import ServerProcess

MEMBERS = 40  # 4 operations each at creation: 163 > 128, etcd's default


async def test_room_larger_than_a_transaction(tmp_path: Path, clients: ClientFactory) -> None:
    with etcd_cluster(tmp_path / "etcd", size=1, extra_args=("--max-txn-ops", "1024")) as etcd:
        url = f"{etcd.url}/t-{uuid.uuid4().hex}"
        default = ServerProcess(tmp_path / "default", extra_args=("--store", url)).start()
        raised = ServerProcess(
            tmp_path / "raised", extra_args=("--store", url, "--etcd-max-txn-ops", "1024")
        ).start()
        try:
            users = [f"m{i:02d}" for i in range(MEMBERS)]
            for user in users:
                await clients.make(user, raised.connect)
            owner, _ = await clients.make("owner", default.connect)
            with pytest.raises(ServerRefused) as refused:
                await owner.create_room("big", users)
            assert refused.value.code == "too_large"
            assert "--max-txn-ops" in refused.value.message

            owner2, _ = await clients.make("owner", raised.connect, home_name="owner-2")
            await owner2.create_room("big", users)
            assert len(owner2.members("big")) == MEMBERS + 1
            await owner2.remove("big", users[0])  # a rotation: a packet per member left
            ack = await owner2.send("big", "forty members")
            assert ack.seq == 1
        finally:
            codes = (default.stop(), raised.stop())
    assert codes == (0, 0)
