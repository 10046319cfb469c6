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
        ("Minutes in 2 hours", "math", ["incomplete"]),  # no question mark
        ("How many?", "math", ["incomplete", "numbers"]),  # too short, number dropped
        ("How many minutes are in 2 hours?", "math", ["duplicate"]),
        ("how many minutes are in 2 hours", "math", ["duplicate", "incomplete"]),
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
