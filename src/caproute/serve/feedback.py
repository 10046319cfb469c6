"""Durable store of served responses and the feedback tied to them (SQLite, WAL, fsync per commit).

Every chat completion, ``/v1/route`` decision and duel answer is registered under its response id;
``/v1/feedback`` may only refer to registered ids. One writer thread owns the connection and
commits in groups (everything queued when it wakes goes into one transaction), so many concurrent
requests cost one fsync, not one each:

- responses are queued and not awaited (the request path does not wait for the disk). A group of
  registrations only waits up to ``group_wait_s`` (5 ms, PROPOSED) for more before it commits, so
  a steady stream of requests costs one commit per few milliseconds, not one per request (issue
  27: a commit cost the writer thread about 0.19 ms of CPU); feedback, a query or ``close()``
  ends the wait at once, so nothing acknowledged waits for it;
- feedback is acknowledged only after its transaction committed with ``synchronous=FULL``, i.e.
  after the WAL was fsync'd: a 200 from ``/v1/feedback`` survives a crash or power loss.

The queue is FIFO and a client learns a response id only after it was queued, so feedback can
never overtake the registration of the response it refers to.

Registrations are never dropped while the process lives: when a commit fails (the database is
locked by another process, the disk is full), the registrations of that transaction are kept and
retried first, with backoff (50 ms doubling to 1 s), until they are stored; feedback in a failed
transaction is answered with an error (``/v1/feedback`` says 503, retry). The queue of
registrations not yet stored is bounded (``max_pending``): while it is full, :attr:`full` is true
and the proxy refuses new requests with 503 instead of answering requests it could not register.
``pending`` and ``commit_retries`` are exported in ``/metrics``.

Feedback is idempotent per client: one rating per (response id, API key) and one comparison per
(pair of response ids, API key); a repeat replaces the earlier one (the latest wins, keeping its
id and place in the log), so replaying a rating or a comparison adds nothing. The writer thread
survives any exception raised by one record (text follows :mod:`caproute.data.text`; a
registration that cannot be stored goes to the dead-letter file, :mod:`caproute.serve.dead_letter`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from caproute.data.text import clean_json
from caproute.errors import ConfigError
from caproute.serve import jsonwire
from caproute.serve.dead_letter import BackgroundWriter, DeadLetters
from caproute.serve.sqlite_files import check_own_tables, check_sqlite_path

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
    comment TEXT,
    key_id TEXT,                     -- who gave it (a prefix of the API key's hash; NULL without keys)
    source TEXT,                     -- user (/v1/feedback) | judge (serve --judge-sample); NULL: user
    raw_score REAL,                  -- scalar: the rating as given, on its scale
    scale TEXT                       -- scalar: unit | thumbs | LO-HI (caproute.data.ratings)
);
CREATE INDEX IF NOT EXISTS feedback_response ON feedback(response_id);
"""
FEEDBACK_FIELDS = ("feedback_id", "created", "kind", "response_id", "other_response_id", "score", "tie", "comment",
                   "key_id", "source", "raw_score", "scale")
#: columns added to the feedback table after its first version (added on open: ALTER TABLE)
ADDED_FEEDBACK_COLUMNS = (("key_id", "TEXT"), ("source", "TEXT"), ("raw_score", "REAL"), ("scale", "TEXT"))

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


@dataclass(frozen=True)
class Dialect:
    """The SQL of one database the feedback store writes (SQLite here, PostgreSQL in
    :mod:`caproute.serve.stores.postgres`): statements, the transaction start, and which driver
    errors mean "the database, retry" (``transient``) or "this job" (``job_errors``)."""

    begin: str
    upsert_response: str
    select_response: str
    find_scalar: str  # (response_id, key_id) -> feedback_id
    find_pairwise: str  # (key_id, a, b, b, a) -> feedback_id
    update_feedback: str  # named parameters: FEEDBACK_FIELDS
    insert_feedback: str
    transient: tuple[type[BaseException], ...]
    job_errors: tuple[type[BaseException], ...]
    driver_errors: tuple[type[BaseException], ...]


