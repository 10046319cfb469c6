"""The tables the collector keeps beside the observations in the same DuckDB file (issue 25: the
data layer owns every table's schema and SQL; the collector calls these functions).

- ``collect_queries``: the queries of a run with their gold answers (a query may not change);
- ``collect_rewrites`` and ``collect_rewrite_attempts``: accepted rewrites and every attempt;
- ``collect_score_details``: per observation, what a context scorer (judge, code-exec) saw and said.
"""

from __future__ import annotations

import pandas as pd

from caproute.errors import CaprouteError

REWRITES_TABLE = "collect_rewrites"
ATTEMPTS_TABLE = "collect_rewrite_attempts"
QUERIES_TABLE = "collect_queries"
DETAILS_TABLE = "collect_score_details"  # judge prompt/verdict/cost, code-exec outcome, per observation


def ensure_side_tables(con) -> None:
    con.execute(f"""CREATE TABLE IF NOT EXISTS {QUERIES_TABLE} (
        dataset VARCHAR NOT NULL, query_id VARCHAR NOT NULL, split VARCHAR NOT NULL, question VARCHAR NOT NULL,
        context VARCHAR, answer VARCHAR NOT NULL, task VARCHAR NOT NULL, PRIMARY KEY (dataset, query_id))""")
    con.execute(f"""CREATE TABLE IF NOT EXISTS {REWRITES_TABLE} (
        dataset VARCHAR NOT NULL, query_id VARCHAR NOT NULL, variant_id INTEGER NOT NULL, text VARCHAR NOT NULL,
        source VARCHAR NOT NULL, PRIMARY KEY (dataset, query_id, variant_id))""")
    con.execute(f"""CREATE TABLE IF NOT EXISTS {ATTEMPTS_TABLE} (
        dataset VARCHAR NOT NULL, query_id VARCHAR NOT NULL, variant_id INTEGER NOT NULL, attempt INTEGER NOT NULL,
        text VARCHAR, flags VARCHAR, similarity DOUBLE, accepted BOOLEAN, source VARCHAR, cost DOUBLE,
        PRIMARY KEY (dataset, query_id, variant_id, attempt))""")
    con.execute(f"""CREATE TABLE IF NOT EXISTS {DETAILS_TABLE} (
        dataset VARCHAR NOT NULL, split VARCHAR NOT NULL, query_id VARCHAR NOT NULL, model VARCHAR NOT NULL,
        prompt_variant_id INTEGER NOT NULL, decode_id INTEGER NOT NULL, observation_type VARCHAR NOT NULL,
        scorer VARCHAR NOT NULL, status VARCHAR NOT NULL, parsed BOOLEAN NOT NULL, score DOUBLE,
        scoring_cost DOUBLE, detail VARCHAR,
        PRIMARY KEY (dataset, split, query_id, model, prompt_variant_id, decode_id, observation_type))""")


def save_queries(con, dataset: str, task: str, queries: pd.DataFrame) -> None:
    """Record the queries (with gold answers) of a run; a query may not change between runs."""
    old = con.execute(
        f"SELECT query_id, split, question, answer FROM {QUERIES_TABLE} WHERE dataset = ?", [dataset]
    ).df()
    if len(old):
        merged = old.merge(
            queries[["query_id", "split", "question", "answer"]], on="query_id", suffixes=("_old", "")
        )
        for col in ("split", "question", "answer"):
            diff = merged[merged[f"{col}_old"] != merged[col]]
            if len(diff):
                raise CaprouteError(
                    f"query '{diff['query_id'].iloc[0]}' of dataset '{dataset}' has a different {col} than in "
                    f"the earlier run stored here ({diff[f'{col}_old'].iloc[0]!r} vs {diff[col].iloc[0]!r}); "
                    "use another --dataset or --store"
                )
    df = queries.assign(dataset=dataset, task=task)[
        ["dataset", "query_id", "split", "question", "context", "answer", "task"]
    ]
    con.register("_q", df)
    try:
        con.execute(f"INSERT INTO {QUERIES_TABLE} SELECT * FROM _q ON CONFLICT DO NOTHING")
    finally:
        con.unregister("_q")


def load_rewrites(con, dataset: str) -> dict[str, list[str]]:
    rows = con.execute(
        f"SELECT query_id, variant_id, text FROM {REWRITES_TABLE} WHERE dataset = ? "
        "ORDER BY query_id, variant_id",
        [dataset],
    ).fetchall()
    out: dict[str, list[str]] = {}
    for qid, _, text in rows:
        out.setdefault(qid, []).append(text)
    return out


def save_rewrites(con, dataset: str, query_id: str, result, start: int) -> None:
    """Persist new rewrites (variant ids from ``start``) and their attempts in one transaction
    (``result``: a :class:`caproute.collect.rewrite.RewriteResult`)."""
    rw = pd.DataFrame(
        {
            "dataset": dataset,
            "query_id": query_id,
            "variant_id": range(start, start + len(result.texts)),
            "text": result.texts,
            "source": result.sources,
        }
    )
    at = pd.DataFrame(
        [
            {
                "dataset": dataset,
                "query_id": query_id,
                "variant_id": a.variant_id,
                "attempt": a.attempt,
                "text": a.text,
                "flags": ",".join(a.flags),
                "similarity": a.similarity,
                "accepted": a.accepted,
                "source": a.source,
                "cost": a.cost,
            }
            for a in result.attempts
        ]
    )
    con.execute("BEGIN TRANSACTION")
    try:
        if len(rw):
            con.register("_rw", rw)
            con.execute(f"INSERT INTO {REWRITES_TABLE} SELECT * FROM _rw ON CONFLICT DO NOTHING")
            con.unregister("_rw")
        if len(at):
            con.register("_at", at)
            con.execute(f"INSERT INTO {ATTEMPTS_TABLE} SELECT * FROM _at ON CONFLICT DO NOTHING")
            con.unregister("_at")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def write_score_details(con, rows: list[dict]) -> None:
    """Insert or replace scorer details (one row per observation key)."""
    con.register("_det", pd.DataFrame(rows))
    try:
        con.execute(f"INSERT OR REPLACE INTO {DETAILS_TABLE} SELECT * FROM _det").fetchall()
    finally:
        con.unregister("_det")


def read_gold(con, dataset: str) -> pd.DataFrame:
    """``query_id`` and ``answer`` of a dataset's stored queries."""
    return con.execute(f"SELECT query_id, answer FROM {QUERIES_TABLE} WHERE dataset = ?", [dataset]).df()


def read_score_details(con, dataset: str) -> pd.DataFrame:
    return con.execute(f"SELECT * FROM {DETAILS_TABLE} WHERE dataset = ?", [dataset]).df()


def read_rewrite_attempts(con, dataset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every attempt in order, accepted rewrites counted by source) of a dataset."""
    at = con.execute(
        f"SELECT * FROM {ATTEMPTS_TABLE} WHERE dataset = ? ORDER BY query_id, attempt", [dataset]
    ).df()
    rw = con.execute(
        f"SELECT source, count(*) AS n FROM {REWRITES_TABLE} WHERE dataset = ? GROUP BY source", [dataset]
    ).df()
    return at, rw
