"""The proxy's state in PostgreSQL (``caproute serve --state postgresql://...``): many replicas,
one learning state.

Every replica writes and reads the same tables (schema ``caproute``, :mod:`caproute.serve.stores.pg`):

- registrations and feedback: :class:`PgFeedbackStore`, the SQLite store's writer thread and group
  commits with PostgreSQL's SQL. A lost connection (a database restart) keeps the registrations and
  retries them (reconnecting) until stored; feedback in a failed commit is answered 503;
- the request log (``log_store`` set): :class:`PgRequestLog`, table ``requests``;
- sticky conversations: :class:`PgStickyMap`, table ``sticky``;
- the dueling policy: per-duel increments (``duel_updates``, one row per learned duel with its
  query embedding, written in the same transaction as the feedback that decided it, numbered in
  commit order) and checkpoints of their log (``duel_checkpoints``). Each replica applies every
  increment in sequence order, so every replica holds the policy one process fed that sequence
  would hold (:class:`DuelSync`);
- spend and token counters: each replica adds its increments to ``counters`` (never overwrites).

Refreshes (duel increments, counters) run every ``state_refresh_s``; ``caproute_state_staleness_seconds``
is the age of the state a replica last read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from caproute.serve.feedback import FEEDBACK_FIELDS, RESPONSE_FIELDS, Dialect, FeedbackStore, StoredFeedback
from caproute.serve.log_store import FIELDS as LOG_FIELDS
from caproute.serve.log_store import RequestLog
from caproute.serve.stores import pg
from caproute.serve.stores.base import ProxyState

log = logging.getLogger("caproute.serve")

PG_RESPONSE_FIELDS = (*RESPONSE_FIELDS, "embedding")


def _upsert(table: str, fields: tuple[str, ...], key: str) -> str:
    sets = ", ".join(f"{f} = excluded.{f}" for f in fields if f != key)
    return (f"INSERT INTO {table} ({', '.join(fields)}) VALUES ({', '.join(['%s'] * len(fields))}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {sets}")


def pg_dialect() -> Dialect:
    import psycopg

    return Dialect(
        begin="BEGIN",
        upsert_response=_upsert("responses", PG_RESPONSE_FIELDS, "response_id"),
        select_response="SELECT * FROM responses WHERE response_id = %s",
        find_scalar=("SELECT feedback_id FROM feedback WHERE kind = 'scalar' AND response_id = %s "
                     "AND key_id IS NOT DISTINCT FROM %s::text"),
        find_pairwise=("SELECT feedback_id FROM feedback WHERE kind = 'pairwise' AND key_id IS NOT DISTINCT FROM "
                       "%s::text AND ((response_id = %s AND other_response_id = %s) OR "
                       "(response_id = %s AND other_response_id = %s))"),
        update_feedback=(f"UPDATE feedback SET {', '.join(f'{k} = %({k})s' for k in FEEDBACK_FIELDS if k != 'feedback_id')}"
                         " WHERE feedback_id = %(feedback_id)s"),
        insert_feedback=(f"INSERT INTO feedback ({', '.join(FEEDBACK_FIELDS)}) "
                         f"VALUES ({', '.join(f'%({k})s' for k in FEEDBACK_FIELDS)})"),
        # a failed statement aborts a PostgreSQL transaction: any driver error fails the group
        # (connection lost: retried; a bad record: committed one by one, then a dead letter)
        transient=(psycopg.OperationalError,),
        job_errors=(),
        driver_errors=(psycopg.Error,),
    )


def embedding_bytes(x) -> bytes | None:
    return None if x is None else np.ascontiguousarray(np.asarray(x, dtype="<f8").reshape(-1)).tobytes()


class PgFeedbackStore(FeedbackStore):
    """:class:`FeedbackStore` on PostgreSQL. ``path`` only names the dead-letter file.

    ``policy_fp`` (set when a duel policy attaches) makes the first decisive verdict on a duel
    insert its increment into ``duel_updates`` in the feedback's own transaction, under an advisory
    lock so increments commit in sequence order (a reader that saw increment n saw every one before)."""

    response_fields = PG_RESPONSE_FIELDS

    def __init__(self, url: str, path, **kw):
        super().__init__(path, **kw)
        self.url = url
        self.dialect = pg_dialect()
        self.policy_fp: str | None = None
        self.embedding_of = None  # duel id -> query embedding (the serving replica's cache)

    def register(self, record: dict[str, Any]) -> None:
        if record.get("kind") == "duel" and self.embedding_of is not None and "embedding" not in record:
            record = {**record, "embedding": embedding_bytes(self.embedding_of(record.get("duel_id")))}
        super().register(record)

    def _connect(self):
        s = pg.Session(self.url)
        s.conn()
        return s

    def _reconnect(self, con):
        con.reset()  # the next statement reconnects (and fails fast while the server is down)
        return con

    def _after_feedback(self, con, stored: StoredFeedback) -> StoredFeedback:
        fb = stored.feedback
        if self.policy_fp is None or fb.kind != "pairwise" or fb.tie or len(stored.responses) != 2:
            return stored
        a, b = stored.responses
        if a["kind"] != "duel" or b["kind"] != "duel" or a["duel_id"] is None or a["duel_id"] != b["duel_id"]:
            return stored
        con.execute("SELECT pg_advisory_xact_lock(%s)", (pg.DUEL_LOCK,))
        row = con.execute(
            "INSERT INTO duel_updates (policy_fp, duel_id, feedback_id, winner_arm, loser_arm, x, routing_text, "
            "created) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (policy_fp, duel_id) DO NOTHING "
            "RETURNING seq",
            (self.policy_fp, a["duel_id"], stored.feedback_id, int(a["duel_arm"]), int(b["duel_arm"]),
             a.get("embedding") or b.get("embedding"), a.get("routing_text"), time.time())).fetchone()
        return replace(stored, duel_seq=int(row["seq"]) if row else None)


class PgRequestLog(RequestLog):
    """:class:`RequestLog` into the state's ``requests`` table; a lost connection is retried for up to
    ``retry_s`` (reconnecting) before the group goes record by record to the dead-letter file."""

    insert_sql = _upsert("requests", LOG_FIELDS, "response_id")

    def __init__(self, url: str, path, retry_s: float = 30.0, **kw):
        super().__init__(path, **kw)
        self.url, self.retry_s = url, retry_s

    def _connect(self):
        s = pg.Session(self.url)
        s.conn()
        return s

    def _commit(self, con, sql: str, rows: list[tuple]) -> None:
        def once():
            try:
                RequestLog._commit(self, con, sql, rows)
            except BaseException:
                if con._con is not None and (con._con.closed or con._con.broken):
                    con.reset()
                raise

        pg.retry_transient(once, deadline_s=self.retry_s, what="request log", log=log)


class PgStickyMap:
    """The sticky map of every replica: table ``sticky``, same contract as
    :class:`~caproute.serve.conversation.SharedStickyMap` (LRU of ``max_entries`` with eviction every
    ``evict_every`` new entries, ``ttl_s`` in wall-clock time). Soft state: a lookup or update that
    fails or takes longer than ``timeout_ms`` is a miss (logged), never a failed request."""

    def __init__(self, url: str, max_entries: int = 100_000, ttl_s: float = 3600.0, evict_every: int = 256,
                 timeout_ms: int = 500, clock=time.time):
        self.url, self.max_entries, self.ttl_s, self._clock = url, max_entries, ttl_s, clock
        self.evict_every, self.timeout_ms = max(1, int(evict_every)), int(timeout_ms)
        self._session = pg.Session(url, timeout_s=2.0)
        self._sets = 0
        self.errors = 0

    def _guard(self, what: str, fn, default=None):
        import psycopg

        def run(con):
            with con.transaction():
                con.execute(f"SET LOCAL statement_timeout = {self.timeout_ms}")
                return fn(con)

        try:
            return self._session.run(run)
        except psycopg.Error as e:
            self.errors += 1
            if self.errors == 1 or self.errors % 1000 == 0:
                log.warning("sticky map (PostgreSQL): %s failed (%s); the conversation is routed afresh "
                            "(%d errors so far)", what, str(e).strip()[:200], self.errors)
            return default

    def get(self, conversation_id: str, router: str) -> str | None:
        def run(con):
            now = self._clock()
            row = con.execute("UPDATE sticky SET t = %s WHERE conv = %s AND router = %s AND t >= %s RETURNING model",
                              (now, conversation_id, router, now - self.ttl_s)).fetchone()
            return None if row is None else row["model"]

        return self._guard("lookup", run)

    def set(self, conversation_id: str, router: str, model: str) -> None:
        def run(con):
            now = self._clock()
            con.execute("INSERT INTO sticky (conv, router, model, t) VALUES (%s, %s, %s, %s) ON CONFLICT (conv, router) "
                        "DO UPDATE SET model = excluded.model, t = excluded.t", (conversation_id, router, model, now))
            self._sets += 1
            if self._sets % self.evict_every == 0:
                con.execute("DELETE FROM sticky WHERE t < %s", (now - self.ttl_s,))
                n = con.execute("SELECT count(*) AS n FROM sticky").fetchone()["n"]
                if n > self.max_entries:
                    con.execute("DELETE FROM sticky WHERE (conv, router) IN (SELECT conv, router FROM sticky "
                                "ORDER BY t LIMIT %s)", (n - self.max_entries,))

        self._guard("update", run)

    def __len__(self) -> int:
        return int(self._guard("count", lambda con: con.execute("SELECT count(*) AS n FROM sticky").fetchone()["n"], 0))

    def close(self) -> None:
        self._session.close()


# -- the dueling policy across replicas --------------------------------------------------------------


def policy_fingerprint(path) -> str:
    """Which increments a policy follows: SHA-256 (16 hex) of its saved state and settings, without
    the encoder's path and the checkpoint metadata (the same ``--duel-policy`` on every replica)."""
    from caproute.bandits.policy import CHECKPOINT_FILES
    from caproute.core import artifact

    cfg, blob, _ = artifact.read_checkpoint(path, what="policy", files=CHECKPOINT_FILES)
    cfg = {k: v for k, v in cfg.items() if k != "checkpoint"}
    cfg["params"] = {k: v for k, v in (cfg.get("params") or {}).items() if k != "encoder"}
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
    h.update(blob)
    return h.hexdigest()[:16]


