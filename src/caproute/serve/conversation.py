"""Conversations: which text of a chat the router sees, and sticky model choice per conversation.

Modes (``ServeConfig.conversation``):

- ``last_user`` (default): the last user turn only, as RouteLLM does.
- ``user_turns``: every user turn, oldest first, joined by newlines.
- ``history``: every user and assistant turn as ``role: text`` lines.

Long texts keep their *end* (the most recent turns), cut at ``max_chars``. A conversation id
(header ``x-caproute-conversation-id`` or body ``caproute.conversation_id``) keeps later turns on
the model chosen for the first one, so a chat does not hop between models mid-way.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

MODES = ("last_user", "user_turns", "history")


def message_text(content: Any) -> str:
    """Text of a message's ``content``: a string, or a list of parts (text parts are joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                out.append(part["text"])
            elif isinstance(part, str):
                out.append(part)
        return "\n".join(out)
    return ""


def routing_text(messages: Sequence[dict], mode: str = "last_user", max_chars: int = 4000) -> str:
    """The text the router featurises for a chat (see the module docstring for ``mode``)."""
    if mode not in MODES:
        raise ValueError(f"conversation mode must be one of {MODES}, got '{mode}'")
    if mode == "last_user":
        for msg in reversed(messages):
            if msg.get("role") == "user":
                text = message_text(msg.get("content"))
                break
        else:  # no user turn: fall back to whatever text there is (e.g. a system-only prompt)
            text = "\n".join(message_text(m.get("content")) for m in messages)
    elif mode == "user_turns":
        text = "\n".join(message_text(m.get("content")) for m in messages if m.get("role") == "user")
    else:
        text = "\n".join(
            f"{m.get('role')}: {message_text(m.get('content'))}"
            for m in messages
            if m.get("role") in ("user", "assistant")
        )
    return text[-max_chars:] if len(text) > max_chars else text


class StickyMap:
    """Thread-safe LRU map (conversation id, router) -> model, entries expire after ``ttl_s``."""

    def __init__(
        self, max_entries: int = 100_000, ttl_s: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ):
        self.max_entries, self.ttl_s, self._clock = max_entries, ttl_s, clock
        self._data: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, conversation_id: str, router: str) -> str | None:
        key = (conversation_id, router)
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            model, t = hit
            if self._clock() - t > self.ttl_s:
                del self._data[key]
                return None
            self._data[key] = (model, self._clock())
            self._data.move_to_end(key)
            return model

    def set(self, conversation_id: str, router: str, model: str) -> None:
        key = (conversation_id, router)
        with self._lock:
            self._data[key] = (model, self._clock())
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)