SQLITE = Dialect(
    begin="BEGIN IMMEDIATE",
    upsert_response=(f"INSERT OR REPLACE INTO responses ({', '.join(RESPONSE_FIELDS)}) "
                     f"VALUES ({', '.join('?' * len(RESPONSE_FIELDS))})"),
    select_response="SELECT * FROM responses WHERE response_id = ?",
    find_scalar="SELECT feedback_id FROM feedback WHERE kind = 'scalar' AND response_id = ? AND key_id IS ?",
    find_pairwise=("SELECT feedback_id FROM feedback WHERE kind = 'pairwise' AND key_id IS ? AND ("
                   "(response_id = ? AND other_response_id = ?) OR (response_id = ? AND other_response_id = ?))"),
    update_feedback=(f"UPDATE feedback SET {', '.join(f'{k} = :{k}' for k in FEEDBACK_FIELDS if k != 'feedback_id')} "
                     "WHERE feedback_id = :feedback_id"),
    insert_feedback=(f"INSERT INTO feedback ({', '.join(FEEDBACK_FIELDS)}) "
                     f"VALUES ({', '.join(':' + k for k in FEEDBACK_FIELDS)})"),
    transient=(sqlite3.OperationalError,),
    job_errors=(sqlite3.Error,),
    driver_errors=(sqlite3.Error,),
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
    key_id: str | None = None  # the client (API key hash prefix); one rating per (response, key)
    source: str = "user"  # user | judge (provenance: supervision filters or weights by it)
    raw_score: float | None = None  # scalar: the rating as given (``score`` is it mapped to [0, 1])
    scale: str | None = None  # scalar: the rating's scale (caproute.data.ratings)


@dataclass(frozen=True)
class StoredFeedback:
    feedback_id: str
    feedback: Feedback
    responses: tuple[dict[str, Any], ...]  # the referenced response rows (one or two)
    replaced: bool = False  # True when it replaced this key's earlier feedback on the same response(s)
    duel_seq: int | None = None  # shared state: the sequence number of the duel increment it created


GROUP_WAIT_S = 0.005
"""PROPOSED: how long a group of registrations (nothing waits for them) may wait for more before
its commit; one commit per group. Bounds how long a queued registration stays uncommitted."""


def json_text(value: Any) -> str:
    """The JSON text of ``clean_json(value)`` (objects JSON has no type for as ``str(obj)``).

    :func:`caproute.serve.jsonwire.dumps` (orjson where installed), cleaning only when there is
    something to clean: orjson writes only text without surrogates (it refuses the rest, which the
    standard library writes), and there any surrogate in a string is a ``\\ud8xx`` to ``\\udfxx``
    escape, so text without one came from strings that :func:`~caproute.data.text.clean_json`
    leaves as they are. Issue 27: ``clean_json`` + ``json.dumps`` cost about 70 us per decision,
    orjson about 3 us."""
    text = jsonwire.dumps(value, default=str).decode()
    if "\\ud" in text:
        text = jsonwire.dumps(clean_json(value), default=str).decode()
    return text


class _Record(NamedTuple):
    """A registration as queued: the caller's record and when it was registered."""

    record: dict[str, Any]
    created: float


class FeedbackStore(BackgroundWriter):
    """Thread-safe; ``start()`` opens the file and the writer thread, ``close()`` flushes and stops.

    Subclasses for other databases set ``dialect`` and override ``_connect`` (and ``_reconnect``,
    ``_after_feedback``)."""

    dialect: Dialect = SQLITE
    response_fields: tuple[str, ...] = RESPONSE_FIELDS

    def __init__(
        self,
        path: str | Path,
        max_batch: int = 512,
        *,
        max_pending: int = 100_000,
        busy_timeout_s: float = 2.0,
        close_timeout_s: float = 30.0,
        group_wait_s: float = GROUP_WAIT_S,
    ):
        self.path = Path(path)
        self.max_batch = max_batch
        self.group_wait_s = group_wait_s
        self._urgent = threading.Event()  # set when a job that someone waits for is queued
        self.max_pending, self.busy_timeout_s, self.close_timeout_s = (
            max_pending,
            busy_timeout_s,
            close_timeout_s,
        )
        self._q: queue.SimpleQueue = queue.SimpleQueue()  # put() without a Condition: cheap on the loop
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self.commits = 0
        self.pending = 0  # registrations queued or being retried, not yet committed
        self.commit_retries = 0
        self.lost = 0  # registrations given up at close (after close_timeout_s of retrying)
        self.dead = DeadLetters(self.path, "feedback store")

    @property
    def full(self) -> bool:
        """True while ``max_pending`` registrations wait to be stored (admit no new requests)."""
        return self.pending >= self.max_pending

    @staticmethod
    def check_path(path: str | os.PathLike) -> Path:
        """Raise :class:`ConfigError` unless ``path`` can hold a feedback store: not a directory,
        not an existing non-SQLite file, and a store of this schema version if it is one."""
        p = check_sqlite_path(path, what="feedback store", flag="--feedback-db")
        if not p.parent.exists():
            return p
        try:
            con = FeedbackStore(p)._connect()
        except ConfigError:
            raise
        except (sqlite3.Error, OSError) as e:
            raise ConfigError(f"{p}: cannot open the feedback store: {e}") from None
        con.close()
        return p

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> FeedbackStore:
        e = self._start_thread("caproute-feedback-writer")
        if e is not None:
            if isinstance(e, ConfigError):
                raise e
            raise ConfigError(f"{self.path}: cannot open the feedback store: {e}") from e
        return self


    def __enter__(self) -> FeedbackStore:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- API ----------------------------------------------------------------------------------------
    def register(self, record: dict[str, Any]) -> None:
        """Queue a served response (not awaited). ``record`` keys: see ``RESPONSE_FIELDS``.

        The row is cleaned and its decision encoded by the writer thread (:meth:`_row`), off the
        event loop; ``record`` and the values in it must not change after this call."""
        with self._lock:
            self.pending += 1
        self._put(("register", _Record(record, time.time()), None))

    def _row(self, record: dict[str, Any], now: float) -> dict[str, Any]:
        """The stored row of a registration: strings cleaned, the decision as JSON text."""
        decision = record.get("decision")
        row = {k: clean_json(record.get(k)) for k in self.response_fields if k != "decision"}
        row["created"] = row["created"] or now
        row["decision"] = json_text(decision) if isinstance(decision, dict | list) else clean_json(decision)
        return row

    def _take(self, job):
        """A queued job as the writer handles it: a registration's record made its row."""
        if job is not None and job[0] == "register" and isinstance(job[1], _Record):
            return ("register", self._row(*job[1]), None)
        return job

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
        if job[0] != "register":
            self._urgent.set()  # its caller waits: the writer's group wait ends now

    def close(self) -> None:
        self._urgent.set()
        super().close()

    # -- writer thread --------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=True, timeout=self.busy_timeout_s
        )
        # read-only check first: another application's file is never modified (not even its journal mode)
        check_own_tables(con, self.path, table="responses", what="feedback store")
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
        con.execute("PRAGMA foreign_keys=ON")
        con.executescript(SCHEMA)
        have = {r[1] for r in con.execute("PRAGMA table_info(feedback)")}
        for name, typ in ADDED_FEEDBACK_COLUMNS:  # stores of before idempotent feedback, provenance, scales
            if name not in have:
                con.execute(f"ALTER TABLE feedback ADD COLUMN {name} {typ}")
        row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path}: feedback schema version {row[0]}, this caproute writes {SCHEMA_VERSION}"
            )
        con.row_factory = sqlite3.Row
        return con

    def _run(self) -> None:
        con = self._open()
        if con is None:
            return
        stop, carry, delay, stop_at = False, [], 0.05, None
        while not stop or carry:
            retrying = bool(carry)
            if carry:  # registrations of a failed commit go first, then whatever is new
                jobs, carry = carry, []
            else:
                jobs = [self._take(self._q.get())]
            self._drain(jobs)
            if not retrying and self.group_wait_s > 0 and len(jobs) < self.max_batch and not stop and all(
                j is not None and j[0] == "register" for j in jobs
            ):
                # registrations only: gather more for one commit, unless someone waits (feedback, close)
                self._urgent.wait(self.group_wait_s)
                self._urgent.clear()
                self._drain(jobs)
            if None in jobs:
                stop = True
                stop_at = time.monotonic() + self.close_timeout_s
                jobs = [j for j in jobs if j is not None]
            if not jobs:
                continue
            carry = self._batch(con, jobs)
            if not carry:
                delay = 0.05
                continue
            self.commit_retries += 1
            if stop and time.monotonic() > stop_at:
                self.lost += len(carry)
                log.error(
                    "feedback store: closing with %d registrations not stored after retrying for %.0f s",
                    len(carry),
                    self.close_timeout_s,
                )
                break
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            con = self._reconnect(con)
        con.close()

    def _drain(self, jobs: list) -> None:
        """Append what is queued (up to ``max_batch`` jobs in all) to ``jobs``, without waiting."""
        while len(jobs) < self.max_batch:
            try:
                jobs.append(self._take(self._q.get_nowait()))
            except queue.Empty:
                break

    def _reconnect(self, con):
        """Before a retry: the connection to use (a server database reconnects; a file keeps it)."""
        return con

    def _batch(self, con: sqlite3.Connection, jobs: list) -> list:
        """Commit ``jobs`` in one transaction; returns the registrations to retry (empty: stored)."""
        results: list[tuple[Future, Any, bool]] = []
        d = self.dialect
        insert = d.upsert_response
        rows: list[tuple] = []
        n_reg = 0
        try:
            con.execute(d.begin)
            for kind, payload, fut in jobs:
                if kind == "register":
                    rows.append(tuple(payload[k] for k in self.response_fields))
                    n_reg += 1
                    continue
                if rows:  # keep queue order: registrations before the feedback that follows them
                    con.cursor().executemany(insert, rows)
                    rows = []
                try:
                    if kind == "feedback":
                        results.append((fut, self._insert_feedback(con, payload), True))
                    else:
                        sql, params = payload
                        results.append((fut, [dict(r) for r in con.execute(sql, params).fetchall()], True))
                except (UnknownResponse, InvalidFeedback, *d.job_errors) as e:
                    results.append((fut, e, False))
            if rows:
                con.cursor().executemany(insert, rows)
            con.execute("COMMIT")
            self.commits += 1
        except d.transient as e:  # locked, busy, disk full, connection lost: the database, not a record
            with contextlib.suppress(*d.driver_errors):
                con.execute("ROLLBACK")
            retry = [j for j in jobs if j[0] == "register"]
            log.warning(
                "feedback store: commit failed (%s); %d registrations kept and retried, %d other jobs failed",
                e,
                len(retry),
                len(jobs) - len(retry),
            )
            for _kind, _, fut in jobs:
                if fut is not None and not fut.done():
                    fut.set_exception(e)
            return retry
        except Exception as e:  # noqa: BLE001 - a record that cannot be stored: never a dead writer
            with contextlib.suppress(*d.driver_errors):
                con.execute("ROLLBACK")
            return self._isolate(con, jobs, e)
        with self._lock:
            self.pending -= n_reg
        for fut, value, ok in results:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        return []

    def _isolate(self, con: sqlite3.Connection, jobs: list, error: BaseException) -> list:
        """After a group failed on a bad record: commit each job alone. A registration that still
        fails goes to the dead-letter file; other jobs get the error. Returns registrations to retry."""
        if len(jobs) > 1:
            log.warning("feedback store: a group of %d jobs failed (%s: %s); committing them one by one",
                        len(jobs), type(error).__name__, error)
            return [j for job in jobs for j in self._batch(con, [job])]
        kind, payload, fut = jobs[0]
        if kind == "register":
            self.dead.add(payload, error)
            with self._lock:
                self.pending -= 1
        elif fut is not None and not fut.done():
            fut.set_exception(error)
        return []

    def _insert_feedback(self, con, fb: Feedback) -> StoredFeedback:
        d = self.dialect
        rows = []
        for field, rid in (("response_id", fb.response_id), ("other_response_id", fb.other_response_id)):
            if rid is None:
                continue
            row = con.execute(d.select_response, (rid,)).fetchone()
            if row is None:
                raise UnknownResponse(rid, field)
            rows.append(dict(row))
        if fb.other_response_id is not None and fb.other_response_id == fb.response_id:
            raise InvalidFeedback("a response cannot be compared with itself (winner_id == loser_id)")
        # one rating per (response, key), one comparison per (pair, key): a repeat replaces it in place
        if fb.kind == "scalar":
            old = con.execute(d.find_scalar, (fb.response_id, fb.key_id)).fetchone()
        else:
            old = con.execute(d.find_pairwise, (fb.key_id, fb.response_id, fb.other_response_id,
                                                fb.other_response_id, fb.response_id)).fetchone()
        values = {"feedback_id": old["feedback_id"] if old else f"fb-{uuid.uuid4().hex}", "created": time.time(),
                  "kind": fb.kind, "response_id": fb.response_id, "other_response_id": fb.other_response_id,
                  "score": fb.score, "tie": int(fb.tie), "comment": fb.comment, "key_id": fb.key_id,
                  "source": fb.source, "raw_score": fb.raw_score if fb.raw_score is not None else fb.score,
                  "scale": fb.scale if fb.scale is not None else ("unit" if fb.kind == "scalar" else None)}
        con.execute(d.update_feedback if old else d.insert_feedback, values)
        stored = StoredFeedback(values["feedback_id"], fb, tuple(rows), replaced=old is not None)
        return self._after_feedback(con, stored)

    def _after_feedback(self, con, stored: StoredFeedback) -> StoredFeedback:
        """In the feedback's transaction, after it was written (PostgreSQL: the duel increment)."""
        return stored
