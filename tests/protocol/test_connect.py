"""Connect strings: curvechat://HOST:PORT/<base32 or hex key>, and the older
tcp://HOST:PORT/<40-character z85 key>, comma-separated."""

from __future__ import annotations

import base64
import shlex
import string
import subprocess
import urllib.parse

import nacl.encoding
import nacl.hash
import pytest
import zmq.utils.z85
from hypothesis import given
from hypothesis import strategies as st

from curvechat.protocol.connect import (
    MAX_CONNECT_LEN,
    ConnectStringError,
    ServerAddress,
    format_connect,
    parse_connect,
    server_fingerprint,
    z85_decode,
    z85_encode,
)

Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
KEY_A = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # the CurveZMQ example server key
KEY_B = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
KEY_SLASHES = "/" * 40
KEY_SLASH_FIRST = "/" + "a" * 39
KEY_SLASH_LAST = "a" * 39 + "/"


def test_keys_are_z85() -> None:
    for key in (KEY_A, KEY_B, KEY_SLASHES, KEY_SLASH_FIRST, KEY_SLASH_LAST):
        assert len(key) == 40 and set(key) <= set(Z85)


def test_one_node() -> None:
    assert parse_connect(f"tcp://127.0.0.1:7700/{KEY_A}") == [
        ServerAddress("tcp://127.0.0.1:7700", KEY_A)
    ]


def test_several_nodes_keep_their_order() -> None:
    text = (
        f"tcp://10.0.0.2:7700/{KEY_B},tcp://10.0.0.1:7701/{KEY_A},tcp://chat.example.org:1/{KEY_A}"
    )
    assert parse_connect(text) == [
        ServerAddress("tcp://10.0.0.2:7700", KEY_B),
        ServerAddress("tcp://10.0.0.1:7701", KEY_A),
        ServerAddress("tcp://chat.example.org:1", KEY_A),
    ]


@pytest.mark.parametrize("key", [KEY_A, KEY_SLASHES, KEY_SLASH_FIRST, KEY_SLASH_LAST])
def test_keys_containing_a_slash(key: str) -> None:
    (addr,) = parse_connect(f"tcp://localhost:7700/{key}")
    assert addr == ServerAddress("tcp://localhost:7700", key)
    (addr,) = parse_connect(f"tcp://[::1]:7700/{key},tcp://localhost:7700/{key}")[:1]
    assert addr.server_key == key and addr.endpoint == "tcp://[::1]:7700"


@pytest.mark.parametrize("host", ["[::1]", "[fe80::1:2]", "[2001:db8::7]", "[::ffff:10.0.0.1]"])
def test_ipv6_hosts(host: str) -> None:
    (addr,) = parse_connect(f"tcp://{host}:7700/{KEY_A}")
    assert addr == ServerAddress(f"tcp://{host}:7700", KEY_A)


@pytest.mark.parametrize("port", [1, 80, 7700, 65535])
def test_ports(port: int) -> None:
    (addr,) = parse_connect(f"tcp://h:{port}/{KEY_A}")
    assert addr.endpoint == f"tcp://h:{port}"


def test_whitespace_around_the_string_and_the_items() -> None:
    text = f"  \n tcp://a:1/{KEY_A} ,\t tcp://b:2/{KEY_B}\n\n"
    assert parse_connect(text) == [
        ServerAddress("tcp://a:1", KEY_A),
        ServerAddress("tcp://b:2", KEY_B),
    ]


def test_duplicates_are_removed_keeping_the_first() -> None:
    a, b = f"tcp://a:1/{KEY_A}", f"tcp://b:2/{KEY_B}"
    assert parse_connect(f"{a},{b},{a}, {b} ,{a}") == [
        ServerAddress("tcp://a:1", KEY_A),
        ServerAddress("tcp://b:2", KEY_B),
    ]
    # same endpoint, other key (or same key, other endpoint): not duplicates
    assert len(parse_connect(f"{a},tcp://a:1/{KEY_B},tcp://a:2/{KEY_A}")) == 3


