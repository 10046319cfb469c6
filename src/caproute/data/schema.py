"""The canonical observation schema (one scored generation per row).

Columns follow the DARS reference format (docs/data-format.md). One row is one observation
o = (prompt_variant_id, decode_id) of model ``model`` on query ``query_id``:

- ``prompt_variant_id``: rewrite index k = 0..K-1, or -1 for the original query.
- ``decode_id``: stochastic decode index r = 0..R-1.
- ``observation_type``: ``prompt_variation`` (a rewrite, the rewrite view at test time) or
  ``decoding_variation`` (a decode of the original query, the decode view). Test rows must carry
  one of these; training rows may carry any value (kept as given) or none (then inferred from
  ``prompt_variant_id``), as the DARS reference format allows.
- ``score``: task quality in [0, 1]; ``cost``: raw cost of this one generation (USD, >= 0).
- ``score_source`` (optional): who gave the score of served feedback (``user`` rating, shadow
  ``judge``, ``duel`` verdict; :data:`SCORE_SOURCES`), so supervision can filter or weight by it;
  null for collected observations (the task's scorer).
"""

from __future__ import annotations

from dataclasses import dataclass

KEY_COLUMNS: tuple[str, ...] = (
    "dataset", "split", "query_id", "model", "prompt_variant_id", "decode_id", "observation_type",
)
"""Primary key of an observation in the store."""

PAIR_COLUMNS: tuple[str, ...] = ("dataset", "query_id", "model")
"""A (query, model) pair within a dataset (the unit DARS summarises)."""

PROMPT_VARIATION = "prompt_variation"
DECODING_VARIATION = "decoding_variation"
OBSERVATION_TYPES: tuple[str, ...] = (PROMPT_VARIATION, DECODING_VARIATION)
OBSERVATION_TYPE_ALIASES = {"rewrite": PROMPT_VARIATION, "decode": DECODING_VARIATION}

SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class Column:
    name: str
    duckdb_type: str
    required: bool
    doc: str


COLUMNS: tuple[Column, ...] = (
    Column("dataset", "VARCHAR", True, "dataset name, e.g. gpqa"),
    Column("split", "VARCHAR", True, "train or test"),
    Column("query_id", "VARCHAR", True, "query key, unique within a dataset"),
    Column("model", "VARCHAR", True, "model id"),
    Column("prompt_variant_id", "INTEGER", True, "rewrite index, -1 = original query"),
    Column("decode_id", "INTEGER", True, "decode index"),
    Column("observation_type", "VARCHAR", True, "prompt_variation | decoding_variation (any value on training rows)"),
    Column("score", "DOUBLE", True, "quality in [0, 1]"),
    Column("cost", "DOUBLE", True, "raw cost of the generation (USD), >= 0"),
    Column("question", "VARCHAR", False, "original query text"),
    Column("context", "VARCHAR", False, "passage for reading comprehension"),
    Column("rewrite_text", "VARCHAR", False, "text of the rewrite this observation answered"),
    Column("response_text", "VARCHAR", False, "model output"),
    Column("input_tokens", "BIGINT", False, "prompt tokens"),
    Column("output_tokens", "BIGINT", False, "completion tokens"),
    Column("latency_s", "DOUBLE", False, "wall-clock seconds of the request"),
    Column("cost_known", "BOOLEAN", False, "false when the server reported no usage and cost is estimated"),
    Column("score_source", "VARCHAR", False,
           "who scored it, for served feedback: user | judge | duel (null: the collection's scorer)"),
)
#: optional columns added after the first store version: an older store gets them on open (NULL)
ADDED_COLUMNS: tuple[str, ...] = ("score_source",)
#: values of ``score_source`` (``caproute feedback export``); supervision may filter or weight by them
SCORE_SOURCES: tuple[str, ...] = ("user", "judge", "duel")
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
REQUIRED_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.required)
OPTIONAL_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if not c.required)
TEXT_COLUMNS = {"dataset", "split", "query_id", "model", "observation_type", "question", "context",
                "rewrite_text", "response_text", "score_source"}
INT_COLUMNS = {"prompt_variant_id", "decode_id", "input_tokens", "output_tokens"}
FLOAT_COLUMNS = {"score", "cost", "latency_s"}
BOOL_COLUMNS = {"cost_known"}

# Query-text fields of the reference format, in the order routers read them.
QUESTION_FIELDS: tuple[str, ...] = ("original_question", "input_question", "question", "prompt")
CONTEXT_FIELDS: tuple[str, ...] = ("context", "passage")
CONTEXT_CHARS = 1200


def feature_text(question: str, context: str | None = None) -> str:
    """The text routers featurise: ``context[:1200] + "\\nQuestion: " + question`` (reference code)."""
    if context:
        return f"{context[:CONTEXT_CHARS]}\nQuestion: {question}"
    return question
