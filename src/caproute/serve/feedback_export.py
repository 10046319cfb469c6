"""Production feedback back into supervision (``caproute feedback export``).

Inputs: the server's feedback store (``--feedback-db``, SQLite) and, for the text of what was
asked and answered, its opt-in request log (``--log-store``). Duel answers carry their routing
text in the feedback store, so duel feedback exports without a log.

- Scalar feedback -> observations in the canonical schema: one row per feedback, dataset
  ``--dataset`` (default ``feedback``), split ``train``, ``prompt_variant_id = -1``,
  ``observation_type = decoding_variation`` and ``decode_id`` = the rank of the feedback among
  those on the same (query, model) in store order, so repeated ratings of a query's answers
  become DARS's repeated observations (mean, spread) and a re-export adds only new rows. The
  query id is the one ``caproute collect --queries`` gives the same conversation in chat format
  (``chat-`` + SHA-256 of context and last user message), so logged traffic and collected
  observations line up. ``cost`` is the served answer's cost (``cost_known`` false when the
  proxy estimated it).
- Pairwise feedback -> preference rows in the PandaLM-style pairs format that ``caproute duel``
  and ``caproute duel init`` read (``instruction, input, model_1, model_2, human_majority`` with
  1 = model_1's answer preferred, 0 = tie; here model_1 is the winner), plus, with
  ``primary``/``alternative``, a judge file (``query_id, label``: 1 = primary better,
  2 = alternative better, 0 = tie; several comparisons of a query are summed to their sign) for
  ``caproute meta --judge-file`` as the biased preference source. Comparisons of a model with
  itself carry no preference between models and are skipped (counted).

- Provenance: every observation carries ``score_source``: ``user`` (a rating through
  ``/v1/feedback``, on any declared scale, already mapped to [0, 1] by
  :func:`caproute.data.ratings.rating_to_unit`), ``judge`` (``serve --judge-sample``: a shadow
  judge's grade) or ``duel`` (a pairwise verdict between two different models: the winner's answer
  scores 1, the loser's 0, a tie 0.5 each). ``sources`` keeps only some; the ``decode_id`` rank
  runs over every kept row of a (query, model) in store order, so the sources never collide.
- The replay log (``replay_log``; docs/replay.md's format, read by ``caproute replay --log``): one
  row per routed request that was logged with its routing record (``serve --log-store``; the
  candidates, the drawn model and its propensity, the lambda / beta / lambda_t it was routed at:
  lambda_t 0 for rows logged before the request log had it) and has an outcome, the reward being the score of
  the first source of ``reward_sources`` (default user, then judge, then duel) that rated its
  answer. Requests answered by a fallback model (not the one the policy drew: its probability is
  not the logged one) and requests without feedback are counted and left out.

Feedback whose response was not logged (no ``--log-store`` at serve time) is counted and skipped.
One rating per (response, API key) and one comparison per (pair, key) count, the latest: the
store keeps it so, and stores written before it did are read the same way. Text follows
:mod:`caproute.data.text` (a lone surrogate in a logged message becomes U+FFFD).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from caproute.data.text import clean_text
from caproute.errors import DataError

DEFAULT_DATASET = "feedback"
SOURCES = ("user", "judge", "duel")  # = caproute.data.schema.SCORE_SOURCES
DUEL_SCORE = {"win": 1.0, "loss": 0.0, "tie": 0.5}  # a duel verdict as two observations (PROPOSED)


@dataclass
class ExportReport:
    scalar_feedback: int = 0
    pairwise_feedback: int = 0
    observations: int = 0
    observations_written: int = 0
    #: of the observations written to the store: new keys, and keys already there (a re-run)
    observations_new: int = 0
    observations_present: int = 0
    pairs: int = 0
    judge_rows: int = 0
    skipped_not_logged: int = 0
    skipped_same_model: int = 0
    skipped_other_models: int = 0
    #: observations per score_source
    by_source: dict = field(default_factory=dict)
    #: the replay log: rows written; requests left out and why
    replay_rows: int = 0
    replay_skipped: dict = field(default_factory=dict)
    replay_explored: bool = False
    outputs: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def read_feedback(feedback_db: str | os.PathLike) -> pd.DataFrame:
    """Every feedback row with its response(s), in store order (read-only), the latest one per
    (kind, response or unordered pair of responses, key) only."""
    from caproute.serve.sqlite_files import read_query

    cols = read_query(feedback_db, "SELECT name FROM pragma_table_info('feedback')", table="feedback",
                      what="feedback store")["name"].tolist()
    key = "f.key_id" if "key_id" in cols else "NULL"  # stores of before idempotent feedback
    source = "COALESCE(f.source, 'user')" if "source" in cols else "'user'"  # stores of before provenance
    fb = read_query(
        feedback_db,
        f"""SELECT f.rowid AS seq, f.feedback_id, f.kind, f.response_id, f.other_response_id, f.score, f.tie,
                  {key} AS key_id, {source} AS source, a.kind AS a_kind, a.model AS a_model, a.routing_text AS a_text,
                  a.decision AS a_decision, b.model AS b_model, b.routing_text AS b_text,
                  b.decision AS b_decision
           FROM feedback f JOIN responses a ON a.response_id = f.response_id
           LEFT JOIN responses b ON b.response_id = f.other_response_id ORDER BY f.rowid""",
        table="feedback", what="feedback store")
    if not len(fb):
        return fb
    a, b = fb["response_id"].to_numpy(dtype=str), fb["other_response_id"].fillna("").to_numpy(dtype=str)
    lo, hi = np.where(a < b, a, b), np.where(a < b, b, a)
    who = pd.DataFrame({"kind": fb["kind"], "lo": lo, "hi": hi, "key": fb["key_id"].fillna("\x00")})
    return fb[~who.duplicated(keep="last").to_numpy()].reset_index(drop=True)


def _conversation(messages_json: str | None, fallback_text: str | None) -> dict | None:
    """{query_id, question, context} of a logged request (chat format), or of a duel's routing text."""
    from caproute.collect.queries import chat_query

    if messages_json:
        try:
            q = chat_query(json.loads(messages_json))  # chat_query repairs the text
            return {"query_id": q["query_id"], "question": q["question"], "context": q["context"]}
        except (DataError, json.JSONDecodeError):
            pass
    if fallback_text:
        return chat_query([{"role": "user", "content": fallback_text}])
    return None


