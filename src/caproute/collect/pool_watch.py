"""Run one local pool server as a child process and record how it ended.

``python -m caproute.collect.pool_watch EXIT_FILE -- CMD ...`` is what ``pool up`` starts for each
model: the server outlives the CLI that started it, so nobody else could ever learn its exit
status. This watcher waits for it, writes ``{"returncode": ..., "signal": ..., "at": ...}`` to
``EXIT_FILE`` (atomically) and a closing line to the server's log, and exits the same way. It
forwards SIGTERM, SIGINT and SIGHUP to the server, so ``pool down`` stops both.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from caproute.core.procs import die_with_parent

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _signal_name(num: int) -> str | None:
    try:
        return signal.Signals(num).name
    except ValueError:
        return None


def describe_exit(returncode: int) -> str:
    """``exited with code 1`` or ``killed by signal SIGSEGV (Segmentation fault)``."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    num = -returncode
    text = signal.strsignal(num) if hasattr(signal, "strsignal") else None
    return f"killed by signal {_signal_name(num) or f'signal {num}'}" + (f" ({text})" if text else "")


def read_exit(path: str | Path) -> dict | None:
    """The record written by the watcher, or None while the server runs (or for servers started
    before watchers existed)."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("returncode"), int) else None


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m caproute.collect.pool_watch EXIT_FILE -- CMD ...", file=sys.stderr)
        return 2
    exit_file, cmd = Path(argv[0]), argv[2:]
    exit_file.unlink(missing_ok=True)
    watcher = os.getpid()

    def bind_to_watcher() -> None:  # in the server, before exec: it ends when the watcher does
        if not die_with_parent(watcher):
            os._exit(70)

    # inherits the log as stdout/stderr, and this process group; a kill -9 of the watcher (the pid
    # `pool status` shows) takes the server with it
    proc = subprocess.Popen(cmd, preexec_fn=bind_to_watcher)

    def forward(signum, _frame) -> None:
        proc.send_signal(signum)

    for s in _FORWARDED:
        signal.signal(s, forward)
    rc = proc.wait()
    what = describe_exit(rc)
    print(f"caproute pool: server {what}", flush=True)
    from caproute.core.atomic import write_json

    write_json({"returncode": rc, "signal": _signal_name(-rc) if rc < 0 else None, "description": what,
                "at": time.time()}, exit_file)
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
