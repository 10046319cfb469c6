"""The queries file a collection runs on: one query per row with its gold answer.

Columns: ``query_id`` (or ``id``), ``question``, ``answer``; optional ``context`` (passage) and
``split`` (``train``/``test``; otherwise assigned with ``--test-fraction``). JSONL, CSV or Parquet.

Also read (detected from the fields):

- OpenAI chat-format JSONL, one ``{"messages": [...]}`` per line (as exported by OpenAI, LiteLLM
  or OpenRouter logs; other fields are ignored): the LAST user message is the question, the turns
  before it are the context (``role: text`` lines), and an assistant reply after it, when the log
  has one, is the reference answer (else the answer is empty: judge scorers need none). The query
  id is ``chat-`` + the first 16 hex digits of SHA-256(context, question), so duplicate
  conversations collapse to one query (first occurrence kept). A line without a user message is
  a :class:`~caproute.errors.DataError` naming the file, line and field.
- HumanEval (``task_id, prompt, test, entry_point``) and MBPP (``task_id, text, test_list``,
  optional ``test_setup_code``) files: the answer becomes a code-exec task definition
  (:mod:`caproute.collect.code_exec`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from caproute.errors import DataError

QUERY_COLUMNS = ("query_id", "split", "question", "context", "answer")


def stable_int(*parts, bits: int = 31) -> int:
    """A deterministic non-negative integer from ``parts`` (seeds and splits survive restarts)."""
    h = hashlib.sha256("||".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") % (1 << bits)


def assign_splits(query_ids: pd.Series, fraction: float, seed: int) -> pd.Series:
    """``test`` for a deterministic pseudo-random ``fraction`` of queries (exact count), else ``train``."""
    if not 0 < fraction < 1:
        raise DataError(
            f"--test-fraction must be in (0, 1), got {fraction}", source="arguments", field="test_fraction"
        )
    n_test = int(round(fraction * len(query_ids)))
    order = sorted(range(len(query_ids)), key=lambda i: stable_int("split", seed, query_ids.iloc[i]))
    split = pd.Series(["train"] * len(query_ids), index=query_ids.index)
    split.iloc[order[:n_test]] = "test"
    return split


def _read(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of a queries file and their line numbers, through the data layer's readers (bad bytes,
    bad JSON, NaN/Infinity and lone surrogates are named by file, line and field)."""
    from caproute.data.formats import read_csv_frame, read_jsonl_records, read_parquet_frame

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df = read_parquet_frame(path)
        return df, np.arange(1, len(df) + 1)
    if suffix == ".csv":
        df, lines = read_csv_frame(path, what="queries")
        return df.fillna(""), lines
    if suffix in (".jsonl", ".json", ".ndjson"):
        records, lines = read_jsonl_records(path)
        return pd.DataFrame.from_records(records), lines
    raise DataError("unknown queries format (use .jsonl, .csv or .parquet)", source=str(path))


def _message_text(content, source: str, line: int, where: str) -> str:
    """Text of an OpenAI message ``content``: a string, or a list of parts (text parts joined; a
    dict part without ``type`` is text)."""
    from caproute.data.text import content_text

    text = content_text(content, untyped_parts=True)
    if text is not None:
        return text
    raise DataError(f"content must be a string or a list of parts, got {type(content).__name__}",
                    source=source, row=line, field=where)


def chat_query(messages, *, source: str = "<chat>", line: int | None = None) -> dict:
    """One chat-format conversation as a query: ``{query_id, question, context, answer}`` (pure).

    Text follows caproute's one rule (:func:`caproute.data.text.clean_json`): a lone surrogate in a
    chat log (``"\\ud800"``) becomes U+FFFD, so the query can be hashed, stored and exported."""
    from caproute.data.text import clean_json

    messages = clean_json(messages)
    if not isinstance(messages, list) or not messages:
        raise DataError("'messages' must be a non-empty list of {role, content} objects",
                        source=source, row=line, field="messages")
    turns = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise DataError("each message must be an object with a string 'role'", source=source, row=line,
                            field=f"messages[{k}].role")
        turns.append((m["role"], _message_text(m.get("content"), source, line, f"messages[{k}].content")))
    users = [k for k, (role, text) in enumerate(turns) if role == "user" and text.strip()]
    if not users:
        raise DataError("no user message with text (the last user message is the query)",
                        source=source, row=line, field="messages")
    last = users[-1]
    question = turns[last][1]
    context = "\n".join(f"{role}: {text}" for role, text in turns[:last] if text.strip()) or None
    reply = next((text for role, text in turns[last + 1:] if role == "assistant" and text.strip()), "")
    qid = "chat-" + hashlib.sha256(f"{context or ''}\x1f{question}".encode()).hexdigest()[:16]
    return {"query_id": qid, "question": question, "context": context, "answer": reply}


def _read_chat(path: Path) -> pd.DataFrame | None:
    """Chat-format JSONL as query rows (duplicates collapsed), or None when the file is not chat format."""
    from caproute.data.formats import read_jsonl_records

    records, lines = read_jsonl_records(path)
    if not records or "messages" not in records[0]:
        return None
    rows = []
    for obj, i in zip(records, lines, strict=True):
        if "messages" not in obj:
            raise DataError("chat-format file: every line needs 'messages'", source=str(path), row=int(i),
                            field="messages")
        q = chat_query(obj["messages"], source=str(path), line=int(i))
        if isinstance(obj.get("split"), str) and obj["split"].strip():
            q["split"] = obj["split"].strip()
        q["_line"] = int(i)
        rows.append(q)
    df = pd.DataFrame(rows)
    return df.drop_duplicates("query_id", keep="first").reset_index(drop=True)


