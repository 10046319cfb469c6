"""PostgreSQL plumbing of the shared proxy state: connections, the schema and its migrations.

Everything caproute keeps lives in the schema ``caproute`` of the database named by the URL
(``postgresql://user:pass@host:port/db``), so a database shared with other applications is fine.
:func:`prepare` creates the schema or migrates it (under an advisory lock, so replicas starting
together do it once), checks the version (a newer one is refused) and returns the state's id.
Every failure is a :class:`ConfigError` naming the database without its password.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import uuid

from caproute.errors import ConfigError

SCHEMA = "caproute"
SCHEMA_VERSION = 3
MIGRATION_LOCK = 7_260_001  # pg_advisory_lock keys: schema migrations
DUEL_LOCK = 7_260_002  # duel increments get their sequence numbers in commit order

# MIGRATIONS[v] takes the schema from version v - 1 to v (v = 1: from nothing).
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS responses (
    response_id TEXT PRIMARY KEY,
    created DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    router TEXT,
    model TEXT,
    conversation_id TEXT,
    policy_version TEXT,
    lam DOUBLE PRECISION,
    beta DOUBLE PRECISION,
    duel_id TEXT,
    duel_arm INTEGER,
    routing_text TEXT,
    decision TEXT,
    embedding BYTEA                  -- duel answers: the query embedding (float64, little-endian)
);
CREATE INDEX IF NOT EXISTS responses_duel ON responses(duel_id);
CREATE TABLE IF NOT EXISTS feedback (
    seq BIGSERIAL UNIQUE,
    feedback_id TEXT PRIMARY KEY,
    created DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    response_id TEXT NOT NULL REFERENCES responses(response_id),
    other_response_id TEXT REFERENCES responses(response_id),
    score DOUBLE PRECISION,
    tie INTEGER NOT NULL DEFAULT 0,
    comment TEXT,
    key_id TEXT
);
CREATE INDEX IF NOT EXISTS feedback_response ON feedback(response_id);
CREATE TABLE IF NOT EXISTS requests (
    response_id TEXT PRIMARY KEY,
    created DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    router TEXT,
    model TEXT,
    messages TEXT NOT NULL,
    answer TEXT,
    finish_reason TEXT,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    cost_usd DOUBLE PRECISION,
    cost_estimated INTEGER
);
CREATE TABLE IF NOT EXISTS sticky (
    conv TEXT NOT NULL, router TEXT NOT NULL, model TEXT NOT NULL, t DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (conv, router)
);
CREATE INDEX IF NOT EXISTS sticky_t ON sticky(t);
-- the dueling policy's log: one row per learned duel (its first decisive verdict), never a posterior
CREATE TABLE IF NOT EXISTS duel_updates (
    seq BIGSERIAL PRIMARY KEY,
    policy_fp TEXT NOT NULL,
    duel_id TEXT NOT NULL,
    feedback_id TEXT NOT NULL,
    winner_arm INTEGER NOT NULL,
    loser_arm INTEGER NOT NULL,
    x BYTEA,
    routing_text TEXT,
    created DOUBLE PRECISION NOT NULL,
    UNIQUE (policy_fp, duel_id)
);
-- a cache of the log: the policy after applying duel_updates up to seq (rebuilt from the log if lost)
CREATE TABLE IF NOT EXISTS duel_checkpoints (
    policy_fp TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    config BYTEA NOT NULL,
    state BYTEA NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
-- additive counters (spend, tokens): replicas add increments, never overwrite
CREATE TABLE IF NOT EXISTS counters (name TEXT NOT NULL, label TEXT NOT NULL, value DOUBLE PRECISION NOT NULL,
                                     PRIMARY KEY (name, label));
""",
    # issue 22: what off-policy replay needs of a routed request; feedback provenance and rating scale
    2: """
ALTER TABLE requests ADD COLUMN IF NOT EXISTS routing_text TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS candidates TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS chosen TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS propensity DOUBLE PRECISION;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS propensities TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS router_version TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS policy_version TEXT;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS lam DOUBLE PRECISION;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS beta DOUBLE PRECISION;
ALTER TABLE requests ADD COLUMN IF NOT EXISTS explore TEXT;
ALTER TABLE feedback ADD COLUMN IF NOT EXISTS source TEXT;
ALTER TABLE feedback ADD COLUMN IF NOT EXISTS raw_score DOUBLE PRECISION;
ALTER TABLE feedback ADD COLUMN IF NOT EXISTS scale TEXT;
""",
    # issue 27: the latency weight lambda_t a routed request was decided at (NULL before: lambda_t = 0)
    3: """
ALTER TABLE requests ADD COLUMN IF NOT EXISTS lam_t DOUBLE PRECISION;
""",
}


