"""Text is text everywhere: the one rule for invalid Unicode at caproute's boundaries.

JSON may carry lone UTF-16 surrogates (``"\\ud800"``), and a backend that streams token by token may
split one emoji's surrogate pair across two chunks. Python keeps such strings, but they cannot be
encoded as UTF-8, so SQLite, Parquet, DuckDB, ``str.encode`` and strict JSON readers fail on them
(a silently dead writer thread, a traceback in an export). The rule, applied wherever text enters
caproute (HTTP request bodies, backend answers and stream chunks, the request log, the feedback
store, feedback export, ``collect --queries`` chat logs):

- a valid surrogate pair becomes the character it encodes;
- a lone surrogate becomes U+FFFD (the replacement character);
- bytes that are not UTF-8 decode to U+FFFD (one per invalid sequence).

Text is repaired, never refused: one bad character costs one U+FFFD, not a request or a record.
:class:`SurrogateCarry` joins a pair that a stream split across two chunks before the rule applies.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


def _has_surrogate(s: str) -> bool:
    # str.isascii() is C-fast and the common case; otherwise look for the surrogate range
    return not s.isascii() and any("\ud800" <= c <= "\udfff" for c in s)


def clean_text(s: str) -> str:
    """``s`` with surrogate pairs joined and lone surrogates replaced by U+FFFD (valid text as is)."""
    if not _has_surrogate(s):
        return s
    return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def content_text(content: Any, *, untyped_parts: bool = False) -> str | None:
    """Text of an OpenAI chat message's ``content``: ``""`` for None, a string as is, a list of
    parts joined by newlines (string parts and ``{"type": "text", "text": ...}`` parts; other parts
    are skipped; ``untyped_parts``: a dict part without ``type`` counts as text). None for any other
    value: the caller refuses it (a data file) or reads it as no text (a live request)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    out = []
    for part in content:
        if isinstance(part, str):
            out.append(part)
        elif (isinstance(part, dict) and part.get("type", "text" if untyped_parts else None) == "text"
              and isinstance(part.get("text"), str)):
            out.append(part["text"])
    return "\n".join(out)


def decode_text(b: bytes) -> str:
    """UTF-8 bytes as text under the rule (invalid sequences and encoded surrogates -> U+FFFD)."""
    return clean_text(b.decode("utf-8", "replace"))


def clean_json(obj: Any) -> Any:
    """A JSON-like value (dicts, lists, strings, numbers) with every string, keys included, cleaned.

    Returns ``obj`` itself when nothing needed repair (no copy on the hot path).
    """
    if isinstance(obj, str):
        return clean_text(obj)
    if isinstance(obj, dict):
        items = [(clean_text(k) if isinstance(k, str) else k, clean_json(v)) for k, v in obj.items()]
        if all(k2 is k and v2 is v for (k2, v2), (k, v) in zip(items, obj.items(), strict=True)):
            return obj
        return dict(items)
    if isinstance(obj, list | tuple):
        items = [clean_json(v) for v in obj]
        if all(a is b for a, b in zip(items, obj, strict=True)):
            return obj
        return type(obj)(items) if isinstance(obj, tuple) else items
    return obj


class SurrogateCarry:
    """Joins surrogate pairs split across consecutive pieces of one text stream.

    ``push(piece)`` returns the piece cleaned, holding back a trailing high surrogate until the
    next piece (which may start with its low half); ``flush()`` returns what is still held back
    (U+FFFD, or '' when nothing is).
    """

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = ""

    def push(self, piece: str) -> str:
        s = self._held + piece
        self._held = ""
        if s and "\ud800" <= s[-1] <= "\udbff":
            s, self._held = s[:-1], s[-1]
        return clean_text(s)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return clean_text(held)