def _from_code_benchmark(df: pd.DataFrame) -> pd.DataFrame | None:
    """HumanEval / MBPP rows as queries whose answer is a code-exec task definition; None otherwise."""
    cols = set(df.columns)
    if "question" in cols:
        return None
    if {"task_id", "prompt", "test", "entry_point"} <= cols:  # HumanEval
        answers = [json.dumps({"tests": t, "entry_point": e, "prompt": pr})
                   for t, e, pr in zip(df["test"], df["entry_point"], df["prompt"], strict=True)]
        return pd.DataFrame({"query_id": df["task_id"].astype(str), "question": df["prompt"].astype(str),
                             "answer": answers})
    if {"task_id", "text", "test_list"} <= cols:  # MBPP
        setup = df["test_setup_code"] if "test_setup_code" in cols else [""] * len(df)
        tests = ["\n".join(list(t)) for t in df["test_list"]]
        answers = [json.dumps({"tests": t, "setup": s} if s else {"tests": t}) for t, s in zip(tests, setup, strict=True)]
        questions = [f"{text}\nYour code should pass these tests:\n{t}" for text, t in zip(df["text"], tests, strict=True)]
        return pd.DataFrame({"query_id": df["task_id"].astype(str), "question": questions, "answer": answers})
    return None


def load_queries(path: str | os.PathLike, *, split_test: float | None = None, seed: int = 0) -> pd.DataFrame:
    """Validated queries with columns :data:`QUERY_COLUMNS` (errors name the file, line and field)."""
    p = Path(path)
    if not p.is_file():
        raise DataError("queries file not found", source=str(p))
    from caproute.data.validate import number_values, text_values

    chat = _read_chat(p) if p.suffix.lower() in (".jsonl", ".json", ".ndjson") else None
    if chat is not None:
        df, lines = chat.drop(columns="_line"), chat["_line"].to_numpy()
    else:
        df, lines = _read(p)
    if len(df) == 0:
        raise DataError("no queries (empty file)", source=str(p))
    code = _from_code_benchmark(df)
    if code is not None:
        df = code
    if "query_id" not in df.columns and "id" in df.columns:
        df = df.rename(columns={"id": "query_id"})
    df = df.reset_index(drop=True)
    for col in ("query_id", "question", "answer"):
        if col not in df.columns:
            raise DataError("missing required column", source=str(p), field=col)
    # the shared validation layer: strings (ids may be integers), valid UTF-8, no empty keys
    src = str(p)
    qid = text_values(df["query_id"], lines, src, "query_id", key=True)
    question = text_values(df["question"], lines, src, "question", key=True)
    blank = question.astype(str).str.strip() == ""
    if blank.any():
        raise DataError("empty value", source=src, row=int(lines[int(blank.to_numpy().argmax())]), field="question")
    answer_col = df["answer"]
    numeric = answer_col.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool))
    if numeric.any():   # a JSON answer may be a number (7, 3.5): finite, kept as its text
        nums = number_values(answer_col[numeric], lines[numeric.to_numpy()], src, "answer")
        answer_col = answer_col.astype(object)
        answer_col[numeric] = [format(float(x), "g") if float(x) != int(x) else str(int(x)) for x in nums]
    answer = text_values(answer_col, lines, src, "answer", key=chat is None)
    if chat is not None:
        answer = answer.fillna("")  # chat logs: the reference answer is optional
    context = (text_values(df["context"], lines, src, "context", key=False) if "context" in df.columns
               else pd.Series([None] * len(df), dtype=object))
    out = pd.DataFrame({"query_id": qid.astype(str), "question": question.astype(str),
                        "answer": answer.astype(str)})
    # None (not NaN) where there is no context: a NaN would be rendered as the text "nan"
    out["context"] = pd.Series([c if isinstance(c, str) and c != "" else None for c in context],
                               index=out.index, dtype=object)
    dup = out["query_id"].duplicated(keep="first")
    if dup.any():
        i = int(dup.to_numpy().argmax())
        raise DataError(
            f"duplicate query_id '{out['query_id'].iloc[i]}'",
            source=str(p),
            row=int(lines[i]),
            field="query_id",
        )
    has_split = "split" in df.columns and (df["split"].astype(str).str.strip() != "").all()
    if has_split:
        split = df["split"].astype(str).str.strip()
        bad = ~split.isin(["train", "test"])
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise DataError(
                f"split must be train or test (got {split.iloc[i]!r})",
                source=str(p),
                row=int(lines[i]),
                field="split",
            )
        if split_test is not None:
            raise DataError(
                "the file has a split column; drop --test-fraction or the column", source=str(p), field="split"
            )
        out["split"] = split.to_numpy()
    elif split_test is not None:
        out["split"] = assign_splits(out["query_id"], split_test, seed).to_numpy()
    else:
        out["split"] = "train"
    return out[list(QUERY_COLUMNS)].reset_index(drop=True)