def is_postgres_url(url: str | None) -> bool:
    return isinstance(url, str) and url.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _driver():
    try:
        import psycopg
    except ImportError:
        raise ConfigError("a PostgreSQL state needs psycopg: pip install 'caproute[postgres]'") from None
    return psycopg


def connect(url: str, *, timeout_s: float = 5.0):
    """An autocommit connection with ``search_path`` = caproute and dict rows (raises psycopg errors)."""
    psycopg = _driver()
    from psycopg.rows import dict_row

    return psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout_s)), row_factory=dict_row,
                           options=f"-c search_path={SCHEMA}")


def prepare(url: str) -> str:
    """Create or migrate caproute's schema in the database at ``url``; its state id. ConfigError when
    the database cannot be reached, refuses us, or holds a schema of a newer caproute."""
    psycopg = _driver()
    try:
        con = connect(url)
    except psycopg.Error as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot connect to the PostgreSQL state {redact(url)}: {msg} "
                          "(is the server running, the database created, the user allowed?) (--state)") from None
    try:
        con.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            tables = {r["table_name"] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (SCHEMA,))}
            if tables and "meta" not in tables:
                raise ConfigError(f"{redact(url)}: its schema '{SCHEMA}' holds tables {sorted(tables)[:5]} that "
                                  "caproute did not create; give another database (--state)")
            version = 0
            if "meta" in tables:
                row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                version = int(row["value"]) if row else 0
            if version > SCHEMA_VERSION:
                raise ConfigError(f"{redact(url)}: caproute state schema version {version}, this caproute "
                                  f"knows up to {SCHEMA_VERSION}; upgrade caproute (--state)")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                with con.transaction():
                    con.execute(MIGRATIONS[v])
                    con.execute("INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(v),))
            con.execute("INSERT INTO meta (key, value) VALUES ('store_id', %s) ON CONFLICT (key) DO NOTHING",
                        (uuid.uuid4().hex,))
            return str(con.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()["value"])
        finally:
            con.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    except psycopg.Error as e:
        raise ConfigError(f"{redact(url)}: cannot prepare the caproute schema: {str(e).strip()[:300]} "
                          "(--state)") from None
    finally:
        con.close()


class Session:
    """A connection that reconnects: after the server restarted or the network broke, the next
    call opens a new one (and raises the driver's OperationalError while the server is down).
    Not thread-safe by itself; :meth:`run` serialises callers."""

    def __init__(self, url: str, timeout_s: float = 5.0):
        self.url, self.timeout_s = url, timeout_s
        self._con = None
        self._lock = threading.RLock()
        self.reconnects = 0

    def conn(self):
        if self._con is None or self._con.closed or self._con.broken:
            self.reset()
            self._con = connect(self.url, timeout_s=self.timeout_s)
            self.reconnects += 1
        return self._con

    def reset(self) -> None:
        if self._con is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                self._con.close()
        self._con = None

    # the sqlite3-like surface FeedbackStore and RequestLog use
    def execute(self, sql: str, params=None):
        try:
            return self.conn().execute(sql, params)
        except _driver().OperationalError:
            if self._con is not None and (self._con.closed or self._con.broken):
                self.reset()
            raise

    def cursor(self):
        return self.conn().cursor()

    def close(self) -> None:
        self.reset()

    def run(self, fn):
        """``fn(connection)`` under the lock; a lost connection is dropped (the next call reconnects)."""
        with self._lock:
            try:
                return fn(self.conn())
            except _driver().OperationalError:
                self.reset()
                raise


def retry_transient(fn, *, deadline_s: float, what: str, log):
    """Call ``fn()`` until it does not raise OperationalError or ``deadline_s`` passed (then re-raise)."""
    psycopg = _driver()
    end, delay = time.monotonic() + deadline_s, 0.05
    while True:
        try:
            return fn()
        except psycopg.OperationalError as e:
            if time.monotonic() >= end:
                raise
            log.warning("%s: the PostgreSQL state is unavailable (%s); retrying", what, str(e).strip()[:200])
            time.sleep(delay)
            delay = min(2 * delay, 1.0)