def policy_to_bytes(policy) -> tuple[bytes, bytes]:
    from caproute.bandits.policy import CONFIG_FILE, STATE_FILE

    with tempfile.TemporaryDirectory() as d:
        policy.save(d)
        return (Path(d) / CONFIG_FILE).read_bytes(), (Path(d) / STATE_FILE).read_bytes()


def policy_from_bytes(config: bytes, state: bytes):
    from caproute.bandits.policy import CONFIG_FILE, STATE_FILE, DuelingPolicy

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / STATE_FILE).write_bytes(state)
        (Path(d) / CONFIG_FILE).write_bytes(config)
        return DuelingPolicy.load(d)


def apply_increments(policy, rows: list[dict]) -> int:
    """Apply duel increments (rows of ``duel_updates``, in ``seq`` order) to ``policy``: the winner's
    arm beat the loser's on query embedding x. Returns the last sequence number applied."""
    last = 0
    for r in rows:
        x = np.frombuffer(r["x"], dtype="<f8") if r["x"] is not None else policy.embed(r["routing_text"] or "")
        policy.update(x, int(r["winner_arm"]), int(r["loser_arm"]), 1)
        last = int(r["seq"])
    return last


def fetch_increments(con, policy_fp: str, after: int, limit: int = 10_000) -> list[dict]:
    return con.execute("SELECT seq, winner_arm, loser_arm, x, routing_text FROM duel_updates "
                       "WHERE policy_fp = %s AND seq > %s ORDER BY seq LIMIT %s", (policy_fp, after, limit)).fetchall()


