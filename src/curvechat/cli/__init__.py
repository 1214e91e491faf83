"""The `curvechat` command: thin faces over the server and the client engine."""
