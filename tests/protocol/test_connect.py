"""Connect strings: tcp://HOST:PORT/<40-character z85 key>, comma-separated."""

from __future__ import annotations

import pytest

from curvechat.protocol.connect import (
    MAX_CONNECT_LEN,
    ConnectStringError,
    ServerAddress,
    format_connect,
    parse_connect,
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
    text = format_connect(addrs)
    assert text == ",".join(f"{a.endpoint}/{a.server_key}" for a in addrs)
    assert parse_connect(text) == addrs
    assert str(addrs[1]) == f"tcp://[::1]:7701/{KEY_SLASH_FIRST}"
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