def test_format_connect_round_trip() -> None:
    addrs = [
        ServerAddress("tcp://127.0.0.1:7700", KEY_A),
        ServerAddress("tcp://[::1]:7701", KEY_SLASH_FIRST),
        ServerAddress("tcp://chat.example.org:9", KEY_B),
    ]
    legacy = format_connect(addrs, legacy=True)
    assert legacy == ",".join(f"{a.endpoint}/{a.server_key}" for a in addrs)
    assert parse_connect(legacy) == addrs
    assert addrs[1].legacy == f"tcp://[::1]:7701/{KEY_SLASH_FIRST}"
    assert format_connect(parse_connect(legacy), legacy=True) == legacy
    text = format_connect(addrs)
    assert text == ",".join(str(a) for a in addrs)
    assert parse_connect(text) == addrs
    assert format_connect(parse_connect(text)) == text
    assert format_connect([]) == ""


def _of_length(n: int) -> str:
    host = "h" * (n - len(f"tcp://:1/{KEY_A}"))
    return f"tcp://{host}:1/{KEY_A}"


def test_the_longest_string_is_accepted() -> None:
    text = _of_length(MAX_CONNECT_LEN)
    assert len(text) == MAX_CONNECT_LEN
    assert parse_connect(text)[0].server_key == KEY_A
    # surrounding whitespace does not count
    assert parse_connect(f"  {text}\n") == parse_connect(text)
    with pytest.raises(ConnectStringError):
        parse_connect(_of_length(MAX_CONNECT_LEN + 1))


