"""EtcdStore on an etcd with TLS, client certificates and authentication
(`etcds://`, `EtcdSecurity`): it works with the right credentials, and with
wrong ones `open` refuses with a `StoreRefused` whose code and message say
what to fix. The etcd is real (support/etcd_tls.py: certificates made here
with openssl, auth enabled, a role confined to ALLOWED_PREFIX)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from aetcd import rpc  # type: ignore[import-untyped]

from curvechat.store import (
    EpochRecord,
    MemberChange,
    NewMessage,
    OpRecord,
    StoreRefused,
    StoreUnavailable,
)
from curvechat.store.etcd import EtcdSecurity, EtcdStore, parse_etcd_url, prefix_end

from support.etcd import EtcdCluster
from support.etcd_tls import ALLOWED_PREFIX, PASSWORDS, TlsEtcd, tls_etcd


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsEtcd]:
    with tls_etcd(tmp_path_factory.mktemp("etcd-tls")) as etcd:
        yield etcd


def security(etcd: TlsEtcd, *, user: str = "", password: str = "", **files: Any) -> EtcdSecurity:
    """The security of `etcd.url` with the node's certificate unless `files`
    say otherwise (ca_file=None leaves the CA out: the system's roots)."""
    pki = etcd.pki
    files = {
        "ca_file": str(pki.ca),
        "cert_file": str(pki.node_cert),
        "key_file": str(pki.node_key),
        **files,
    }
    env = {"CURVECHAT_ETCD_PASSWORD": password} if password else {}
    return EtcdSecurity.load(etcd.url, user=user or None, environ=env, **files)


def make_store(etcd: TlsEtcd, sec: EtcdSecurity, prefix: str = "") -> EtcdStore:
    prefix = prefix or f"{ALLOWED_PREFIX}t-{uuid.uuid4().hex}/"
    return EtcdStore(etcd.endpoints.split(","), prefix=prefix, security=sec, timeout=3.0)


class Refusal(NamedTuple):
    code: str  # StoreRefused's code, or "" for a plain StoreUnavailable
    message: str


async def refusal(store: EtcdStore) -> Refusal:
    """What `open` raises (it must raise, and leave the store closed). Kept
    as text: an exception kept alive would keep its gRPC call, and with it
    the closed channel, reconnecting until the garbage collector runs."""
    try:
        await store.open()
    except StoreUnavailable as exc:
        result = Refusal(exc.code if isinstance(exc, StoreRefused) else "", str(exc))
    else:
        pytest.fail("open did not raise")
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.ping()
    return result


async def round_trip(store: EtcdStore) -> None:
    """A user, a room and two messages written and read back."""
    await store.register("alice", b"s" * 32, b"t" * 32)
    await store.create_room(
        "general",
        [OpRecord(0, b"op", b"sig")],
        [MemberChange("alice", True, True)],
        EpochRecord(0, 0, "alice"),
        [],
    )
    acks = await store.append_messages(
        [NewMessage("general", "alice", f"x{i}", b"env%d" % i) for i in range(2)]
    )
    assert [a.seq for a in acks] == [1, 2]
    rows = await store.messages("general", after=0, limit=10)
    assert [(r.seq, r.envelope) for r in rows] == [(1, b"env0"), (2, b"env1")]
    assert "alice" in await store.users(["alice"])


@pytest.fixture
async def opened(secure: TlsEtcd) -> AsyncIterator[EtcdStore]:
    # The stranger's certificate names no etcd user: only the password's
    # token can give it access (proves the token is what etcd checks).
    sec = security(
        secure,
        user="curvechat",
        password=PASSWORDS["curvechat"],
        cert_file=str(secure.pki.stranger_cert),
        key_file=str(secure.pki.stranger_key),
    )
    store = make_store(secure, sec)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_user_and_password_over_tls(opened: EtcdStore) -> None:
    await round_trip(opened)
    assert opened.login is not None and opened.login.logins == 1
    assert opened.security is not None and "node-secret" not in repr(opened.security)


async def test_streams_and_leases_carry_the_token(opened: EtcdStore) -> None:
    """The cluster layer's calls on the store's stubs (registry lease, watch)
    are made as the logged-in user too: a watch without the token would be
    cancelled ("permission denied"), the certificate naming no user."""
    watch, lease = opened.stubs
    grant = await lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=30), timeout=3)
    await opened.put(opened.k_node("n1"), b"up", lease=int(grant.ID))
    call = watch.Watch()
    try:
        start = opened.message_prefix
        await call.write(
            rpc.WatchRequest(
                create_request=rpc.WatchCreateRequest(key=start, range_end=prefix_end(start))
            )
        )
        created = await asyncio.wait_for(call.read(), 5)
        assert created.created and not created.canceled, created.cancel_reason
        await opened.put(opened.message_prefix + b"x", b"1")
        event = await asyncio.wait_for(call.read(), 5)
        assert [bytes(e.kv.key) for e in event.events] == [opened.message_prefix + b"x"]
    finally:
        call.cancel()
    await lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=grant.ID), timeout=3)
    assert await opened.get_prefix(opened.node_prefix) == []
    assert opened.login is not None and opened.login.logins == 1


