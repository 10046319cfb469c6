"""Copy a server's SQLite files into a PostgreSQL state (``caproute serve-migrate``): the feedback
store's registrations and feedback (in their log order), the request log and the sticky map.

Idempotent: rows already in PostgreSQL (same response id, feedback id, conversation) are kept and
counted as skipped, so a migration can be run again after the old server wrote more. The duel
policy is not replayed: serve the SQLite server's online checkpoint (``--duel-state-out``) as the
``--duel-policy`` of the replicas; its history already holds every duel it learned.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from caproute.errors import ConfigError
from caproute.serve.feedback import FEEDBACK_FIELDS, RESPONSE_FIELDS
from caproute.serve.log_store import FIELDS as LOG_FIELDS
from caproute.serve.sqlite_files import check_sqlite_path
from caproute.serve.stores import pg


@dataclass
class MigrationReport:
    copied: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return ", ".join(f"{t}: {self.copied[t]} copied, {self.skipped[t]} already there" for t in self.copied)


def _rows(path: Path, sql: str, table: str, what: str, fields: tuple[str, ...] | None = None) -> list[tuple]:
    """Rows of ``sql``; with ``fields``, ``SELECT {fields}`` with NULL for the columns an older
    file lacks (a store or log written before a schema migration)."""
    check_sqlite_path(path, what=what, flag="--feedback-db")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if table not in tables:
            raise ConfigError(f"{path}: not a caproute {what} (no '{table}' table)")
        if fields is not None:
            have = {r[1] for r in con.execute(f"PRAGMA table_info({table})")}
            sql = sql.replace("{fields}", ", ".join(f if f in have else f"NULL AS {f}" for f in fields))
        return con.execute(sql).fetchall()
    except sqlite3.Error as e:
        raise ConfigError(f"{path}: cannot read the {what}: {e}") from None
    finally:
        con.close()


def migrate_sqlite(url: str, feedback_db, log_store=None, sticky_db=None, batch: int = 1000) -> MigrationReport:
    """Copy the SQLite state into the PostgreSQL state at ``url`` (schema created if needed)."""
    pg.prepare(url)
    feedback_db = Path(feedback_db)
    if not feedback_db.is_file():
        raise ConfigError(f"{feedback_db}: no such feedback store (--feedback-db)")
    jobs = [("responses", RESPONSE_FIELDS, "response_id",
             _rows(feedback_db, f"SELECT {', '.join(RESPONSE_FIELDS)} FROM responses ORDER BY rowid", "responses",
                   "feedback store")),
            ("feedback", FEEDBACK_FIELDS, "feedback_id",
             _rows(feedback_db, "SELECT {fields} FROM feedback ORDER BY rowid", "feedback",
                   "feedback store", FEEDBACK_FIELDS))]
    if log_store is not None:
        jobs.append(("requests", LOG_FIELDS, "response_id",
                     _rows(Path(log_store), "SELECT {fields} FROM requests ORDER BY rowid",
                           "requests", "request log", LOG_FIELDS)))
    sticky_db = Path(sticky_db) if sticky_db is not None else Path(f"{feedback_db}.sticky")
    if sticky_db.is_file():
        jobs.append(("sticky", ("conv", "router", "model", "t"), "conv, router",
                     _rows(sticky_db, "SELECT conv, router, model, t FROM sticky ORDER BY t", "sticky", "sticky map")))
    report = MigrationReport()
    con = pg.connect(url)
    try:
        for table, fields, key, rows in jobs:
            sql = (f"INSERT INTO {table} ({', '.join(fields)}) VALUES ({', '.join(['%s'] * len(fields))}) "
                   f"ON CONFLICT ({key}) DO NOTHING")
            copied = 0
            with con.transaction():
                cur = con.cursor()
                for i in range(0, len(rows), batch):
                    for r in rows[i:i + batch]:
                        cur.execute(sql, r)
                        copied += cur.rowcount
            report.copied[table], report.skipped[table] = copied, len(rows) - copied
    finally:
        con.close()
    return report