def _log_row(log, response_id):
    return log.loc[response_id] if log is not None and response_id in log.index else None


def _served_cost(lg, decision) -> tuple[float | None, bool]:
    """(USD, known) of a served answer: the request log's cost, else the registration's spend."""
    if lg is not None and lg["cost_usd"] is not None and not pd.isna(lg["cost_usd"]):
        return float(lg["cost_usd"]), not bool(lg["cost_estimated"])
    if isinstance(decision, str) and decision.startswith("{"):
        spend = json.loads(decision).get("spend_usd")
        return (float(spend) if spend is not None else None), False
    return None, False


def _observation(dataset, conv, model, score, source, lg, decision, seq) -> dict:
    cost, known = _served_cost(lg, decision)
    return {
        "dataset": dataset, "split": "train", "query_id": conv["query_id"], "model": model,
        "prompt_variant_id": -1, "observation_type": "decoding_variation", "score": float(score),
        "cost": 0.0 if cost is None else cost, "cost_known": known and cost is not None,
        "question": conv["question"], "context": conv["context"],
        "response_text": None if lg is None or not isinstance(lg["answer"], str) else clean_text(lg["answer"]),
        "input_tokens": None if lg is None else _int(lg["prompt_tokens"]),
        "output_tokens": None if lg is None else _int(lg["completion_tokens"]), "score_source": source, "_seq": seq,
    }


def feedback_observations(fb: pd.DataFrame, requests: pd.DataFrame | None, dataset: str = DEFAULT_DATASET,
                          sources=SOURCES) -> tuple[pd.DataFrame, int]:
    """Observations from the feedback rows of ``fb`` whose source is in ``sources`` (see the
    module docstring); returns (observations, number skipped because the response was not logged)."""
    bad = sorted(set(sources) - set(SOURCES))
    if bad:
        raise DataError(f"unknown feedback sources {bad} (known: {list(SOURCES)})", source="arguments")
    log = requests.set_index("response_id") if requests is not None and len(requests) else None
    rows, skipped = [], 0
    for r in fb[fb["kind"] == "scalar"].itertuples(index=False):
        if r.source not in sources:
            continue
        lg = _log_row(log, r.response_id)
        conv = _conversation(None if lg is None else lg["messages"], r.a_text)
        if conv is None:
            skipped += 1
            continue
        rows.append(_observation(dataset, conv, r.a_model, r.score, r.source, lg, r.a_decision, r.seq))
    if "duel" in sources:
        for r in fb[fb["kind"] == "pairwise"].itertuples(index=False):
            if r.a_model == r.b_model:
                continue  # no preference between models (counted with the pairs)
            la, lb = _log_row(log, r.response_id), _log_row(log, r.other_response_id)
            conv = _conversation(None if la is None else la["messages"], r.a_text)
            if conv is None:
                skipped += 1
                continue
            win, lose = (DUEL_SCORE["tie"], DUEL_SCORE["tie"]) if r.tie else (DUEL_SCORE["win"], DUEL_SCORE["loss"])
            rows.append(_observation(dataset, conv, r.a_model, win, "duel", la, r.a_decision, r.seq))
            rows.append(_observation(dataset, conv, r.b_model, lose, "duel", lb, r.b_decision, r.seq))
    if not rows:
        return pd.DataFrame(), skipped
    obs = pd.DataFrame(rows).sort_values("_seq", kind="stable")
    obs["decode_id"] = obs.groupby(["query_id", "model"]).cumcount()
    return obs.drop(columns="_seq").reset_index(drop=True), skipped


