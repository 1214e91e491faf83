"""The client's trust core (sans-IO): verified room state and the rules that
decide what a client accepts from a server. See `core.py` and `rules.py`."""

from curvechat.client.trust.api import Grant, ListingPlan, Opened, Rotate, TrustStore
from curvechat.client.trust.core import TrustCore
from curvechat.client.trust.log import RoomLog
from curvechat.client.trust.rules import ALL_RULES, EpochRecord, Rule

__all__ = [
    "ALL_RULES",
    "EpochRecord",
    "Grant",
    "ListingPlan",
    "Opened",
    "RoomLog",
    "Rotate",
    "Rule",
    "TrustCore",
    "TrustStore",
]
