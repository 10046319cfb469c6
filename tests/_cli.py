"""The caproute command line in a subprocess, for tests (``python -m caproute``)."""

from __future__ import annotations

import subprocess
import sys

CLI = [sys.executable, "-m", "caproute"]


def run_cli(*args, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """``caproute ARGS...``; with ``check`` a failure raises with the command's output."""
    res = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"caproute {' '.join(map(str, args))} failed:\n{res.stdout}\n{res.stderr}")
    return res
