"""Dead letters of the proxy's background writers: a record that cannot be stored is kept, not lost.

The request log and the feedback store write from one background thread each. Such a thread must
survive any exception raised by one record (a value SQLite cannot bind, a text it cannot encode):
the record is appended to a JSONL file next to the store (``<store>.dead-letter.jsonl``, one
``{"time", "writer", "error", "record"}`` object per line, ASCII-escaped so any text fits) and
counted (``caproute_dead_letters{writer}`` in ``/metrics``), and the thread goes on with the next
record. :meth:`DeadLetters.add` never raises. :class:`BackgroundWriter` is what both writers share.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("caproute.serve")

SUFFIX = ".dead-letter.jsonl"


def dead_letter_path(store: str | os.PathLike) -> Path:
    """The dead-letter file of a store file: ``<store>.dead-letter.jsonl`` beside it."""
    p = Path(store)
    return p.with_name(p.name + SUFFIX)


class DeadLetters:
    """Thread-safe appender of records a writer could not store; ``count`` is how many since start."""

    def __init__(self, store: str | os.PathLike, writer: str):
        self.path, self.writer = dead_letter_path(store), writer
        self.count = 0
        self._lock = threading.Lock()

    def add(self, record: Any, error: BaseException) -> None:
        """Keep ``record`` (any value; JSON where possible, else its repr) with the error that stopped it."""
        entry = {"time": time.time(), "writer": self.writer, "error": f"{type(error).__name__}: {error}"[:2000]}
        try:
            line = json.dumps({**entry, "record": record}, default=repr)  # ASCII: lone surrogates escaped
        except (TypeError, ValueError, RecursionError):
            line = json.dumps({**entry, "record": repr(record)})
        with self._lock:
            self.count += 1
            try:
                with open(self.path, "a", encoding="ascii") as f:
                    f.write(line + "\n")
            except OSError as e:
                log.error("%s: a record could not be stored nor kept in %s (%s): %s",
                          self.writer, self.path, e, entry["error"])
                return
        log.error("%s: a record could not be stored (%s); kept in %s", self.writer, entry["error"], self.path)


class BackgroundWriter:
    """A store written by one thread that drains ``_q`` (``None`` stops it), with its dead letters."""

    path: os.PathLike
    _thread: threading.Thread | None
    _q: queue.Queue
    _ready: threading.Event
    _error: BaseException | None
    dead: DeadLetters

    def _start_thread(self, name: str) -> BaseException | None:
        """Start the thread (``self._run``, which sets ``_ready``); the error it met opening the store."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        return self._error

    @property
    def alive(self) -> bool:
        """True while the writer thread runs (exported as ``caproute_writer_alive``)."""
        return self._thread is not None and self._thread.is_alive()

    def _open(self):
        """In the thread: ``self._connect()``, telling ``start()`` how it went; None when it failed."""
        try:
            return self._connect()
        except BaseException as e:  # noqa: BLE001 - surfaced by start()
            self._error = e
            return None
        finally:
            self._ready.set()

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is not None and self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        self._thread = None