class DuelSync:
    """One replica's dueling policy kept equal to the shared log of duel increments.

    On attach: the newest of (the base policy ``--duel-policy`` at sequence 0, the shared checkpoint
    in ``duel_checkpoints``, this replica's own ``--duel-state-out`` when it follows this state and
    policy) plus every increment after its sequence number; increments are applied on top of the
    checkpoint's state, which already holds the prior and the increments before it, so nothing is
    applied twice and the prior is never replaced by deltas. Then every ``refresh_s`` (and before
    answering feedback that created an increment) the increments after the last applied one."""

    def __init__(self, url: str, state_id: str, base_dir, state_out, refresh_s: float, checkpoint_every: int):
        self.session = pg.Session(url)
        self.state_id, self.base_dir, self.state_out = state_id, base_dir, state_out
        self.refresh_s, self.checkpoint_every = refresh_s, max(1, int(checkpoint_every))
        self.policy_fp = policy_fingerprint(base_dir)
        self.applied = 0  # sequence number of the last increment applied
        self.checkpointed = 0
        self.last_ok = time.time()

    def _checkpoint_meta(self) -> dict:
        return {"state_id": self.state_id, "policy_fp": self.policy_fp, "duel_seq": self.applied}

    def _start_point(self, duel):
        """(policy, seq) to rebuild from: the newest checkpoint of this state's log, else the base."""
        from caproute.bandits.policy import DuelingPolicy

        best = (DuelingPolicy.load(self.base_dir), 0, "the base policy")
        cp = duel.policy.checkpoint_
        if cp.get("state_id") == self.state_id and cp.get("policy_fp") == self.policy_fp:
            best = max(best, (duel.policy, int(cp.get("duel_seq", 0)), "its local checkpoint"), key=lambda b: b[1])
        row = self.session.run(lambda con: con.execute(
            "SELECT seq, config, state FROM duel_checkpoints WHERE policy_fp = %s", (self.policy_fp,)).fetchone())
        if row is not None and int(row["seq"]) > best[1]:
            best = (policy_from_bytes(bytes(row["config"]), bytes(row["state"])), int(row["seq"]),
                    "the shared checkpoint")
        policy, seq, what = best
        if policy is not duel.policy:  # keep the loaded encoder (and this machine's path to it)
            policy.encoder, policy._encoder_model = duel.policy.encoder, duel.policy._encoder_model
        return policy, seq, what

    async def attach(self, duel, store: PgFeedbackStore) -> int:
        policy, seq, what = await asyncio.to_thread(self._start_point, duel)
        duel.policy, self.applied, self.checkpointed = policy, seq, seq
        store.policy_fp = self.policy_fp
        store.embedding_of = duel.embeddings.get
        n = await self.refresh(duel)
        log.info("duel policy %s: rebuilt from %s (increment %d) and %d increment(s) after it",
                 self.policy_fp, what, seq, n)
        return n

    async def refresh(self, duel) -> int:
        """Apply the increments after the last applied one; returns how many (raises when the database
        cannot be read)."""
        t0 = time.time()
        async with duel.save_lock:
            rows = await asyncio.to_thread(
                self.session.run, lambda con: fetch_increments(con, self.policy_fp, self.applied))
            if rows:
                self.applied = await asyncio.to_thread(apply_increments, duel.policy, rows)
                duel.updates += len(rows)
                duel.policy.checkpoint_ = self._checkpoint_meta()
                if self.state_out is not None:
                    await asyncio.to_thread(duel.policy.save, self.state_out)
                if self.applied - self.checkpointed >= self.checkpoint_every:
                    await asyncio.to_thread(self._save_shared, duel.policy)
        self.last_ok = t0
        return len(rows)

    def _save_shared(self, policy) -> None:
        config, state = policy_to_bytes(policy)
        self.session.run(lambda con: con.execute(
            "INSERT INTO duel_checkpoints (policy_fp, seq, config, state, created) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (policy_fp) DO UPDATE SET seq = excluded.seq, config = excluded.config, "
            "state = excluded.state, created = excluded.created WHERE duel_checkpoints.seq < excluded.seq",
            (self.policy_fp, self.applied, config, state, time.time())))
        self.checkpointed = self.applied

    async def learn(self, duel, stored: StoredFeedback) -> bool:
        """After feedback: True when it created an increment (the duel's first decisive verdict); the
        policy then holds it before the answer (read-your-writes on this replica)."""
        if stored.duel_seq is None:
            return False
        end = time.monotonic() + 10.0
        while self.applied < stored.duel_seq and time.monotonic() < end:
            await self.refresh(duel)
        return True


