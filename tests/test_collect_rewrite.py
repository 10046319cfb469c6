"""Rewrite validity checks (hand cases), the template fallback, and real MiniLM similarity."""

from __future__ import annotations

import numpy as np
import pytest

from caproute.collect.rewrite import (
    MiniLM,
    check_rewrite,
    clean_rewrite,
    numeric_tokens,
    rewrite_messages,
    template_rewrites,
)

Q = "How many minutes are in 2 hours?"


@pytest.mark.parametrize(
    "cand,kind,flags",
    [
        ("What is the number of minutes in 2 hours?", "math", []),
        ("", "math", ["empty"]),
        ("Minutes in 2 hours", "math", ["answers", "incomplete"]),  # no question mark: not a request
        ("How many?", "math", ["incomplete", "numbers"]),  # too short, number dropped
        ("How many minutes are in 2 hours?", "math", ["duplicate"]),
        ("how many minutes are in 2 hours", "math", ["answers", "duplicate", "incomplete"]),
        ("How many minutes are in 3 hours?", "math", ["numbers"]),
        ("Final Answer: 120 minutes are in 2 hours?", "math", ["numbers", "structure"]),
        ("How many minutes? And in 2 hours?", "math", ["structure"]),
    ],
)
def test_check_rewrite_flags(cand, kind, flags):
    assert check_rewrite(Q, cand, [], kind=kind) == flags


def test_number_order_matters_for_math_only():
    q = "What is 9 - 4?"
    assert check_rewrite(q, "What do you get from 4 - 9 then?", [], kind="math") == ["numbers"]
    assert check_rewrite(q, "What do you get from 4 - 9 then?", [], kind="short") == []


def test_duplicate_of_an_accepted_rewrite_and_truncation_and_similarity():
    acc = ["What is the number of minutes in 2 hours?"]
    assert check_rewrite(Q, "What is the number of minutes in 2 hours?", acc) == ["duplicate"]
    assert check_rewrite(Q, "In 2 hours, how many minutes pass?", acc, finish_reason="length") == [
        "incomplete"
    ]
    assert check_rewrite(Q, "In 2 hours, how many minutes pass?", acc, similarity=0.3) == ["similarity"]
    assert check_rewrite(Q, "In 2 hours, how many minutes pass?", acc, similarity=0.999) == ["similarity"]
    assert check_rewrite(Q, "In 2 hours, how many minutes pass?", acc, similarity=0.8) == []


def test_multiple_choice_options_must_stay():
    q = "Which is a fruit?\nA) apple\nB) chair"
    ok = "Which one of these is a fruit?\nA) apple\nB) chair"
    bad = "Which one of these is a fruit?\nA) pear\nB) chair"
    assert "structure" not in check_rewrite(q, ok, [], kind="multiple_choice")
    assert "structure" in check_rewrite(q, bad, [], kind="multiple_choice")


def test_numeric_tokens_and_clean():
    assert numeric_tokens("1,000 and 2 and 2.5 and 2") == {"1000": 1, "2": 2, "2.5": 1}
    assert clean_rewrite("Rewritten: How much is 2 plus 2?\nextra") == "How much is 2 plus 2?"
    assert clean_rewrite('  "What is it?"  ') == "What is it?"
    assert clean_rewrite("\n\n") == ""


def test_rewrite_prompt_ends_with_the_query_and_states_constraints():
    msgs = rewrite_messages("What is 3 + 4?", "math")
    assert msgs[-1] == {"role": "user", "content": "Rewrite: What is 3 + 4?"}
    assert "Keep every number" in msgs[0]["content"]


def test_template_rewrites_are_valid_distinct_and_deterministic():
    out = template_rewrites(Q, 3)
    assert out == template_rewrites(Q, 3) and len(set(out)) == 3
    for i, t in enumerate(out):
        assert check_rewrite(Q, t, out[:i], kind="math") == []
    assert template_rewrites("What is 6 - 3?", 1) == ["Can you work out 6 - 3?"]
    assert template_rewrites(Q, 2, avoid=[out[0]]) == out[1:3]


@pytest.mark.slow
def test_minilm_similarity_real_model():
    m = MiniLM()
    s = m.similarity(Q, ["What is the number of minutes in 2 hours?", "What colour is a banana?"])
    assert s.shape == (2,) and s[0] > 0.8 and s[1] < 0.4
    e = m.encode(["a", "b"])
    assert e.shape == (2, 384) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)


# issue 22: accepted rewrites of chat prompts changed the request (the collector's real output)
CHANGED_REQUESTS = [
    ("Write a haiku about rain.", "Blessed rain, a poet's choice.", "answers"),
    ("Name three colours of the rainbow.", "The three colors of the rainbow are red,", "answers"),
    ("What is the capital of France?", "How do you find the capital of France?", "intent"),
]


@pytest.mark.parametrize("original,rewrite,flag", CHANGED_REQUESTS)
def test_rewrites_that_change_the_request_are_rejected(original, rewrite, flag):
    """Pure rules: an answer instead of a request, or a method asked for instead of a fact."""
    for kind in ("chat", "short"):
        assert flag in check_rewrite(original, rewrite, [], kind=kind)


def test_changed_requests_rejected_with_real_minilm_similarity():
    """With the real MiniLM cosine (all three pass the default similarity band on their own:
    0.62, 0.82, 0.90) the check still rejects them, and accepts faithful rewrites of the same prompts."""
    emb = MiniLM()
    for original, rewrite, flag in CHANGED_REQUESTS:
        sim = float(emb.similarity(original, [rewrite])[0])
        assert 0.6 <= sim <= 0.995
        assert flag in check_rewrite(original, rewrite, [], kind="chat", similarity=sim)
    good = [("Write a haiku about rain.", "Compose a short haiku about the rain."),
            ("Name three colours of the rainbow.", "List three of the colours in a rainbow."),
            ("What is the capital of France?", "Which city is the capital of France?")]
    for original, rewrite in good:
        sim = float(emb.similarity(original, [rewrite])[0])
        assert check_rewrite(original, rewrite, [], kind="chat", similarity=sim) == []


def test_request_shapes():
    from caproute.collect.rewrite import asks_for_method, is_request

    assert is_request("Please write a poem.") and is_request("Could you list two fruits.")
    assert is_request("I'd like a recipe for soup.") and is_request("Where should I start?")
    assert not is_request("Rain falls softly.")
    assert asks_for_method("How do I reset it?") and asks_for_method("Why is the sky blue?")
    assert not asks_for_method("How many legs does a cat have?") and not asks_for_method("What is 2 + 2?")


def test_rewrites_zero_plans_the_original_prompt_only():
    """--rewrites 0: R decodes of the original prompt (prompt_variant_id -1), not nothing."""
    from caproute.collect.plan import CollectSpec, iter_units, planned_keys
    from caproute.data import schema

    spec = CollectSpec(dataset="d", task="t", models=("a",), rewrites=0, decodes=2)
    assert planned_keys("train", spec) == [(-1, 0, schema.DECODING_VARIATION), (-1, 1, schema.DECODING_VARIATION)]
    import pandas as pd

    units = list(iter_units(pd.DataFrame({"query_id": ["q"], "split": ["train"]}), "a", spec, set()))
    assert [(u.variant_id, u.decode_ids) for u in units] == [(-1, (0, 1))]
    assert planned_keys("train", CollectSpec(dataset="d", task="t", models=("a",), rewrites=0, decodes=0)) == []
    assert len(planned_keys("train", CollectSpec(dataset="d", task="t", models=("a",), rewrites=2, decodes=3))) == 6
