"""Processes by pid (Linux /proc where there is one): exists, its stat fields, zombie or not."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def pid_exists(pid: int) -> bool:
    """True while a process with this pid exists (a zombie included; one we may not signal too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the parenthesised name (state, ppid, pgrp, ...), or None
    (no such process, or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def is_zombie(pid: int) -> bool:
    """True when ``pid`` has exited and waits to be reaped (state Z in /proc; False without /proc)."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] == "Z"


def die_with_parent(parent: int | None = None) -> bool:
    """Ask the kernel to send this process SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``;
    elsewhere nothing). Returns False when the parent is already gone (``parent``: its pid, for
    the race before the prctl) or the call is unavailable; safe in a ``preexec_fn`` (no logging)."""
    if not sys.platform.startswith("linux"):
        return True
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        ok = libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) == 0
    except (OSError, AttributeError):
        ok = False
    return ok and (parent is None or os.getppid() == parent)