class SharedCounters:
    """Spend and token totals of all replicas: each adds the growth of its own Prometheus counters
    since its last flush (an increment, never a total) to table ``counters``."""

    COUNTERS = (("caproute_spend_usd_total", "spend_usd", ("model",)),
                ("caproute_tokens_total", "tokens", ("model", "kind")))

    def __init__(self, url: str, registry):
        self.session = pg.Session(url)
        self.registry = registry
        self._flushed: dict[tuple[str, str], float] = {}
        self.totals: dict[tuple[str, str], float] = {}

    def _local(self) -> dict[tuple[str, str], float]:
        out = {}
        for metric in self.registry.collect():
            for s in metric.samples:
                for sample, name, labels in self.COUNTERS:
                    if s.name == sample:
                        out[(name, ",".join(s.labels.get(k, "") for k in labels))] = float(s.value)
        return out

    def flush(self) -> None:
        local = self._local()
        deltas = {k: v - self._flushed.get(k, 0.0) for k, v in local.items() if v - self._flushed.get(k, 0.0) > 0}

        def run(con):
            with con.transaction():
                for (name, label), d in deltas.items():
                    con.execute("INSERT INTO counters (name, label, value) VALUES (%s, %s, %s) ON CONFLICT (name, label) "
                                "DO UPDATE SET value = counters.value + excluded.value", (name, label, d))
            return con.execute("SELECT name, label, value FROM counters").fetchall()

        rows = self.session.run(run)
        self._flushed.update({k: local[k] for k in deltas})
        self.totals = {(r["name"], r["label"]): float(r["value"]) for r in rows}


