"""Scorers: quality in [0, 1] of one response against a gold answer, via the ``Final Answer:`` line.

Every prompt asks the model to end with ``Final Answer: <...>`` (paper App. D). A scorer first
extracts the text after the LAST such line (case-insensitive); a response without one is a parse
failure and scores 0. Built-in scorers (pure functions ``(answer, gold, **args) -> float``):

- ``multiple_choice``: the first option letter in the answer equals the gold letter.
- ``math``: symbolic equivalence with ``math-verify`` (MATH-500 style answers).
- ``f1``: DROP-style bag-of-tokens F1 (max over gold alternatives separated by ``|``).
- ``exact_match``: normalised exact match (lower case, no punctuation/articles/extra spaces).
- ``numeric``: the first number in the answer is within ``abs_tol``/``rel_tol`` of the gold number.
- ``regex``: the answer matches the gold regular expression (``mode``: fullmatch or search).

User scorers register a function of the same signature under the entry-point group
``caproute.scorers`` (``[project.entry-points."caproute.scorers"] my_scorer = "pkg.mod:func"``).

Context scorers (:class:`ContextScorer`) need more than the answer and gold and run async in a
collection: ``judge`` and ``judge-pairwise`` (an LLM judge from the pool config, see
:mod:`caproute.collect.judge`) and ``code-exec`` (tests in a bubblewrap sandbox, see
:mod:`caproute.collect.code_exec`). ``caproute scorers`` lists them all.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from caproute.errors import ConfigError

ENTRY_POINT_GROUP = "caproute.scorers"
_FINAL_RE = re.compile(r"final\s+answer\s*[:：]\s*(.*)", re.IGNORECASE)


def extract_final_answer(text: str | None) -> str | None:
    """The text after the last ``Final Answer:`` (rest of that line), cleaned; None if absent."""
    if not text:
        return None
    matches = list(_FINAL_RE.finditer(text))
    if not matches:
        return None
    ans = matches[-1].group(1).split("\n", 1)[0].strip()
    ans = ans.strip("*_` \t").strip()
    ans = ans.rstrip(".").strip("*_` \t").strip()
    return ans if ans else None


# -- normalisation -----------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)
_PUNCT = set(string.punctuation)


def normalize_text(s: str) -> str:
    """SQuAD/DROP normalisation: lower case, drop punctuation and articles, collapse spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _norm_token(tok: str) -> str:
    # DROP normalises numbers so "5.0" and "5" match.
    try:
        f = float(tok.replace(",", ""))
    except ValueError:
        return tok
    return str(int(f)) if f.is_integer() else str(f)


def _tokens(s: str) -> list[str]:
    s = s.lower()
    s = "".join(ch if (ch not in _PUNCT or ch == ".") else " " for ch in s)
    toks = []
    for t in s.split():
        t = t.strip(".")
        if t and t not in ("a", "an", "the"):
            toks.append(_norm_token(t))
    return toks


_NUM_RE = re.compile(r"[-−]?\$?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|[-−]?\.\d+")


def parse_number(s: str) -> float | None:
    """The first number in ``s`` (commas, $, %, unicode minus and simple fractions a/b allowed)."""
    m = _NUM_RE.search(s)
    if not m:
        return None
    t = m.group(0).replace("−", "-").replace("$", "").replace(",", "").replace(" ", "")
    try:
        if "/" in t:
            num, den = t.split("/")
            return float(Fraction(int(num), int(den))) if int(den) != 0 else None
        return float(t)
    except (ValueError, ZeroDivisionError):
        return None


def _alternatives(gold: str) -> list[str]:
    return [g.strip() for g in str(gold).split("|") if g.strip()] or [str(gold)]


