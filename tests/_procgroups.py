"""Stopping the process groups a test started (servers, daemons), without waiting on zombies.

A process whose parent died is re-parented to init and stays a zombie until init reaps it; a
container's init may do that late, and a zombie still answers ``kill(pid, 0)``. So "is the group
gone" is asked of /proc: the group is gone when none of its members is still running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from caproute.core.procs import proc_stat


def live_members(pgid: int) -> list[int]:
    """Pids of process group ``pgid`` that have not exited (zombies excluded); [] without /proc."""
    live = []
    for d in Path("/proc").glob("[0-9]*"):
        fields = proc_stat(int(d.name))                  # state, ppid, pgrp, ...
        if fields is not None and len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(d.name))
    return live


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return not live_members(pgid)


def stop_group(pgid: int, grace_s: float = 20.0, poll_s: float = 0.3) -> None:
    """SIGTERM a process group this test started, SIGKILL what is left after ``grace_s``."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if group_gone(pgid):
            return
        time.sleep(poll_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