class PostgresState(ProxyState):
    """Registrations, feedback, the request log, sticky conversations, the duel policy's increments and
    the spend counters of every replica in one PostgreSQL database."""

    kind = "postgresql"
    shared = True

    def __init__(self, config):
        self.config, self.url = config, str(config.state)
        dead = Path(config.feedback_db)  # the dead-letter files stay local
        self.store = PgFeedbackStore(self.url, dead, max_pending=config.max_pending_registrations)
        self.request_log = PgRequestLog(self.url, config.log_store) if config.log_store is not None else None
        self.sticky = PgStickyMap(self.url, config.sticky_max_entries, config.sticky_ttl_s)
        self.duel_sync: DuelSync | None = None
        self.counters: SharedCounters | None = None
        self.state_id: str | None = None
        self._task: asyncio.Task | None = None
        self._duel = None
        self.refresh_errors = 0

    @staticmethod
    def check(config) -> None:
        pg.prepare(str(config.state))

    async def start(self, metrics) -> None:
        self.state_id = await asyncio.to_thread(pg.prepare, self.url)
        await asyncio.to_thread(self.store.start)
        if self.request_log is not None:
            await asyncio.to_thread(self.request_log.start)
        self.counters = SharedCounters(self.url, metrics.registry)
        self._bind_metrics(metrics.registry)
        self._task = asyncio.create_task(self._refresh_loop())

    def _bind_metrics(self, registry) -> None:
        from prometheus_client import Counter, Gauge

        Gauge("caproute_state_refresh_interval_seconds", "configured refresh interval of the shared state",
              registry=registry).set(self.config.state_refresh_s)
        Gauge("caproute_state_staleness_seconds", "age of the shared state this replica last read",
              registry=registry).set_function(self.staleness_s)
        self._errors = Counter("caproute_state_refresh_errors", "failed refreshes of the shared state",
                               registry=registry)
        Gauge("caproute_duel_applied_seq", "sequence number of the last duel increment applied",
              registry=registry).set_function(lambda: self.duel_sync.applied if self.duel_sync else 0)
        self._shared = Gauge("caproute_shared_total", "counters summed over every replica (name: spend_usd, "
                             "tokens; label: model[,kind])", ["name", "label"], registry=registry)

    def staleness_s(self) -> float:
        t = self.duel_sync.last_ok if self.duel_sync is not None else self._last_counters
        return max(0.0, time.time() - t)

    _last_counters = time.time()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.state_refresh_s)
            try:
                if self.duel_sync is not None and self._duel is not None:
                    await self.duel_sync.refresh(self._duel)
                t0 = time.time()
                await asyncio.to_thread(self.counters.flush)
                self._last_counters = t0
                for (name, label), v in self.counters.totals.items():
                    self._shared.labels(name, label).set(v)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the database is down: retry next round
                self.refresh_errors += 1
                self._errors.inc()
                if self.refresh_errors == 1 or self.refresh_errors % 100 == 0:
                    log.warning("shared state refresh failed (%s: %s); retrying every %.1f s",
                                type(e).__name__, str(e).strip()[:200], self.config.state_refresh_s)

    async def attach_duel(self, duel) -> None:
        out = self.config.duel_state_out
        # the base policy is the log's origin and is never written; a local checkpoint only where asked
        duel.state_out = out if out is not None and Path(out).resolve() != Path(self.config.duel_policy).resolve() \
            else None
        self.duel_sync = DuelSync(self.url, self.state_id, self.config.duel_policy, duel.state_out,
                                  self.config.state_refresh_s, self.config.duel_checkpoint_every)
        self._duel = duel
        await self.duel_sync.attach(duel, self.store)

    async def learn(self, duel, stored) -> bool:
        return await self.duel_sync.learn(duel, stored)

    async def stop(self, duel=None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.counters.flush)
        await asyncio.to_thread(self.store.close)
        if self.request_log is not None:
            await asyncio.to_thread(self.request_log.close)
        self.sticky.close()
