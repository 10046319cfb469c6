"""Conversations: which text of a chat the router sees, and sticky model choice per conversation.

Modes (``ServeConfig.conversation``):

- ``last_user`` (default): the last user turn only, as RouteLLM does.
- ``user_turns``: every user turn, oldest first, joined by newlines.
- ``history``: every user and assistant turn as ``role: text`` lines.

Long texts keep their *end* (the most recent turns), cut at ``max_chars``. A conversation id
(header ``x-caproute-conversation-id`` or body ``caproute.conversation_id``) keeps later turns on
the model chosen for the first one, so a chat does not hop between models mid-way.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from caproute.data.text import content_text

MODES = ("last_user", "user_turns", "history")


def message_text(content: Any) -> str:
    """Text of a message's ``content``: a string, or a list of parts (text parts are joined);
    anything else is no text (:func:`caproute.data.text.content_text`)."""
    text = content_text(content)
    return "" if text is None else text


def routing_text(messages: Sequence[dict], mode: str = "last_user", max_chars: int = 4000) -> str:
    """The text the router featurises for a chat (see the module docstring for ``mode``)."""
    if mode not in MODES:
        raise ValueError(f"conversation mode must be one of {MODES}, got '{mode}'")
    if mode == "last_user":
        for msg in reversed(messages):
            if msg.get("role") == "user":
                text = message_text(msg.get("content"))
                break
        else:  # no user turn: fall back to whatever text there is (e.g. a system-only prompt)
            text = "\n".join(message_text(m.get("content")) for m in messages)
    elif mode == "user_turns":
        text = "\n".join(message_text(m.get("content")) for m in messages if m.get("role") == "user")
    else:
        text = "\n".join(
            f"{m.get('role')}: {message_text(m.get('content'))}"
            for m in messages
            if m.get("role") in ("user", "assistant")
        )
    return text[-max_chars:] if len(text) > max_chars else text


class StickyMap:
    """Thread-safe LRU map (conversation id, router) -> model, entries expire after ``ttl_s``."""

    def __init__(
        self, max_entries: int = 100_000, ttl_s: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ):
        self.max_entries, self.ttl_s, self._clock = max_entries, ttl_s, clock
        self._data: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, conversation_id: str, router: str) -> str | None:
        key = (conversation_id, router)
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            model, t = hit
            if self._clock() - t > self.ttl_s:
                del self._data[key]
                return None
            self._data[key] = (model, self._clock())
            self._data.move_to_end(key)
            return model

    def set(self, conversation_id: str, router: str, model: str) -> None:
        key = (conversation_id, router)
        with self._lock:
            self._data[key] = (model, self._clock())
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class SharedStickyMap:
    """The sticky map of several worker processes (``serve --workers N``): one SQLite file that
    every worker reads and writes, so a conversation keeps its model whichever worker the next
    turn lands on. Same contract as :class:`StickyMap` (LRU of ``max_entries``, ``ttl_s``), with
    wall-clock times (shared between processes) and eviction every ``evict_every`` new entries
    (so the map may briefly hold up to ``evict_every`` entries more than ``max_entries``).

    The file is soft state: WAL with ``synchronous=OFF`` (a crash may lose the last entries, never
    corrupt the file; a lost entry only means that conversation is routed afresh). A database that
    stays locked longer than ``busy_timeout_s`` makes that lookup a miss (logged), never a stalled
    request. The connection is opened lazily, in the process that uses it (after the fork).
    """

    def __init__(self, path, max_entries: int = 100_000, ttl_s: float = 3600.0,
                 clock: Callable[[], float] = time.time, evict_every: int = 256, busy_timeout_s: float = 0.5):
        self.path, self.max_entries, self.ttl_s, self._clock = Path(path), max_entries, ttl_s, clock
        self.evict_every, self.busy_timeout_s = max(1, int(evict_every)), busy_timeout_s
        self._lock = threading.Lock()
        self._con = None
        self._pid = None
        self._sets = 0
        self.errors = 0

    def _db(self) -> sqlite3.Connection:
        if self._con is None or self._pid != os.getpid():
            con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                  timeout=self.busy_timeout_s)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=OFF")
            con.execute("CREATE TABLE IF NOT EXISTS sticky (conv TEXT NOT NULL, router TEXT NOT NULL, "
                        "model TEXT NOT NULL, t REAL NOT NULL, PRIMARY KEY (conv, router))")
            con.execute("CREATE INDEX IF NOT EXISTS sticky_t ON sticky (t)")
            self._con, self._pid = con, os.getpid()
        return self._con

    def _guard(self, what: str, fn, default=None):
        try:
            with self._lock:
                return fn(self._db())
        except sqlite3.Error as e:
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                logging.getLogger("caproute.serve").warning(
                    "sticky map %s: %s failed (%s); the conversation is routed afresh (%d errors so far)",
                    self.path, what, e, self.errors)
            return default

    def get(self, conversation_id: str, router: str) -> str | None:
        def run(db):
            row = db.execute("SELECT model, t FROM sticky WHERE conv = ? AND router = ?",
                             (conversation_id, router)).fetchone()
            if row is None:
                return None
            now = self._clock()
            if now - row[1] > self.ttl_s:
                db.execute("DELETE FROM sticky WHERE conv = ? AND router = ?", (conversation_id, router))
                return None
            db.execute("UPDATE sticky SET t = ? WHERE conv = ? AND router = ?", (now, conversation_id, router))
            return row[0]

        return self._guard("lookup", run)

    def set(self, conversation_id: str, router: str, model: str) -> None:
        def run(db):
            now = self._clock()
            db.execute("INSERT OR REPLACE INTO sticky (conv, router, model, t) VALUES (?, ?, ?, ?)",
                       (conversation_id, router, model, now))
            self._sets += 1
            if self._sets % self.evict_every == 0:
                db.execute("DELETE FROM sticky WHERE t < ?", (now - self.ttl_s,))
                n = db.execute("SELECT COUNT(*) FROM sticky").fetchone()[0]
                if n > self.max_entries:
                    db.execute("DELETE FROM sticky WHERE rowid IN (SELECT rowid FROM sticky ORDER BY t LIMIT ?)",
                               (n - self.max_entries,))

        self._guard("update", run)

    def __len__(self) -> int:
        return int(self._guard("count", lambda db: db.execute("SELECT COUNT(*) FROM sticky").fetchone()[0], 0))


def sticky_path(feedback_db) -> str:
    """Where the workers of one server share their sticky map: next to the feedback store."""
    return f"{feedback_db}.sticky"
