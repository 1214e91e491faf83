"""`curvechat --version` says which curvechat it is, and exits 0."""

from __future__ import annotations

import pytest

from curvechat import __version__
from curvechat.cli.main import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"curvechat {__version__}"
