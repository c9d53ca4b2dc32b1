"""A baseline commit beside the current code, for same-run comparisons (imported by the bench scripts, which run with
``bench/`` on ``sys.path``): a detached ``git worktree`` of the commit in a temporary folder, and the
``beatssl-edge`` command of that commit — its console-script entry read from its own ``pyproject.toml`` and run with
this interpreter from the worktree, so its own packages and engines are imported whatever its layout; and
:func:`terminate`, how the bench scripts stop an edge process they started, current or baseline."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from edge.config import tomllib

ROOT = Path(__file__).resolve().parent.parent


def add_worktree(rev: str) -> Path:
    """Check ``rev`` out (detached) into a new temporary folder; returns the folder."""
    folder = Path(tempfile.mkdtemp(prefix="bench-baseline-")) / rev
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), rev], check=True,
                   capture_output=True)
    return folder


def edge_command(folder: Path) -> list[str]:
    """The ``beatssl-edge`` command of the checkout in ``folder`` (run it with ``cwd=folder``)."""
    scripts = tomllib.loads((folder / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["beatssl-edge"].partition(":")
    code = f"import sys; sys.argv[0] = 'beatssl-edge'; from {module} import {attr} as main; main()"
    return [sys.executable, "-c", code]


def remove_worktree(folder: Path) -> None:
    """Remove a worktree made by :func:`add_worktree` and its temporary folder."""
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], capture_output=True)
    shutil.rmtree(folder.parent, ignore_errors=True)


def terminate(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM (the edge flushes and exits), then SIGKILL if it has not exited within ``timeout_s`` (s)."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
