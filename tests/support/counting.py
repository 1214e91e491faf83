"""Counting the calls of a module's function in a test (monkeypatched)."""

from __future__ import annotations

from typing import Any

import pytest


def count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Replace `module.name` by a wrapper that counts its calls; the count is
    the returned list's only item."""
    real = getattr(module, name)
    calls = [0]

    def counting(*args: Any, **kw: Any) -> Any:
        calls[0] += 1
        return real(*args, **kw)

    monkeypatch.setattr(module, name, counting)
    return calls
