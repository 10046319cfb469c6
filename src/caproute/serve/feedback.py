"""Durable store of served responses and the feedback tied to them (SQLite, WAL, fsync per commit).

Every chat completion, ``/v1/route`` decision and duel answer is registered under its response id;
``/v1/feedback`` may only refer to registered ids. One writer thread owns the connection and
commits in groups (everything queued when it wakes goes into one transaction), so many concurrent
requests cost one fsync, not one each:

- responses are queued and not awaited (the request path does not wait for the disk);
- feedback is acknowledged only after its transaction committed with ``synchronous=FULL``, i.e.
  after the WAL was fsync'd: a 200 from ``/v1/feedback`` survives a crash or power loss.

The queue is FIFO and a client learns a response id only after it was queued, so feedback can
never overtake the registration of the response it refers to.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("caproute.serve")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS responses (
    response_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    kind TEXT NOT NULL,              -- chat | route | duel | direct
    router TEXT,
    model TEXT,
    conversation_id TEXT,
    policy_version TEXT,
    lam REAL,
    beta REAL,
    duel_id TEXT,
    duel_arm INTEGER,                -- 0 or 1 for duel answers
    routing_text TEXT,               -- kept only for duels (the online policy learns from it)
    decision TEXT                    -- JSON
);
CREATE INDEX IF NOT EXISTS responses_duel ON responses(duel_id);
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    kind TEXT NOT NULL,              -- scalar | pairwise
    response_id TEXT NOT NULL REFERENCES responses(response_id),
    other_response_id TEXT REFERENCES responses(response_id),
    score REAL,                      -- scalar: in [0, 1]
    tie INTEGER NOT NULL DEFAULT 0,  -- pairwise: response_id is the winner, other the loser, unless tie
    comment TEXT
);
CREATE INDEX IF NOT EXISTS feedback_response ON feedback(response_id);
"""

RESPONSE_FIELDS = (
    "response_id",
    "created",
    "kind",
    "router",
    "model",
    "conversation_id",
    "policy_version",
    "lam",
    "beta",
    "duel_id",
    "duel_arm",
    "routing_text",
    "decision",
)


class InvalidFeedback(ValueError):
    """Feedback that names existing responses but cannot be meant (a response compared with itself)."""


class UnknownResponse(LookupError):
    """Feedback names a response id the store has never seen."""

    def __init__(self, response_id: str, field: str):
        super().__init__(f"{field}: unknown response id '{response_id}'")
        self.response_id, self.field = response_id, field


@dataclass(frozen=True)
class Feedback:
    kind: str  # scalar | pairwise
    response_id: str  # scalar: the rated response; pairwise: the winner (or first, if tie)
    other_response_id: str | None = None
    score: float | None = None
    tie: bool = False
    comment: str | None = None


@dataclass(frozen=True)
class StoredFeedback:
    feedback_id: str
    feedback: Feedback
    responses: tuple[dict[str, Any], ...]  # the referenced response rows (one or two)


class FeedbackStore:
    """Thread-safe; ``start()`` opens the file and the writer thread, ``close()`` flushes and stops."""

    def __init__(self, path: str | Path, max_batch: int = 512):
        self.path = Path(path)
        self.max_batch = max_batch
        self._q: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.commits = 0

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> FeedbackStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="caproute-feedback-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        self._thread = None

    def __enter__(self) -> FeedbackStore:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- API ----------------------------------------------------------------------------------------
    def register(self, record: dict[str, Any]) -> None:
        """Queue a served response (not awaited). ``record`` keys: see ``RESPONSE_FIELDS``."""
        row = {k: record.get(k) for k in RESPONSE_FIELDS}
        row["created"] = row["created"] or time.time()
        if isinstance(row["decision"], dict | list):
            row["decision"] = json.dumps(row["decision"])
        self._put(("register", row, None))

    def add(self, feedback: Feedback) -> Future:
        """Queue feedback; the future resolves to :class:`StoredFeedback` once fsync'd, or raises
        :class:`UnknownResponse`."""
        fut: Future = Future()
        self._put(("feedback", feedback, fut))
        return fut

    def query(self, sql: str, params: tuple = ()) -> Future:
        """Run a read query on the writer's connection, after everything queued before it."""
        fut: Future = Future()
        self._put(("query", (sql, params), fut))
        return fut

    def _put(self, job) -> None:
        if self._thread is None:
            raise RuntimeError("FeedbackStore is not started")
        self._q.put(job)

    # -- writer thread --------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
        con.execute("PRAGMA foreign_keys=ON")
        con.executescript(SCHEMA)
        row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise RuntimeError(
                f"{self.path}: feedback schema version {row[0]}, this caproute writes {SCHEMA_VERSION}"
            )
        con.row_factory = sqlite3.Row
        return con

    def _run(self) -> None:
        try:
            con = self._connect()
        except BaseException as e:  # surfaced by start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        stop = False
        while not stop:
            jobs = [self._q.get()]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if None in jobs:
                stop = True
                jobs = [j for j in jobs if j is not None]
            if jobs:
                self._batch(con, jobs)
        con.close()

    def _batch(self, con: sqlite3.Connection, jobs: list) -> None:
        results: list[tuple[Future, Any, bool]] = []
        insert = (
            f"INSERT OR REPLACE INTO responses ({', '.join(RESPONSE_FIELDS)}) "
            f"VALUES ({', '.join('?' * len(RESPONSE_FIELDS))})"
        )
        rows: list[tuple] = []
        try:
            con.execute("BEGIN IMMEDIATE")
            for kind, payload, fut in jobs:
                if kind == "register":
                    rows.append(tuple(payload[k] for k in RESPONSE_FIELDS))
                    continue
                if rows:  # keep queue order: registrations before the feedback that follows them
                    con.executemany(insert, rows)
                    rows = []
                try:
                    if kind == "feedback":
                        results.append((fut, self._insert_feedback(con, payload), True))
                    else:
                        sql, params = payload
                        results.append((fut, [dict(r) for r in con.execute(sql, params).fetchall()], True))
                except (UnknownResponse, InvalidFeedback, sqlite3.Error) as e:
                    results.append((fut, e, False))
            if rows:
                con.executemany(insert, rows)
            con.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as e:
            log.error("feedback store: commit failed (%d jobs lost): %s", len(jobs), e)
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            for _kind, _, fut in jobs:
                if fut is not None and not fut.done():
                    fut.set_exception(e)
            return
        for fut, value, ok in results:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    @staticmethod
    def _insert_feedback(con: sqlite3.Connection, fb: Feedback) -> StoredFeedback:
        rows = []
        for field, rid in (("response_id", fb.response_id), ("other_response_id", fb.other_response_id)):
            if rid is None:
                continue
            row = con.execute("SELECT * FROM responses WHERE response_id = ?", (rid,)).fetchone()
            if row is None:
                raise UnknownResponse(rid, field)
            rows.append(dict(row))
        if fb.other_response_id is not None and fb.other_response_id == fb.response_id:
            raise InvalidFeedback("a response cannot be compared with itself (winner_id == loser_id)")
        fid = f"fb-{uuid.uuid4().hex}"
        con.execute(
            "INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                fid,
                time.time(),
                fb.kind,
                fb.response_id,
                fb.other_response_id,
                fb.score,
                int(fb.tie),
                fb.comment,
            ),
        )
        return StoredFeedback(fid, fb, tuple(rows))