# -- built-in scorers: (answer, gold, **args) -> float -------------------------------------------
def score_multiple_choice(answer: str, gold: str, letters: str = "ABCDEFGHIJ") -> float:
    """1 if the first standalone option letter in ``answer`` is the gold letter."""
    pat = rf"(?<![A-Za-z])\(?([{letters}{letters.lower()}])\)?(?![A-Za-z])"
    m = re.search(pat, answer)
    if not m:
        return 0.0
    return float(m.group(1).upper() == str(gold).strip().strip("()").upper())


def score_exact_match(answer: str, gold: str) -> float:
    """Normalised exact match; ``gold`` may list aliases separated by ``|``."""
    a = normalize_text(answer)
    return float(any(a == normalize_text(g) for g in _alternatives(gold)))


def f1_tokens(pred: list[str], gold: list[str]) -> float:
    """Bag-of-tokens F1 (the DROP/SQuAD formula); both empty -> 1, one empty -> 0."""
    if not pred and not gold:
        return 1.0
    if not pred or not gold:
        return 0.0
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    p, r = same / len(pred), same / len(gold)
    return 2 * p * r / (p + r)


def score_f1(answer: str, gold: str) -> float:
    """DROP-style F1, the max over gold alternatives separated by ``|``.

    As in DROP, when the gold answer holds a number, a prediction without that number scores 0.
    """
    pred = _tokens(answer)
    best = 0.0
    for g in _alternatives(gold):
        gt = _tokens(g)
        gold_nums = {t for t in gt if re.fullmatch(r"-?\d+(\.\d+)?", t)}
        if gold_nums and not gold_nums & set(pred):
            continue
        best = max(best, f1_tokens(pred, gt))
    return best


def score_numeric(answer: str, gold: str, abs_tol: float = 1e-6, rel_tol: float = 0.0) -> float:
    """1 if the first number in ``answer`` is within tolerance of the gold number."""
    a = parse_number(answer)
    g = parse_number(str(gold))
    if a is None or g is None:
        return 0.0
    return float(math.isclose(a, g, abs_tol=abs_tol, rel_tol=rel_tol))


def score_regex(answer: str, gold: str, mode: str = "fullmatch", ignore_case: bool = True) -> float:
    """1 if ``answer`` matches the gold regular expression."""
    flags = re.IGNORECASE if ignore_case else 0
    fn = re.fullmatch if mode == "fullmatch" else re.search
    return float(fn(str(gold), answer.strip(), flags) is not None)


def score_math(answer: str, gold: str) -> float:
    """Symbolic equivalence of ``answer`` and ``gold`` with math-verify (gold read as LaTeX)."""
    from math_verify import parse, verify

    g = parse(f"${gold}$")
    if not g:
        g = parse(str(gold))
    p = parse(answer if "$" in answer or "\\" in answer else f"${answer}$")
    if not p:
        p = parse(answer)
    if not g or not p:
        return 0.0
    return float(verify(g, p))


BUILTIN: dict[str, Callable[..., float]] = {
    "multiple_choice": score_multiple_choice,
    "math": score_math,
    "f1": score_f1,
    "exact_match": score_exact_match,
    "numeric": score_numeric,
    "regex": score_regex,
}


@dataclass(frozen=True)
class ScoreResult:
    score: float
    parsed: bool
    answer: str | None
    status: str = "ok"
    detail: dict | None = None  # stored with the observation (table collect_score_details)


@dataclass(frozen=True)
class Scorer:
    """A named scorer bound to its arguments; call it on a whole response."""

    name: str
    fn: Callable[..., float]
    args: tuple[tuple[str, object], ...] = ()

    def __call__(self, response_text: str | None, gold: str) -> ScoreResult:
        answer = extract_final_answer(response_text)
        if answer is None:
            return ScoreResult(0.0, False, None)
        s = float(self.fn(answer, gold, **dict(self.args)))
        if not math.isfinite(s) or s < 0 or s > 1:
            raise ValueError(f"scorer '{self.name}' returned {s!r}, outside [0, 1]")
        return ScoreResult(s, True, answer)