def _int(v):
    return None if v is None or pd.isna(v) else int(v)


def feedback_pairs(fb: pd.DataFrame, requests: pd.DataFrame | None) -> tuple[pd.DataFrame, int, int]:
    """PandaLM-style preference rows from the pairwise feedback; returns (pairs, not logged, same model)."""
    log = requests.set_index("response_id") if requests is not None and len(requests) else None
    rows, not_logged, same = [], 0, 0
    for r in fb[fb["kind"] == "pairwise"].itertuples(index=False):
        lg = log.loc[r.response_id] if log is not None and r.response_id in log.index else None
        conv = _conversation(None if lg is None else lg["messages"], r.a_text)
        if conv is None:
            not_logged += 1
            continue
        if r.a_model == r.b_model:
            same += 1
            continue
        rows.append({"query_id": conv["query_id"], "instruction": conv["question"], "input": conv["context"] or "",
                     "model_1": r.a_model, "model_2": r.b_model, "human_majority": 0 if r.tie else 1,
                     "source": "feedback", "feedback_id": r.feedback_id})
    cols = ["query_id", "instruction", "input", "model_1", "model_2", "human_majority", "source", "feedback_id"]
    return pd.DataFrame(rows, columns=cols), not_logged, same


def request_outcomes(fb: pd.DataFrame, reward_sources=SOURCES) -> dict[str, tuple[float, str]]:
    """{response_id: (reward, source)}: per answer, the score of the first source in ``reward_sources``
    that rated it (several ratings of one source: their mean); duel verdicts give 1 / 0 / 0.5."""
    per: dict[str, dict[str, list[float]]] = {}
    for r in fb.itertuples(index=False):
        if r.kind == "scalar":
            per.setdefault(r.response_id, {}).setdefault(r.source, []).append(float(r.score))
        elif r.a_model != r.b_model:
            win, lose = (DUEL_SCORE["tie"], DUEL_SCORE["tie"]) if r.tie else (DUEL_SCORE["win"], DUEL_SCORE["loss"])
            per.setdefault(r.response_id, {}).setdefault("duel", []).append(win)
            per.setdefault(r.other_response_id, {}).setdefault("duel", []).append(lose)
    out = {}
    for rid, by in per.items():
        src = next((x for x in reward_sources if x in by), None)
        if src is not None:
            out[rid] = (float(np.mean(by[src])), src)
    return out


def replay_log_rows(fb: pd.DataFrame, requests: pd.DataFrame | None, reward_sources=SOURCES
                    ) -> tuple[list[dict], dict[str, int]]:
    """The rows of docs/replay.md's request log from the proxy's request log and feedback (see the
    module docstring); returns (rows, {reason: requests left out})."""
    bad = sorted(set(reward_sources) - set(SOURCES))
    if bad or not reward_sources:
        raise DataError(f"reward sources must be some of {list(SOURCES)}, got {list(reward_sources)}",
                        source="arguments")
    skipped = {"not_routed": 0, "no_routing_record": 0, "fallback": 0, "no_feedback": 0}
    if requests is None or not len(requests):
        return [], skipped
    outcomes = request_outcomes(fb, reward_sources)
    has_routing = "propensity" in requests.columns
    rows = []
    for r in requests.itertuples(index=False):
        if r.kind != "chat":
            skipped["not_routed"] += 1
            continue
        if not has_routing or r.propensity is None or pd.isna(r.propensity) or not isinstance(r.candidates, str):
            skipped["no_routing_record"] += 1  # logged before the routing columns existed
            continue
        if r.chosen != r.model:
            skipped["fallback"] += 1  # served by a fallback: not the drawn model, whose propensity is logged
            continue
        if r.response_id not in outcomes:
            skipped["no_feedback"] += 1
            continue
        reward, src = outcomes[r.response_id]
        cost = None if r.cost_usd is None or pd.isna(r.cost_usd) else float(r.cost_usd)
        rows.append({
            "request_id": r.response_id, "query": r.routing_text, "candidates": json.loads(r.candidates),
            "chosen": r.chosen, "propensity": float(r.propensity),
            "propensities": json.loads(r.propensities) if isinstance(r.propensities, str) else None,
            "reward": reward, "reward_source": src, "policy_version": _text(r.policy_version), "router": _text(r.router),
            "router_version": _text(r.router_version), "lambda": _float(r.lam), "beta": _float(r.beta),
            # routed before the request log had lam_t (column absent or NULL): at lambda_t = 0
            "lambda_t": _float(getattr(r, "lam_t", None)) or 0.0,
            "explore": json.loads(r.explore) if isinstance(r.explore, str) else None, "cost_usd": cost,
            "created": float(r.created),
        })
    return rows, skipped


