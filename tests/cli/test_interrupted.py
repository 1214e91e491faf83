"""A Ctrl-C is one line and exit code 130 wherever it lands, the command's
own imports included (they take a noticeable part of a second before any
command runs)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Start the command as its installed script does, with one Ctrl-C arriving
# while one module of the package is being imported.
SCRIPT = textwrap.dedent(
    """
    import sys

    class CtrlC:
        pressed = False

        def find_spec(self, name, path=None, target=None):
            if name == sys.argv[1] and not self.pressed:
                self.pressed = True
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, CtrlC())
    from curvechat.cli.main import main

    sys.exit(main(sys.argv[2:]))
    """
)


@pytest.mark.parametrize(
    "module",
    ["curvechat.cli.parser", "curvechat.cli.commands", "curvechat.protocol.codec"],
)
def test_a_ctrl_c_during_the_imports_is_one_line(module: str, tmp_path: Path) -> None:
    env = {**os.environ, "CURVECHAT_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, module, "rooms"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == [
        "curvechat: error [interrupted]: stopped (Ctrl-C); what was queued stays queued"
    ]
