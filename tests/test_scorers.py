"""Scorers on hand-written responses (the Final Answer protocol)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from caproute.collect import scorers as S
from caproute.errors import ConfigError


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Let me think.\nFinal Answer: 42", "42"),
        ("final answer: 7.\nmore text", "7"),
        ("Final Answer: 1\nwait\nFinal Answer: 2", "2"),  # the last one counts
        ("**Final Answer:** **B**", "B"),
        ("Final Answer:   ", None),
        ("The answer is 42", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_final_answer(text, expected):
    assert S.extract_final_answer(text) == expected


def test_no_final_answer_is_a_parse_failure_scoring_zero():
    r = S.get_scorer("numeric")("The answer is 42", "42")
    assert (r.score, r.parsed, r.answer) == (0.0, False, None)


@pytest.mark.parametrize(
    "answer,gold,score",
    [
        ("B", "B", 1.0),
        ("(c)", "C", 1.0),
        ("B) Paris", "B", 1.0),
        ("The answer is D", "D", 1.0),
        ("A", "B", 0.0),
        ("none", "A", 0.0),
    ],
)
def test_multiple_choice(answer, gold, score):
    assert S.score_multiple_choice(answer, gold) == score


@pytest.mark.parametrize(
    "answer,gold,score",
    [
        ("42", "42", 1.0),
        ("42 apples", "42", 1.0),
        ("1,000", "1000", 1.0),
        ("$5.00", "5", 1.0),
        ("3/4", "0.75", 1.0),
        ("−3", "-3", 1.0),
        ("41", "42", 0.0),
        ("forty-two", "42", 0.0),
        ("17个月", "17", 1.0),
    ],
)
def test_numeric(answer, gold, score):
    assert S.score_numeric(answer, gold) == score


def test_numeric_tolerances():
    assert S.score_numeric("10.4", "10", abs_tol=0.5) == 1.0
    assert S.score_numeric("10.6", "10", abs_tol=0.5) == 0.0
    assert S.score_numeric("105", "100", abs_tol=0, rel_tol=0.05) == 1.0


@pytest.mark.parametrize(
    "answer,gold,score",
    [
        ("The Eiffel Tower", "eiffel tower", 1.0),
        ("Paris.", "paris", 1.0),
        ("NYC", "New York|NYC", 1.0),
        ("Paris France", "Paris", 0.0),
    ],
)
def test_exact_match(answer, gold, score):
    assert S.score_exact_match(answer, gold) == score


def test_f1_hand_computed():
    # pred tokens [paris, france], gold [paris]: p = 1/2, r = 1 -> F1 = 2/3
    assert S.score_f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    # articles and punctuation dropped; numbers normalised (5.0 == 5)
    assert S.score_f1("the 5.0 yards", "5 yards") == 1.0
    # DROP rule: gold has a number the prediction lacks -> 0 even with overlapping words
    assert S.score_f1("6 yards", "5 yards") == 0.0
    # max over alternatives
    assert S.score_f1("red car", "blue car|red car") == 1.0
    assert S.f1_tokens([], []) == 1.0 and S.f1_tokens(["a"], []) == 0.0


def test_regex():
    assert S.score_regex("1984-01-02", r"\d{4}-\d{2}-\d{2}") == 1.0
    assert S.score_regex("in 1984", r"\d{4}") == 0.0
    assert S.score_regex("in 1984", r"\d{4}", mode="search") == 1.0
    assert S.score_regex("ABC", "abc", ignore_case=False) == 0.0


@pytest.mark.parametrize(
    "answer,gold,score",
    [
        ("\\frac{1}{2}", "\\frac{1}{2}", 1.0),
        ("0.5", "\\frac{1}{2}", 1.0),
        ("1/2", "0.5", 1.0),
        ("$\\sqrt{4}$", "2", 1.0),
        ("3", "\\frac{1}{2}", 0.0),
        ("x^2+2x", "x(x+2)", 1.0),
    ],
)
def test_math_verify(answer, gold, score):
    assert S.score_math(answer, gold) == score


def test_scorer_through_final_answer_line():
    sc = S.get_scorer("math")
    r = sc("We compute 1/2.\nFinal Answer: $\\frac{1}{2}$", "0.5")
    assert r.parsed and r.score == 1.0


def test_unknown_scorer_and_bad_args():
    with pytest.raises(ConfigError, match="unknown scorer 'nope'"):
        S.get_scorer("nope")
    with pytest.raises(ConfigError, match="bad scorer_args"):
        S.get_scorer("numeric", tolerance=1)


def test_out_of_range_scorer_output_is_an_error():
    bad = S.Scorer("bad", lambda a, g: 2.0)
    with pytest.raises(ValueError, match="outside"):
        bad("Final Answer: x", "x")


def test_user_scorer_via_entry_point(tmp_path, monkeypatch):
    """A real entry point: a dist-info with entry_points.txt on sys.path, as pip would install it."""
    pkg = tmp_path / "myscorers.py"
    pkg.write_text(
        textwrap.dedent("""
        def length_match(answer, gold, scale=1.0):
            return 1.0 if len(answer) == len(gold) * scale else 0.0
    """)
    )
    dist = tmp_path / "myscorers-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myscorers\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[caproute.scorers]\nlength_match = myscorers:length_match\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "length_match" in S.available_scorers()
    sc = S.get_scorer("length_match", scale=1.0)
    assert sc("Final Answer: abc", "xyz").score == 1.0
    assert sc("Final Answer: abcd", "xyz").score == 0.0
    sys.modules.pop("myscorers", None)
