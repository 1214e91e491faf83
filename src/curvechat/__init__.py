"""curvechat: an end-to-end encrypted group chat over CurveZMQ.

Layers (dependencies point down only)::

    cli -> client -> crypto -> protocol
    server -> store -> protocol
"""

__version__ = "0.1.0"
