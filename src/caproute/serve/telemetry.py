"""Spans and per-(router, model) metrics of one routed chat.

:class:`ChatTrace` is what :class:`~caproute.serve.routed_chat.RoutedChat` calls at each step: the
decision (span ``caproute.decide`` with the router, chosen model, predicted μq/μc/σq, utility,
λ, β and policy version as attributes), each backend attempt (``caproute.attempt``: model,
attempt number, why it was tried, outcome), each fallback (``caproute.fallback``: from, to,
reason), the registration for feedback (``caproute.register``), all children of one
``caproute.chat`` span dated from when the proxy received the request. Spans are OpenTelemetry's
through :mod:`caproute.core.tracing` (no-ops without the ``otel`` extra); the Prometheus side is
``caproute_decisions_total``, ``caproute_backend_attempts_total`` and the histogram
``caproute_routed_latency_seconds``, each labelled by router and model (router ``""`` for a
request sent directly to a pool model).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from caproute.core.tracing import NOOP, Span, epoch_ns, start_span
from caproute.serve.backends import BackendFailure, BackendRejected

if TYPE_CHECKING:
    from caproute.serve.routed_chat import RoutedChat

T = TypeVar("T")


def outcome_of(e: BaseException) -> str:
    """The attempt outcome label of an attempt's exception (the fallback reason where there is one)."""
    if isinstance(e, BackendFailure):
        return e.reason
    if isinstance(e, BackendRejected):
        return f"http_{e.status}"
    if isinstance(e, asyncio.CancelledError):
        return "cancelled"
    return "bad_response"


def decision_attributes(chat: RoutedChat) -> dict[str, Any]:
    """The routing decision as span attributes (``caproute.*``; the chosen model's predictions)."""
    meta, d = chat.meta, chat.decision
    attrs: dict[str, Any] = {
        "caproute.router": chat.handle.name if chat.handle else None,
        "caproute.policy_version": meta.get("policy_version"),
        "caproute.params_source": meta.get("params_source"),
        "caproute.order": list(chat.order),
        "caproute.sticky": bool(meta.get("sticky")),
        "caproute.conversation_id": chat.conv,
        "caproute.routing_overhead_ms": meta.get("routing_overhead_ms"),
    }
    if d is not None:
        m = d["model"]
        attrs.update(
            {
                "caproute.model": m,
                "caproute.mu_q": d["mu_q"].get(m),
                "caproute.mu_c": d["mu_c"].get(m),
                "caproute.sigma_q": d["sigma_q"].get(m),
                "caproute.utility": d["utility"].get(m),
                "caproute.lambda": d.get("lambda"),
                "caproute.beta": d.get("beta"),
                "caproute.lambda_t": d.get("lambda_t"),
                "caproute.decision_kind": d.get("kind"),
            }
        )
    elif chat.order:
        attrs["caproute.model"] = chat.order[0]
    if chat.order:
        attrs["caproute.first_model"] = chat.order[0]  # differs from the decision when sticky or exploring
    for key in ("propensity", "explored"):
        if meta.get(key) is not None:
            attrs[f"caproute.{key}"] = meta[key]
    return attrs


class ChatTrace:
    """The spans and routing metrics of one :class:`RoutedChat` (``api``: ``openai`` or ``anthropic``)."""

    def __init__(self, chat: RoutedChat, api: str = "openai"):
        # a weak reference: the chat holds its trace, and a cycle would keep each request's objects
        # (the chat, its request, the gateway's closures: ~36 containers) alive until the cyclic
        # collector ran, which was most of the collector's work in the proxy (issue 27)
        self._chat, self.api = weakref.ref(chat), api
        self.metrics = chat.state.metrics
        self.root: Span = NOOP
        self.router = ""
        self._open = False

    @property
    def chat(self) -> RoutedChat:
        return self._chat()

    def decided(self, t0: float) -> None:
        """After the decision (begun at ``perf_counter()`` ``t0``): opens the chat span (dated from
        the request's arrival) and records the decide span and the decision counter."""
        chat = self.chat
        self.router = chat.handle.name if chat.handle else ""
        self.root = start_span(
            "caproute.chat",
            attributes={
                "caproute.api": self.api,
                "caproute.response_id": chat.rid,
                "caproute.router": self.router or None,
                "caproute.kind": chat.kind,
            },
            start_ns=epoch_ns(chat.t_in),
        )
        self._open = True
        span = start_span("caproute.decide", self.root, start_ns=epoch_ns(t0))
        if span.recording:
            span.set(decision_attributes(chat))
        span.end()
        if chat.handle is not None and chat.decision is not None:
            self.metrics.decisions.labels(self.router, chat.decision["model"]).inc()

    def attempts(self, call: Callable[[str], Awaitable[T]]) -> Callable[[str], Awaitable[T]]:
        """``call`` with a span and a counted outcome per backend attempt, and a fallback span
        before each attempt that follows a failed one (``chat.attempts`` holds the failures)."""
        chat = self.chat
        first_reason = (
            "direct" if chat.handle is None else "sticky" if chat.meta.get("sticky") else "decision"
        )

        async def attempt(name: str) -> T:
            n = len(chat.attempts)  # failed attempts so far: first_answer appends each before the next
            if n:
                prev = chat.attempts[-1]
                start_span(
                    "caproute.fallback",
                    self.root,
                    {
                        "caproute.router": self.router or None,
                        "caproute.from_model": prev["model"],
                        "caproute.to_model": name,
                        "caproute.reason": prev["reason"],
                        "caproute.detail": str(prev.get("detail", ""))[:500],
                    },
                ).end()
            span = start_span(
                "caproute.attempt",
                self.root,
                {
                    "caproute.router": self.router or None,
                    "caproute.model": name,
                    "caproute.attempt": n + 1,
                    "caproute.attempt_reason": "fallback" if n else first_reason,
                },
            )
            try:
                result = await call(name)
            except BaseException as e:
                outcome = outcome_of(e)
                self.metrics.attempts.labels(self.router, name, outcome).inc()
                span.set({"caproute.outcome": outcome})
                span.fail(f"{outcome}: {str(e)[:300]}")
                span.end()
                raise
            self.metrics.attempts.labels(self.router, name, "ok").inc()
            span.set({"caproute.outcome": "ok"})
            span.end()
            return result

        return attempt

    def registering(self, model: str) -> Span:
        """The span of the registration for feedback (use as a context manager)."""
        return start_span(
            "caproute.register",
            self.root,
            {
                "caproute.response_id": self.chat.rid,
                "caproute.model": model,
                "caproute.router": self.router or None,
                "caproute.kind": self.chat.kind,
            },
        )

    def done(self, model: str, *, stream: bool) -> None:
        """The answer is complete (JSON sent, or the stream ended): latency histogram, chat span closed."""
        chat = self.chat
        self.metrics.routed_latency.labels(self.router, model, self.api).observe(time.perf_counter() - chat.t_in)
        if self._open:
            self._open = False
            self.root.set(
                {
                    "caproute.model": model,
                    "caproute.stream": stream,
                    "caproute.fallback": bool(chat.attempts),
                    "caproute.attempts": len(chat.attempts) + 1,
                }
            )
            self.root.end()

    def failed(self, description: str) -> None:
        """No answer (every model failed, a rejection, or the client left): the chat span as an error."""
        if self._open:
            self._open = False
            self.root.set({"caproute.attempts": len(self.chat.attempts)})
            self.root.fail(description)
            self.root.end()
