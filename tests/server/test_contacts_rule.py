"""The contact rule on its own (server/contacts.py): who is refused, and how
a change of a list is made and checked, without a node or a store."""

from __future__ import annotations

import pytest

from curvechat.protocol.limits import MAX_CONTACTS
from curvechat.server.contacts import BadChange, changed, refusal_text, refusing
from curvechat.store import ContactsRecord

ONLY_ALICE = ContactsRecord(only=True, users=("alice",))


@pytest.mark.parametrize(
    ("actor", "targets", "records", "refused"),
    [
        ("carol", ["bob"], {}, []),  # never set: anyone may
        ("carol", ["bob"], {"bob": ContactsRecord(users=("alice",))}, []),  # a list, not only
        ("carol", ["bob"], {"bob": ONLY_ALICE}, ["bob"]),
        ("alice", ["bob"], {"bob": ONLY_ALICE}, []),  # a contact
        ("bob", ["bob"], {"bob": ContactsRecord(only=True)}, []),  # oneself
        ("carol", ["dave", "bob", "bob"], {"bob": ONLY_ALICE, "dave": ONLY_ALICE}, ["bob", "dave"]),
        ("carol", ["bob", "erin"], {"bob": ONLY_ALICE}, ["bob"]),
    ],
)
def test_who_is_refused(
    actor: str, targets: list[str], records: dict[str, ContactsRecord], refused: list[str]
) -> None:
    assert refusing(actor, targets, records) == refused


def test_a_change_adds_removes_and_sets() -> None:
    first = changed("bob", None, only=None, add=["carol", "alice", "alice"], remove=[])
    assert first == ContactsRecord(only=False, users=("alice", "carol"))
    second = changed("bob", first, only=True, add=["dave"], remove=["carol", "zed"])
    assert second == ContactsRecord(only=True, users=("alice", "dave"))
    assert changed("bob", second, only=None, add=[], remove=[]) == second
    assert changed("bob", second, only=False, add=[], remove=[]).only is False


@pytest.mark.parametrize(
    ("add", "remove", "code"),
    [
        (["alice"], ["alice"], "bad_frame"),
        (["bob"], [], "bad_frame"),
    ],
)
def test_a_bad_change_is_refused(add: list[str], remove: list[str], code: str) -> None:
    with pytest.raises(BadChange) as caught:
        changed("bob", None, only=None, add=add, remove=remove)
    assert caught.value.code == code


def test_the_list_is_bounded() -> None:
    full = ContactsRecord(users=tuple(f"u{i:05d}" for i in range(MAX_CONTACTS)))
    assert changed("bob", full, only=True, add=["u00000"], remove=[]).users == full.users
    with pytest.raises(BadChange) as caught:
        changed("bob", full, only=None, add=["zz"], remove=[])
    assert caught.value.code == "too_large"
    # one out, one in: within the bound
    assert len(changed("bob", full, only=None, add=["zz"], remove=["u00001"]).users) == MAX_CONTACTS


def test_the_refusal_names_them_and_the_way_out() -> None:
    text = refusal_text(["bob"], "carol")
    assert text.startswith("bob takes rooms only from their contacts")
    assert "contacts add carol" in text
    many = refusal_text([f"u{i}" for i in range(8)], "carol")
    assert many.startswith("u0, u1, u2, u3, u4 and 3 more take rooms only")