async def test_client_certificate_alone_logs_in_as_its_common_name(secure: TlsEtcd) -> None:
    store = make_store(secure, security(secure))  # CN=curvechat, no password
    await store.open()
    try:
        await round_trip(store)
        assert store.login is None
    finally:
        await store.close()
    # a certificate whose common name is no etcd user gets no access
    stranger = security(
        secure, cert_file=str(secure.pki.stranger_cert), key_file=str(secure.pki.stranger_key)
    )
    got = await refusal(make_store(secure, stranger))
    assert got.code == "etcd_permission"
    assert "stranger.pem" in got.message


async def test_wrong_password_is_refused_without_showing_it(secure: TlsEtcd) -> None:
    sec = security(secure, user="curvechat", password="not-the-password")
    got = await refusal(make_store(secure, sec))
    assert got.code == "etcd_auth"
    assert "refused user 'curvechat': wrong user name or password" in got.message
    assert "not-the-password" not in got.message
    # an unknown user reads the same (etcd does not say which was wrong)
    sec = security(secure, user="mallory", password="x")
    got = await refusal(make_store(secure, sec))
    assert got.code == "etcd_auth"


async def test_wrong_ca_is_refused(secure: TlsEtcd) -> None:
    sec = security(secure, ca_file=str(secure.pki.other_ca))
    got = await refusal(make_store(secure, sec))
    assert got.code == "etcd_tls"
    assert "does not verify against" in got.message and "other-ca.pem" in got.message
    # no --etcd-ca: the system's roots do not know the test CA either
    got = await refusal(make_store(secure, security(secure, ca_file=None)))
    assert got.code == "etcd_tls" and "the system's CA certificates" in got.message


async def test_no_client_certificate_is_refused(secure: TlsEtcd) -> None:
    sec = security(secure, cert_file=None, key_file=None, user="curvechat", password="x")
    got = await refusal(make_store(secure, sec))
    assert got.code == "etcd_tls"
    assert "client certificate (no certificate)" in got.message


async def test_plaintext_url_against_tls_etcd_is_refused(secure: TlsEtcd) -> None:
    store = EtcdStore(secure.endpoints.split(","), prefix=f"{ALLOWED_PREFIX}p/", timeout=3.0)
    got = await refusal(store)
    # a refusal, not etcd briefly down: the node's start does not retry it
    assert got.code == "store_unavailable" and "use etcds://" in got.message


