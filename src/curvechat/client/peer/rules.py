"""The peer rules (N1-N10): the table docs/security.md cites, and the
refusal that names the rule a peer broke. As in
`curvechat.client.trust.rules`, the first rule that fails decides.

This module must never decide anything itself: it only says the rules.
"""

from __future__ import annotations

from typing import Final

from curvechat.client.errors import PeerRefused
from curvechat.client.trust import Rule

PEER_RULES: Final = (
    Rule("N1", "a connecting transport key is the one announced in a record signed by the "
         "identity key our verified log records (and we pinned) for a member of a room we share; "
         "a request is served as the member it names, whose record must announce that key"),
    Rule("N2", "a member's records are kept one per listener, at most 8 (the oldest gives way); "
         "a record replaces the one we hold for its listener only if it is newer, is not one "
         "withdrawn (dialing it kept failing; a goodbye counts as all but the last "
         "failure), and is dated at most 10 minutes ahead of our clock"),
    Rule("N3", "a peer is served only rooms that both it and we are members of, by our "
         "verified log; nothing about other rooms is answered"),
    Rule("N4", "a relayed envelope is for the room of the exchange, one we share with the peer"),
    Rule("N5", "a relayed envelope passes the message rules M1-M5: signed by its sender, a "
         "member since its epoch began, under an epoch key we hold"),
    Rule("N6", "a message already in the server's history or in the pool is not taken again, "
         "nor one of ours (we hold what we still send, and gave up on the rest)"),
    Rule("N7", "an exchange is bounded: a digest lists at most 256 refs, a reply or offer "
         "carries at most 64 envelopes (512 KiB), a room's pool holds at most 1,000 messages "
         "of others, and 1,000 of ours apart; one sender's, in all rooms together, at most 250"),
    Rule("N8", "peer-to-peer messages are provisional: never written to the history; the "
         "server's copy with the same sender and txn id replaces them"),
    Rule("N9", "membership changes and key rotations are never made peer to peer: a message "
         "that needs a new epoch first (by membership, or its key used up by the client's "
         "rotation limits, our messages sealed for peers counted) waits for the server"),
    Rule("N10", "a member's work is bounded in time: 200 requests a second per connection, "
         "20 about one room, 500 of its envelopes verified a second (twice that at once)"),
)  # fmt: skip
RULES: Final = {rule.id: rule for rule in PEER_RULES}


def refuse(rule_id: str, code: str, detail: str) -> PeerRefused:
    return PeerRefused(code, f"{detail}: requires that {RULES[rule_id].says} ({rule_id})", rule_id)
