"""Peer records on the local network by mDNS/DNS-SD (the `zeroconf`
package): our signed record is published as the TXT data of a
`_curvechat._tcp` service, and the records of others are read as they
appear and handed to a callback (the shell, which has the core judge them).

A record is split over TXT values of at most 200 bytes ("r0", "r1", …) with
its signature in "s". Anything that does not reassemble is dropped. At most
`MAX_READS` services are read at once, each once at a time: anyone on the
network can announce services by the thousand, and each read waits up to
3 s for an answer. A service announced while the reads are full waits its
turn, in order (zeroconf tells of a service once, not again while it stays
the same); at most `MAX_WAITING` wait, and one announced beyond that is
left out (counted in `dropped`). A service that changes while it is read
is read once more. A service that goes away (its client closed: zeroconf
unregisters it) is told with the record last read from it. Each listener
has a service name of its own (its user and a hash of its key and
endpoints), so that two clients of one user, in one home or two, are both
announced. This module must never decide whether a record is believed:
everyone on the network can publish anything here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
from collections.abc import Callable
from typing import Final

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from curvechat.protocol import messages as m
from curvechat.protocol import peer as p

log = logging.getLogger("curvechat.peer")

SERVICE: Final = "_curvechat._tcp.local."
CHUNK: Final = 200
MAX_READS: Final = 16
"""Services read at once."""
MAX_WAITING: Final = 1024
"""Services waiting to be read."""
MAX_FOUND: Final = 1024
"""Services whose record is remembered, to tell which went away."""


def to_txt(signed: m.SignedRecord) -> dict[bytes, bytes]:
    parts = [signed.record[i : i + CHUNK] for i in range(0, len(signed.record), CHUNK)]
    return {b"s": signed.sig, **{f"r{i}".encode(): part for i, part in enumerate(parts)}}


def from_txt(props: dict[bytes, bytes | None]) -> m.SignedRecord | None:
    """The record in a service's TXT data, or None if there is none."""
    chunks = []
    for i in range(4):
        part = props.get(f"r{i}".encode())
        if part is None:
            break
        chunks.append(part)
    sig = props.get(b"s")
    record = b"".join(chunks)
    if not chunks or sig is None or len(sig) != 64 or len(record) > p.MAX_RECORD_BYTES:
        return None
    return m.SignedRecord(record=record, sig=sig)


class MdnsPeers:
    def __init__(
        self,
        me: str,
        on_record: Callable[[m.SignedRecord], object],
        *,
        on_removed: Callable[[m.SignedRecord], object] = lambda signed: None,
        interfaces: list[str] | None = None,
    ) -> None:
        self.me = me
        self.on_record = on_record
        self.on_removed = on_removed
        self.interfaces = interfaces
        self.seen = 0
        self.dropped = 0
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._reads: dict[str, asyncio.Task[None]] = {}  # service name -> its read
        self._waiting: dict[str, str] = {}  # service name -> type, in the order announced
        self._again: dict[str, str] = {}  # changed while being read: read once more
        self._found: dict[str, m.SignedRecord] = {}  # service name -> the record last read

    async def start(self, own: m.SignedRecord | None) -> None:
        if self.interfaces:
            self._zc = AsyncZeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        else:
            self._zc = AsyncZeroconf(ip_version=IPVersion.V4Only)
        if own is not None:
            record = p.decode_record(own.record)
            host, _, port = record.endpoints[0].removeprefix("tcp://").rpartition(":")
            name = f"{self.me}-{service_tag(record)}"
            self._info = AsyncServiceInfo(
                SERVICE,
                f"{name}.{SERVICE}",
                addresses=[socket.inet_aton(host)] if _ipv4(host) else [],
                port=int(port),
                properties=to_txt(own),
                server=f"{name}.local.",
            )
            await self._zc.async_register_service(self._info)
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, [SERVICE], handlers=[self._changed])

    def _changed(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            self._removed(name)
            return
        if state_change not in (ServiceStateChange.Added, ServiceStateChange.Updated):
            return
        if name in self._reads:
            self._again[name] = service_type  # the read may have had the old data
            return
        if name in self._waiting:
            return  # what it says now comes with its read
        if len(self._reads) < MAX_READS:
            self._start(service_type, name)
        elif len(self._waiting) < MAX_WAITING:
            self._waiting[name] = service_type
        else:
            self.dropped += 1

    def _removed(self, name: str) -> None:
        self._waiting.pop(name, None)
        self._again.pop(name, None)
        reading = self._reads.get(name)
        if reading is not None:
            reading.cancel()  # what it would read is gone
        signed = self._found.pop(name, None)
        if signed is not None:
            self.on_removed(signed)

    def _start(self, service_type: str, name: str) -> None:
        task = asyncio.ensure_future(self._read(service_type, name))
        self._reads[name] = task
        task.add_done_callback(lambda t: self._done(name, t))

    def _done(self, name: str, task: asyncio.Task[None]) -> None:
        self._reads.pop(name, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("reading mDNS service %s failed", name, exc_info=task.exception())
        if self._zc is None:
            return
        if name in self._again:
            # Read again, but behind those that waited before: a service that
            # changes at every read must not keep the others from being read.
            # (Past MAX_WAITING too: at most MAX_READS more, and none lost.)
            self._waiting[name] = self._again.pop(name)
        if self._waiting:
            waiting = next(iter(self._waiting))
            self._start(self._waiting.pop(waiting), waiting)

    async def _read(self, service_type: str, name: str) -> None:
        if self._zc is None:
            return
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self._zc.zeroconf, 3000):
            return
        signed = from_txt(dict(info.properties))
        if signed is not None:
            self._took(name, signed)

    def _took(self, name: str, signed: m.SignedRecord) -> None:
        """`signed` read from the service `name`."""
        self.seen += 1
        self._found.pop(name, None)
        self._found[name] = signed
        if len(self._found) > MAX_FOUND:
            del self._found[next(iter(self._found))]
        self.on_record(signed)

    async def close(self) -> None:
        self._waiting.clear()
        self._again.clear()
        self._found.clear()
        for task in list(self._reads.values()):
            task.cancel()
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
        if self._zc is not None:
            if self._info is not None:
                # The goodbyes tell the others we closed (they withdraw our
                # record once dialing it fails): sent before zeroconf stops,
                # a second at most.
                with contextlib.suppress(Exception):
                    goodbyes = await self._zc.async_unregister_service(self._info)
                    async with asyncio.timeout(1.0):
                        await goodbyes
            await self._zc.async_close()
            self._zc = None


def service_tag(record: p.PeerRecord) -> str:
    """What tells a listener's service from another of the same user."""
    listener = record.transport_pub + "\n".join(record.endpoints).encode()
    return hashlib.sha256(listener).hexdigest()[:12]


def _ipv4(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True