GOOD = f"tcp://127.0.0.1:7700/{KEY_A}"
MALFORMED = {
    "empty": "",
    "blank": " \n\t ",
    "too-long": ",".join([GOOD] * (MAX_CONNECT_LEN // len(GOOD) + 1)),
    "empty-item": f"{GOOD},,{GOOD}",
    "trailing-comma": f"{GOOD},",
    "leading-comma": f",{GOOD}",
    "no-key": "tcp://127.0.0.1:7700",
    "no-key-slash": "tcp://127.0.0.1:7700/",
    "key-39": f"tcp://127.0.0.1:7700/{KEY_A[:39]}",
    "key-41": f"tcp://127.0.0.1:7700/{KEY_A}x",
    "key-bad-char-space": "tcp://127.0.0.1:7700/" + KEY_A[:20] + " " + KEY_A[21:],
    "key-bad-char-tilde": "tcp://127.0.0.1:7700/" + "~" * 40,
    "key-bad-char-quote": "tcp://127.0.0.1:7700/" + '"' + KEY_A[1:],
    "key-bad-char-comma-like": "tcp://127.0.0.1:7700/" + ";" + KEY_A[1:],
    "key-non-ascii": "tcp://127.0.0.1:7700/" + "é" + KEY_A[1:],
    "no-slash-before-key": f"tcp://127.0.0.1:7700{KEY_A}",
    "udp": f"udp://127.0.0.1:7700/{KEY_A}",
    "ipc": f"ipc:///tmp/sock/{KEY_A}",
    "no-scheme": f"127.0.0.1:7700/{KEY_A}",
    "uppercase-scheme": f"TCP://127.0.0.1:7700/{KEY_A}",
    "no-port": f"tcp://127.0.0.1/{KEY_A}",
    "empty-port": f"tcp://127.0.0.1:/{KEY_A}",
    "port-0": f"tcp://127.0.0.1:0/{KEY_A}",
    "port-65536": f"tcp://127.0.0.1:65536/{KEY_A}",
    "port-6-digits": f"tcp://127.0.0.1:123456/{KEY_A}",
    "port-not-a-number": f"tcp://127.0.0.1:http/{KEY_A}",
    "port-wildcard": f"tcp://127.0.0.1:*/{KEY_A}",
    "empty-host": f"tcp://:7700/{KEY_A}",
    "host-underscore": f"tcp://my_host:7700/{KEY_A}",
    "host-wildcard": f"tcp://*:7700/{KEY_A}",
    "ipv6-unbracketed": f"tcp://::1:7700/{KEY_A}",
    "ipv6-unclosed": f"tcp://[::1:7700/{KEY_A}",
    "userinfo": f"tcp://user@host:7700/{KEY_A}",
    "path": f"tcp://host:7700/path/{KEY_A}",
    "space-in-endpoint": f"tcp://host :7700/{KEY_A}",
    "second-item-bad": f"{GOOD},tcp://host:7700",
    "two-keys": f"tcp://host:7700/{KEY_A}/{KEY_B}",
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_is_refused(text: str) -> None:
    with pytest.raises(ConnectStringError) as info:
        parse_connect(text)
    assert str(info.value)
    assert isinstance(info.value, ValueError)


def test_the_error_names_the_bad_item() -> None:
    with pytest.raises(ConnectStringError, match="item 2"):
        parse_connect(f"{GOOD},tcp://host:0/{KEY_A}")
    with pytest.raises(ConnectStringError, match="item 3"):
        parse_connect(f"{GOOD},{GOOD},tcp://host:7700/{'~' * 40}")


# --- the form a person can paste (issue 16) ------------------------------------------
KEY_A_BYTES = zmq.utils.z85.decode(KEY_A)
KEY_A_B32 = base64.b32encode(KEY_A_BYTES).decode().rstrip("=").lower()
KEY_A_HEX = KEY_A_BYTES.hex()
PASTE_SAFE = set(string.ascii_lowercase + string.digits + ".:/-,")


def test_str_is_the_pasteable_form() -> None:
    addr = ServerAddress("tcp://127.0.0.1:7700", KEY_A)
    assert str(addr) == f"curvechat://127.0.0.1:7700/{KEY_A_B32}"
    assert len(KEY_A_B32) == 52
    assert addr.key == KEY_A_BYTES


@pytest.mark.parametrize(
    "key", [KEY_A_B32, KEY_A_B32.upper(), KEY_A_HEX, KEY_A_HEX.upper()], ids=str.__len__
)
def test_the_new_form_parses_with_base32_or_hex(key: str) -> None:
    assert parse_connect(f"curvechat://127.0.0.1:7700/{key}") == [
        ServerAddress("tcp://127.0.0.1:7700", KEY_A)
    ]


def test_old_and_new_forms_mix_and_repeats_across_forms_are_dropped() -> None:
    text = (
        f"curvechat://a:1/{KEY_A_B32},tcp://a:1/{KEY_A},curvechat://a:1/{KEY_A_HEX},"
        f"curvechat://[::1]:2/{KEY_A_B32},tcp://b:3/{KEY_B}"
    )
    assert parse_connect(text) == [
        ServerAddress("tcp://a:1", KEY_A),
        ServerAddress("tcp://[::1]:2", KEY_A),
        ServerAddress("tcp://b:3", KEY_B),
    ]


@pytest.mark.parametrize("key", [KEY_A, KEY_B, KEY_SLASHES, KEY_SLASH_FIRST, "0" * 40])
def test_the_new_form_survives_shells_urls_and_chat_unquoted(key: str) -> None:
    addrs = [
        ServerAddress("tcp://chat.example.org:7700", key),
        ServerAddress("tcp://10.0.0.2:1", key),
    ]
    text = format_connect(addrs)
    assert set(text) <= PASTE_SAFE
    assert shlex.quote(text) == text  # nothing a shell would expand or split
    assert shlex.split(f"curvechat rooms --server {text}")[-1] == text
    assert urllib.parse.quote(text, safe=":/,") == text  # nothing a URL must escape
    assert parse_connect(text) == addrs


def test_a_shell_passes_it_through_unquoted_and_in_double_quotes() -> None:
    text = str(ServerAddress("tcp://127.0.0.1:7700", KEY_B))  # z85 of KEY_B has $ < [ { * …
    for script in (f"printf %s {text}", f'printf %s "{text}"'):
        out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
        assert out.stdout == text


@given(st.binary(min_size=32, max_size=32))
def test_z85_is_zeromq_z85(key: bytes) -> None:
    z85 = zmq.utils.z85.encode(key).decode()
    assert z85_encode(key) == z85
    assert z85_decode(z85) == key
    addr = ServerAddress("tcp://h:1", z85)
    assert parse_connect(str(addr)) == [addr]
    assert parse_connect(f"curvechat://h:1/{key.hex()}") == [addr]


NEW_MALFORMED = {
    "b32-51": f"curvechat://h:1/{KEY_A_B32[:51]}",
    "b32-53": f"curvechat://h:1/{KEY_A_B32}a",
    "b32-not-canonical": f"curvechat://h:1/{KEY_A_B32[:51]}b",
    "b32-mixed-case": f"curvechat://h:1/{KEY_A_B32[:10].upper()}{KEY_A_B32[10:]}",
    "b32-padding": f"curvechat://h:1/{KEY_A_B32}====",
    "b32-bad-char": f"curvechat://h:1/{KEY_A_B32[:51]}1",
    "hex-63": f"curvechat://h:1/{KEY_A_HEX[:63]}",
    "hex-65": f"curvechat://h:1/{KEY_A_HEX}0",
    "z85-key": f"curvechat://h:1/{KEY_A}",
    "no-key": "curvechat://h:1",
    "empty-key": "curvechat://h:1/",
    "no-port": f"curvechat://h/{KEY_A_B32}",
    "port-0": f"curvechat://h:0/{KEY_A_B32}",
    "empty-host": f"curvechat://:1/{KEY_A_B32}",
    "path": f"curvechat://h:1/x/{KEY_A_B32}",
    "trailing-slash": f"curvechat://h:1/{KEY_A_B32}/",
    "uppercase-scheme": f"CURVECHAT://h:1/{KEY_A_B32}",
    "tcp-with-b32": f"tcp://h:1/{KEY_A_B32}",
    "z85-group-too-big": "tcp://h:1/" + "#" * 40,
    "second-item-bad": f"curvechat://h:1/{KEY_A_B32},curvechat://h:2/{KEY_A_B32[:-1]}",
}


@pytest.mark.parametrize("text", NEW_MALFORMED.values(), ids=NEW_MALFORMED.keys())
def test_malformed_new_form_is_refused(text: str) -> None:
    with pytest.raises(ConnectStringError) as info:
        parse_connect(text)
    assert "item " in str(info.value)


def test_the_server_fingerprint_is_digits_to_read_out() -> None:
    fpr = server_fingerprint(KEY_A_BYTES)
    groups = fpr.split(" ")
    assert len(groups) == 6 and all(len(g) == 5 and g.isdigit() for g in groups)
    assert ServerAddress("tcp://h:1", KEY_A).fingerprint == fpr
    assert server_fingerprint(zmq.utils.z85.decode(KEY_B)) != fpr
    # the same personalised BLAKE2b as libsodium's (the crypto package's hash)
    digest = nacl.hash.blake2b(
        KEY_A_BYTES, digest_size=32, person=b"curvechat-srv-v1", encoder=nacl.encoding.RawEncoder
    )
    assert groups[0] == f"{int.from_bytes(digest[:5], 'big') % 100_000:05d}"
    with pytest.raises(ValueError):
        server_fingerprint(KEY_A_BYTES[:31])


def test_a_bad_key_names_every_form_taken() -> None:
    """The README accepts the older `tcp://HOST:PORT/<z85 key>` too: a key
    that is none of the forms says so, not only the two new spellings."""
    with pytest.raises(ConnectStringError) as info:
        parse_connect(f"curvechat://h:1/{KEY_A_B32[:-1]}")
    assert "base32" in str(info.value) and "hex" in str(info.value)
    assert "z85" in str(info.value) and "tcp://HOST:PORT/" in str(info.value)
