"""The operators' view of the service: an in-memory event log of network
failures, a sampler that keeps an hour of metric history per node, and the
web dashboard (HTML/JS/CSS served by the node itself, graphs drawn by our own
SVG code) with its JSON API.

It reads a node only through `NodeProbe`: it must never import the server,
the store or the client, and it never sees message contents.
"""
