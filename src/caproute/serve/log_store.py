"""Opt-in log of routed requests and their answers (``caproute serve --log-store LOG.sqlite3``).

Feedback refers to response ids; to turn it into training data we need what was asked and what
was answered. With ``--log-store`` the proxy records, per answered response id, the request's
messages, the routing text, the answer text, the model, usage and cost, and for routed requests
what off-policy replay needs (:data:`ROUTING_FIELDS`: the candidates, the model the serving policy
chose and its probability, the full distribution, router and policy versions, lambda/beta/lambda_t,
the exploration settings; ``caproute feedback export --replay-log``). Nothing is logged without the
flag (prompts may hold personal data: the log is the operator's choice).

Schema versions: a log written before the routing columns existed gets them on open (``ALTER
TABLE ... ADD COLUMN``, NULL for the old rows, which replay skips; a routed row without ``lam_t``
was routed at lambda_t = 0); PostgreSQL migrates the same way (:mod:`caproute.serve.stores.pg`,
schema versions 2 and 3).

Storage: one SQLite file (WAL). A writer thread drains a queue and commits in groups, so the
request path only enqueues (it never waits for the disk). ``synchronous=NORMAL``: a crash may
lose the last moments of the log (never corrupt it); feedback itself is in the fsync'd feedback
store. The file can be read while the server runs (``caproute feedback export``).

The writer never dies silently: text follows caproute's one rule (:mod:`caproute.data.text`), a
batch that fails is written again record by record, and a record that still fails is kept in the
dead-letter file beside the log (:mod:`caproute.serve.dead_letter`, counted in ``/metrics``). The
queue is bounded (``max_queue``): while the writer is behind by that many records, new ones are
dropped and counted (``caproute_request_log_dropped``), so a stalled disk never grows the
server's memory without bound.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from caproute.data.text import clean_json
from caproute.errors import ConfigError
from caproute.serve.dead_letter import BackgroundWriter, DeadLetters
from caproute.serve.sqlite_files import check_own_tables, check_sqlite_path

log = logging.getLogger("caproute.serve")

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    response_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    kind TEXT NOT NULL,              -- chat | direct | duel
    router TEXT,
    model TEXT,
    messages TEXT NOT NULL,          -- JSON list of the request's messages
    answer TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_usd REAL,
    cost_estimated INTEGER
);
"""
BASE_FIELDS = ("response_id", "created", "kind", "router", "model", "messages", "answer", "finish_reason",
               "prompt_tokens", "completion_tokens", "cost_usd", "cost_estimated")
#: routed requests only (NULL otherwise): the routing text, JSON list of candidate models, the model
#: the serving policy drew (``model`` is the one that answered: another after a fallback), its
#: probability, the JSON {model: probability}, the router directory's fingerprint, the policy
#: version, lambda, beta, the JSON exploration settings (NULL without --explore) and lambda_t (the
#: PROPOSED latency weight; added after the others: NULL in rows logged before it, read as 0)
ROUTING_COLUMNS = (("routing_text", "TEXT"), ("candidates", "TEXT"), ("chosen", "TEXT"), ("propensity", "REAL"),
                   ("propensities", "TEXT"), ("router_version", "TEXT"), ("policy_version", "TEXT"),
                   ("lam", "REAL"), ("beta", "REAL"), ("explore", "TEXT"), ("lam_t", "REAL"))
ROUTING_FIELDS = tuple(c for c, _ in ROUTING_COLUMNS)
FIELDS = BASE_FIELDS + ROUTING_FIELDS
JSON_ROUTING_FIELDS = ("candidates", "propensities", "explore")