class ContextScorer:
    """A scorer that needs more than ``(answer, gold)``: the question the model was asked, a pool
    endpoint (``judge``), or a sandbox (``code-exec``). Validated at config time; :meth:`bind`
    gives the async scorer a collection run calls as ``await bound.score(question, context,
    response_text, gold)``.

    ``skip_unparsed``: an observation whose result is not parsed is not stored (it is counted in
    the scoring validity report), instead of scoring 0.
    """

    name: str = ""
    description: str = ""
    skip_unparsed: bool = False

    def __init__(self, **args):
        self.args = dict(args)

    def bind(self, cfg, *, con=None, charge=None, seed: int = 0):  # pragma: no cover - abstract
        raise NotImplementedError


class JudgeScorer(ContextScorer):
    name = "judge"
    description = ("LLM judge, pointwise: a pool model grades the answer against the built-in rubric (+ "
                   "rubric_file) on 1-10, score (N-1)/9; args judge=MODEL (optional: rubric_file, "
                   "max_tokens, temperature, max_attempts, scale); no gold needed")
    skip_unparsed = True

    def __init__(self, **args):
        from caproute.collect.judge import JudgeSettings

        super().__init__(**args)
        self.settings = JudgeSettings.from_args(self.name, args)

    def bind(self, cfg, *, con=None, charge=None, seed: int = 0):
        return _BoundJudge(self, self.settings.make_judge(cfg, con=con, charge=charge, seed=seed))


class JudgePairwiseScorer(JudgeScorer):
    """:class:`JudgeScorer` in pairwise mode (the bound judge compares when the name is this one)."""

    name = "judge-pairwise"
    description = ("LLM judge, pairwise vs the reference answer (the gold/answer column, e.g. the logged "
                   "assistant reply): both orders, win 1 / tie 0.5 / loss 0; args as judge")


class _BoundJudge:
    def __init__(self, scorer: ContextScorer, judge):
        self.scorer, self.judge = scorer, judge

    async def score(self, question: str, context: str | None, response_text: str | None, gold: str) -> ScoreResult:
        answer = response_text or ""
        if self.scorer.name == "judge":
            j = await self.judge.grade(question, answer, context)
        else:
            if not str(gold or "").strip():
                return ScoreResult(0.0, False, None, "no_reference", {"judge_model": self.judge.model})
            j = await self.judge.compare(question, answer, str(gold), context)
        if j.score is None:
            return ScoreResult(0.0, False, None, j.status, j.detail())
        return ScoreResult(float(j.score), True, answer, j.status, j.detail())

    async def aclose(self) -> None:
        await self.judge.aclose()


class CodeExecScorer(ContextScorer):
    name = "code-exec"
    description = ("runs the Python in the answer against the task's tests (answer column: JSON task "
                   "definition, HumanEval/MBPP style) in a bubblewrap sandbox (no network, no caller "
                   "environment or files, time, memory and process limits); pass@1 per decode; args "
                   "timeout_s, memory_mb, max_parallel, unsafe_no_sandbox")

    def __init__(self, **args):
        from caproute.collect import code_exec

        super().__init__(**args)
        unknown = set(args) - {"timeout_s", "memory_mb", "max_parallel", "unsafe_no_sandbox"}
        if unknown:
            raise ConfigError(f"scorer 'code-exec': unknown scorer_args {sorted(unknown)} "
                              "(allowed: timeout_s, memory_mb, max_parallel, unsafe_no_sandbox)")
        self.unsafe_no_sandbox = args.get("unsafe_no_sandbox", False)
        if not isinstance(self.unsafe_no_sandbox, bool):  # "yes"/1 must not switch isolation off
            raise ConfigError("scorer 'code-exec': unsafe_no_sandbox must be true or false "
                              f"(got {self.unsafe_no_sandbox!r})")
        try:
            self.timeout_s = float(args.get("timeout_s", code_exec.DEFAULT_TIMEOUT_S))
            self.memory_mb = int(args.get("memory_mb", code_exec.DEFAULT_MEMORY_MB))
            self.max_parallel = int(args.get("max_parallel", 1))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"scorer 'code-exec': bad scorer_args {args}: {e}") from None
        if self.timeout_s <= 0 or self.memory_mb < 64 or self.max_parallel < 1:
            raise ConfigError("scorer 'code-exec': timeout_s > 0, memory_mb >= 64, max_parallel >= 1")

    def bind(self, cfg=None, *, con=None, charge=None, seed: int = 0):
        from caproute.collect.code_exec import require_sandbox

        require_sandbox(self.unsafe_no_sandbox)  # refuse before the first request, not at the first score
        return _BoundCode(self)

    def run(self, response_text: str | None, gold: str):
        from caproute.collect.code_exec import score_code

        return score_code(response_text, gold, timeout_s=self.timeout_s, memory_mb=self.memory_mb,
                          unsafe_no_sandbox=self.unsafe_no_sandbox)