def _float(v):
    return None if v is None or pd.isna(v) else float(v)


def _text(v):
    """A text column's value, None where the log has NULL (pandas reads it as NaN or None)."""
    return None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)


def judge_file_rows(pairs: pd.DataFrame, primary: str, alternative: str) -> tuple[pd.DataFrame, int]:
    """``query_id, label`` (1 primary better, 2 alternative better, 0 tie) from preference rows of the
    two models; several comparisons of one query are summed to their sign. Returns (rows, other rows)."""
    sel = ((pairs["model_1"] == primary) & (pairs["model_2"] == alternative)) | (
        (pairs["model_1"] == alternative) & (pairs["model_2"] == primary))
    sub = pairs[sel]
    sign = np.where(sub["human_majority"].to_numpy() == 0, 0, np.where(sub["model_1"].to_numpy() == primary, 1, -1))
    agg = pd.Series(sign, index=sub["query_id"].to_numpy()).groupby(level=0).sum()
    label = np.where(agg.to_numpy() > 0, 1, np.where(agg.to_numpy() < 0, 2, 0))
    return pd.DataFrame({"query_id": agg.index.astype(str), "label": label}), int((~sel).sum())


def export_feedback(feedback_db: str | os.PathLike, *, log_store: str | os.PathLike | None = None,
                    dataset: str = DEFAULT_DATASET, store: str | os.PathLike | None = None,
                    observations: str | os.PathLike | None = None, pairs: str | os.PathLike | None = None,
                    judge_file: str | os.PathLike | None = None, primary: str | None = None,
                    alternative: str | None = None, sources=SOURCES, replay_log: str | os.PathLike | None = None,
                    reward_sources=SOURCES) -> ExportReport:
    """Write the exports asked for (each atomically; the store in one transaction). ``sources``:
    the score sources exported as observations; ``replay_log``: docs/replay.md's request log (JSONL),
    the reward taken from the first of ``reward_sources`` that rated each answer."""
    from caproute.data.atomic import atomic_file, write_parquet
    from caproute.serve.log_store import read_requests

    if judge_file is not None and (primary is None or alternative is None):
        raise DataError("--judge-file needs --primary and --alternative", source="arguments")
    if not any(x is not None for x in (store, observations, pairs, judge_file, replay_log)):
        raise DataError("nothing to export: pass --store, --observations, --pairs, --judge-file and/or --replay-log",
                        source="arguments")
    if replay_log is not None and log_store is None:
        raise DataError("--replay-log needs --log-store: the request log holds the routing records",
                        source="arguments")
    fb = read_feedback(feedback_db)
    requests = read_requests(log_store) if log_store is not None else None
    rep = ExportReport(scalar_feedback=int((fb["kind"] == "scalar").sum()),
                       pairwise_feedback=int((fb["kind"] == "pairwise").sum()))
    if store is not None or observations is not None:
        obs, skipped = feedback_observations(fb, requests, dataset, sources)
        rep.observations, rep.skipped_not_logged = len(obs), skipped
        if len(obs):
            rep.by_source = {k: int(v) for k, v in obs["score_source"].value_counts().sort_index().items()}
        if len(obs):
            from caproute.data.validate import canonicalize

            canon = canonicalize(obs, source=str(feedback_db))
            if observations is not None:
                write_parquet(canon, observations)
                rep.outputs["observations"] = str(observations)
            if store is not None:
                from caproute.data.store import ObservationStore

                with ObservationStore(store) as s:
                    new, present = s.merge(canon, source=f"feedback:{feedback_db}")
                rep.observations_written, rep.observations_new, rep.observations_present = new + present, new, present
                rep.outputs["store"] = str(store)
    if pairs is not None or judge_file is not None:
        pr, not_logged, same = feedback_pairs(fb, requests)
        rep.pairs, rep.skipped_same_model = len(pr), same
        rep.skipped_not_logged += not_logged
        if pairs is not None:
            write_parquet(pr, pairs)
            rep.outputs["pairs"] = str(pairs)
        if judge_file is not None:
            jf, other = judge_file_rows(pr, primary, alternative)
            rep.judge_rows, rep.skipped_other_models = len(jf), other
            with atomic_file(judge_file) as tmp:
                jf.to_csv(tmp, index=False)
            rep.outputs["judge_file"] = str(judge_file)
    if replay_log is not None:
        rows, rep.replay_skipped = replay_log_rows(fb, requests, reward_sources)
        rep.replay_rows = len(rows)
        rep.replay_explored = any(r["propensity"] < 1 for r in rows)
        with atomic_file(replay_log) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        rep.outputs["replay_log"] = str(replay_log)
    return rep
