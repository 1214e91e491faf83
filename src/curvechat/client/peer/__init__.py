"""Peer-to-peer mode: members of a room keep talking while no server is
reachable (docs/protocol.md "Peer protocol", docs/security.md "Peers").

`core` decides everything (sans-IO); `listener`, `link`, `dialer`, `mdns`
and `shell` are the sockets around it. Importing this package loads none of them.
"""
