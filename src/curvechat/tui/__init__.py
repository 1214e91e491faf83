"""The terminal client (Textual): a thin face over `curvechat.client`.

It talks to the engine only (`ChatClient` methods and its events), never to a
socket, and nothing below it may import it: `textual` stays out of the
protocol, crypto, store and client layers.
"""
