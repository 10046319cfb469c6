"""Processes by pid (Linux /proc where there is one): exists, its stat fields, zombie or not."""

from __future__ import annotations

import os
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