class RequestLog(BackgroundWriter):
    """Thread-safe, non-blocking request/answer log. ``start()`` then ``record(...)``; ``close()`` flushes.
    Another database: a subclass with its own ``_connect``, ``insert_sql`` and ``_commit``."""

    insert_sql = f"INSERT OR REPLACE INTO requests ({', '.join(FIELDS)}) VALUES ({', '.join('?' * len(FIELDS))})"

    def __init__(self, path: str | Path, max_batch: int = 512, max_queue: int = 100_000):
        self.path = Path(path)
        self.max_batch = max_batch
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.written = 0
        self.dropped = 0  # records refused while the queue was full
        self.dead = DeadLetters(self.path, "request log")

    @staticmethod
    def check_path(path: str | Path) -> Path:
        """Raise :class:`ConfigError` unless ``path`` can hold a request log (see
        :func:`caproute.serve.sqlite_files.check_sqlite_path`; another application's database or a
        ``requests`` table of another shape is refused)."""
        p = check_sqlite_path(path, what="request log", flag="--log-store")
        if not p.parent.exists():
            return p
        try:
            RequestLog(p)._connect().close()
        except sqlite3.Error as e:
            raise ConfigError(f"{p}: cannot open the request log: {e}") from None
        return p

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, isolation_level=None)
        # read-only checks first: another application's file is never modified (not even its journal mode)
        check_own_tables(con, self.path, table="requests", what="request log")
        cols = {r[1] for r in con.execute("PRAGMA table_info(requests)")}
        missing = [f for f in BASE_FIELDS if f not in cols]
        if cols and missing:
            con.close()
            raise ConfigError(f"{self.path}: its 'requests' table lacks the columns {missing}: not a caproute "
                              "request log; give another path (--log-store)")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.executescript(SCHEMA)
        for name, typ in ROUTING_COLUMNS:  # migration: logs of before the routing columns
            if name not in cols:
                con.execute(f"ALTER TABLE requests ADD COLUMN {name} {typ}")
        return con

    def start(self) -> RequestLog:
        e = self._start_thread("caproute-request-log")
        if e is not None:
            raise e
        return self


    def record(self, *, response_id: str, kind: str, model: str | None, messages: list, answer: str | None,
               router: str | None = None, finish_reason: str | None = None, usage: dict | None = None,
               cost_usd: float | None = None, cost_estimated: bool = False, routing: dict | None = None) -> None:
        """Queue one answered request (not awaited). ``routing``: the :data:`ROUTING_FIELDS` of a routed
        request (JSON fields as Python objects)."""
        usage = usage if isinstance(usage, dict) else {}
        row = {"response_id": response_id, "created": time.time(), "kind": kind, "router": router, "model": model,
               "messages": json.dumps(clean_json(messages), default=str), "answer": answer,
               "finish_reason": finish_reason, "prompt_tokens": usage.get("prompt_tokens"),
               "completion_tokens": usage.get("completion_tokens"), "cost_usd": cost_usd,
               "cost_estimated": int(bool(cost_estimated))}
        routing = routing or {}
        for k in ROUTING_FIELDS:
            v = routing.get(k)
            row[k] = json.dumps(clean_json(v)) if k in JSON_ROUTING_FIELDS and v is not None else v
        if self._thread is None:
            return
        try:
            self._q.put_nowait(tuple(clean_json(row[k]) for k in FIELDS))
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.error("request log: the writer is %d records behind; %d records dropped so far",
                          self._q.maxsize, self.dropped)

    def _run(self) -> None:
        con = self._open()
        if con is None:
            return
        sql = self.insert_sql
        stop = False
        while not stop:
            rows = [self._q.get()]
            while len(rows) < self.max_batch:
                try:
                    rows.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if None in rows:
                stop = True
                rows = [r for r in rows if r is not None]
            if not rows:
                continue
            try:
                self._commit(con, sql, rows)
            except Exception as e:  # noqa: BLE001 - never a dead thread: find and keep the bad record
                log.warning("request log: a group of %d rows failed (%s: %s); writing them one by one",
                            len(rows), type(e).__name__, e)
                for row in rows:
                    try:
                        self._commit(con, sql, [row])
                    except Exception as e1:  # noqa: BLE001
                        self.dead.add(dict(zip(FIELDS, row, strict=False)), e1)
        con.close()

    def _commit(self, con: sqlite3.Connection, sql: str, rows: list[tuple]) -> None:
        try:
            con.execute("BEGIN")
            con.cursor().executemany(sql, rows)
            con.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                con.execute("ROLLBACK")
            raise
        self.written += len(rows)


def answer_text(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """(text, finish_reason) of the first choice of a chat completion body."""
    choices = data.get("choices") or []
    if not choices:
        return None, None
    c = choices[0]
    msg = c.get("message") or {}
    content = msg.get("content")
    if isinstance(content, list):
        content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content, c.get("finish_reason")


def read_requests(path: str | Path):
    """The logged requests as a DataFrame (read-only; works while the server writes)."""
    from caproute.serve.sqlite_files import read_query

    return read_query(path, "SELECT * FROM requests ORDER BY created", table="requests", what="request log")


def delta_text(chunk: dict[str, Any]) -> str:
    """The content delta of a streamed chunk's first choice ('' when none)."""
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    delta = choices[0].get("delta") or {}
    content = delta.get("content")
    return content if isinstance(content, str) else ""


def log_answer(state, *, response_id: str, kind: str, router: str | None, model: str, raw: dict,
               data: dict | None = None, text: str | None = None, usage: dict | None = None,
               spend: float | None = None, estimated: bool = False, routing: dict | None = None) -> None:
    """Record one answered request in the server's request log, when ``--log-store`` is on.

    ``data``: a non-streamed completion body (its first choice is the answer), or ``text`` for a
    stream. Never raises: the log must not fail a request.
    """
    rl = getattr(state, "request_log", None)
    if rl is None:
        return
    try:
        finish = None
        if data is not None:
            text, finish = answer_text(data)
            usage = usage if usage is not None else data.get("usage")
        rl.record(response_id=response_id, kind=kind, router=router, model=model,
                  messages=list(raw.get("messages") or []), answer=text, finish_reason=finish, usage=usage,
                  cost_usd=spend, cost_estimated=estimated, routing=routing)
    except Exception:  # noqa: BLE001
        log.exception("request log: could not record %s", response_id)