class _BoundCode:
    def __init__(self, scorer: CodeExecScorer):
        import asyncio

        self.scorer = scorer
        self._sem = asyncio.Semaphore(scorer.max_parallel)

    async def score(self, question: str, context: str | None, response_text: str | None, gold: str) -> ScoreResult:
        import asyncio

        async with self._sem:
            try:
                run = await asyncio.to_thread(self.scorer.run, response_text, gold)
            except ValueError as e:  # a malformed task definition
                raise ConfigError(f"code-exec: bad task definition in the answer column: {e}") from None
        return ScoreResult(float(run.passed), run.status != "no_code", None, run.status, run.to_dict())

    async def aclose(self) -> None:
        return None


CONTEXT_SCORERS: dict[str, type[ContextScorer]] = {
    c.name: c for c in (JudgeScorer, JudgePairwiseScorer, CodeExecScorer)
}


def scorer_catalog() -> list[dict]:
    """Every available scorer: name, kind (builtin | context | plugin) and a one-line description."""
    rows = [{"name": n, "kind": "builtin", "description": (f.__doc__ or "").strip().splitlines()[0]}
            for n, f in BUILTIN.items()]
    rows += [{"name": n, "kind": "context", "description": c.description} for n, c in CONTEXT_SCORERS.items()]
    for n, ep in sorted(_entry_points().items()):
        if n not in BUILTIN and n not in CONTEXT_SCORERS:
            rows.append({"name": n, "kind": "plugin", "description": f"entry point {ep.value}"})
    return rows


def _entry_points() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_scorers() -> list[str]:
    return sorted(set(BUILTIN) | set(CONTEXT_SCORERS) | set(_entry_points()))


def get_scorer(name: str, **args) -> Scorer | ContextScorer:
    """A built-in scorer, a context scorer (``judge``, ``judge-pairwise``, ``code-exec``: a
    :class:`ContextScorer`), or one registered under the ``caproute.scorers`` entry-point group."""
    import inspect

    if name in CONTEXT_SCORERS:
        return CONTEXT_SCORERS[name](**args)
    if name in BUILTIN:
        fn = BUILTIN[name]
    else:
        eps = _entry_points()
        if name not in eps:
            raise ConfigError(f"unknown scorer '{name}' (available: {available_scorers()})")
        try:
            fn = eps[name].load()
        except Exception as e:  # a broken plugin must say which one
            raise ConfigError(f"scorer '{name}' (entry point {eps[name].value}) failed to load: {e}") from e
        if not callable(fn):
            raise ConfigError(f"scorer '{name}' (entry point {eps[name].value}) is not callable")
    try:
        inspect.signature(fn).bind("answer", "gold", **args)
    except TypeError as e:
        raise ConfigError(f"scorer '{name}': bad scorer_args {args}: {e}") from None
    return Scorer(name, fn, tuple(sorted(args.items())))
