"""The text limit is one number of characters, and it is the real one: the
outbox refuses a longer text before queueing (so before sealing), with the
limit in characters and bytes, and every text it accepts seals, even one
made only of 4-byte characters. The docs state the same limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curvechat.client.outbox import check_text
from curvechat.crypto.envelope import Plaintext, open_message, seal_message
from curvechat.crypto.identity import Identity
from curvechat.protocol import limits
from curvechat.protocol.errors import ErrorCode, LocalProtocolError

ROOT = Path(__file__).resolve().parents[2]
KEY = bytes(range(32))
ALICE = Identity.generate("alice")

# one character of each UTF-8 length, and the widest ones there are
WIDTHS = ["a", "é", "日", "😀", "\U0010fffd"]


def seal_and_open(text: str) -> str:
    env = seal_message(
        ALICE, room="notes", epoch=0, key=KEY, txn="t" * 16, plaintext=Plaintext(text, 2**53)
    )
    assert len(env.ct) <= limits.MAX_CIPHERTEXT_BYTES
    return open_message(env, key=KEY, sender_sign_pub=ALICE.sign_pub).text


@pytest.mark.parametrize("char", WIDTHS)
def test_a_text_at_the_limit_seals_whatever_its_characters(char: str) -> None:
    text = char * limits.MAX_TEXT_CHARS
    check_text(text)
    assert seal_and_open(text) == text


@given(
    st.lists(st.sampled_from(WIDTHS), min_size=1, max_size=8),
    st.integers(min_value=1, max_value=limits.MAX_TEXT_CHARS),
)
@settings(max_examples=60, deadline=None)
def test_every_text_that_passes_the_check_seals(chars: list[str], length: int) -> None:
    text = ("".join(chars) * length)[:length]
    check_text(text)
    assert seal_and_open(text) == text


@pytest.mark.parametrize("text", ["😀" * 16_384, "a" * (limits.MAX_TEXT_CHARS + 1)])
def test_a_longer_text_is_refused_before_sealing_with_the_limit(text: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        check_text(text)
    assert info.value.code == ErrorCode.TOO_LARGE
    message = str(info.value)
    assert f"message of {len(text):,} characters" in message
    assert "the limit is 16,000 characters (at most 64,000 bytes in UTF-8)" in message


def test_the_limit_is_stated_the_same_everywhere() -> None:
    assert limits.MAX_TEXT_CHARS == 16_000
    assert limits.MAX_TEXT_BYTES == 64_000
    assert limits.TEXT_LIMIT == "16,000 characters (at most 64,000 bytes in UTF-8)"
    for doc in ("docs/tui.md", "docs/protocol.md", "docs/security.md"):
        text = (ROOT / doc).read_text()
        assert "16,000 characters" in text, doc
        assert "64,000 bytes" in text, doc
        assert "more than 16,384 characters" not in text, doc


def test_older_messages_up_to_16384_characters_still_open() -> None:
    """Clients before this limit sent up to 16,384 characters (if they fit):
    they must stay readable."""
    body = "a" * 16_384
    from curvechat.crypto import envelope

    padded = envelope._pad(envelope.encode(Plaintext(body, 0)))
    assert envelope._plaintext_decoder.decode(envelope._unpad(padded)).text == body