async def test_tls_url_against_plaintext_etcd_is_refused(
    secure: TlsEtcd, etcd_for_store: EtcdCluster
) -> None:
    sec = security(secure)
    store = EtcdStore(etcd_for_store.endpoints.split(","), prefix="/p/", security=sec, timeout=3.0)
    got = await refusal(store)
    assert "does it serve plaintext (etcd://)?" in got.message


async def test_keys_outside_the_role_are_refused(secure: TlsEtcd) -> None:
    sec = security(secure, user="curvechat", password=PASSWORDS["curvechat"])
    got = await refusal(make_store(secure, sec, prefix="/elsewhere/"))
    assert got.code == "etcd_permission"
    assert "user 'curvechat' may not read and write the keys under /elsewhere/" in got.message


async def test_logs_in_again_when_etcd_drops_the_token(tmp_path: Path) -> None:
    """etcd forgets a token unused for --auth-token-ttl seconds (a member
    that restarts may have lost it too): the member then answers "invalid
    auth token", and the store logs in again, once, and repeats the call."""
    with tls_etcd(tmp_path, ("--auth-token-ttl", "1")) as etcd:
        sec = security(
            etcd,
            user="curvechat",
            password=PASSWORDS["curvechat"],
            cert_file=str(etcd.pki.stranger_cert),
            key_file=str(etcd.pki.stranger_key),
        )
        store = make_store(etcd, sec)
        await store.open()
        try:
            await store.register("alice", b"s" * 32, b"t" * 32)
            assert store.login is not None and store.login.logins == 1
            await asyncio.sleep(3.5)  # idle past the token's TTL (etcd checks every 1 s)
            await store.register("bob", b"S" * 32, b"T" * 32)
            assert store.login.logins == 2
            assert "alice" in await store.users(["alice"])
            assert store.login.logins == 2  # a token in use stays good
            # a token etcd never issued: the same
            store.login.token = "forged.1"
            await store.ping()
            assert store.login.logins == 3 and store.login.token != "forged.1"
            # and on the calls the cluster layer makes on the store's stubs
            store.login.token = "forged.2"
            _watch, lease = store.stubs
            grant = await lease.LeaseGrant(rpc.LeaseGrantRequest(TTL=30), timeout=3)
            await lease.LeaseRevoke(rpc.LeaseRevokeRequest(ID=grant.ID), timeout=3)
            assert store.login.logins == 4
        finally:
            await store.close()


@pytest.mark.parametrize(
    ("url", "options", "env", "error"),
    [
        ("etcd://h", {"user": "u"}, {"CURVECHAT_ETCD_PASSWORD": "p"}, "needs TLS"),
        ("etcd://h", {"ca_file": "ca.pem"}, {}, "need an etcds:// URL"),
        ("etcds://h", {"cert_file": "c.pem"}, {}, "go together"),
        ("etcds://h", {"user": "u"}, {}, "--etcd-user needs a password"),
        ("etcds://h", {}, {"CURVECHAT_ETCD_PASSWORD": "p"}, "needs --etcd-user"),
        ("etcds://h", {"ca_file": "/nonexistent/ca.pem"}, {}, "--etcd-ca: cannot read"),
        ("etcds://h", {"password_file": "/nonexistent/pw", "user": "u"}, {}, "cannot read"),
    ],
)
def test_security_options_are_checked(
    url: str, options: dict[str, str], env: dict[str, str], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        EtcdSecurity.load(url, environ=env, **options)


def test_password_file_and_url(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\r\n# only the first line counts\n")
    sec = EtcdSecurity.load("etcds://h", user="u", password_file=str(pw), environ={})
    assert (sec.tls, sec.user, sec.password) == (True, "u", "s3cret")
    assert "s3cret" not in repr(sec)
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("hello")
    with pytest.raises(ValueError, match="not a PEM file"):
        EtcdSecurity.load("etcds://h", ca_file=str(not_pem), environ={})
    assert parse_etcd_url("etcds://a:1,b/tls/x") == (["a:1", "b:2379"], "/tls/x/")
