"""Tracing facade: OpenTelemetry spans when ``opentelemetry-api`` is installed (``caproute[otel]``),
no-ops otherwise.

Nothing happens at import: OpenTelemetry is looked up on the first :func:`start_span`. Spans go to
the global tracer provider (whatever the application or ``opentelemetry-instrument`` installed),
or to the one given to :func:`use_provider`. Without a provider OpenTelemetry's own spans do not
record; callers check :attr:`Span.recording` before building costly attributes.
"""

from __future__ import annotations

import time
from typing import Any

TRACER_NAME = "caproute"

_UNSET = object()
_tracer: Any = _UNSET  # the OpenTelemetry tracer, None when the package is absent
_provider: Any = None


class Span:
    """One span; ``set`` attributes, ``fail`` marks it an error, ``end`` closes it (once)."""

    __slots__ = ("_span",)

    def __init__(self, span: Any = None):
        self._span = span

    @property
    def recording(self) -> bool:
        return self._span is not None and self._span.is_recording()

    def set(self, attributes: dict[str, Any]) -> None:
        if self._span is not None:
            self._span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def fail(self, description: str) -> None:
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR, description))

    def end(self) -> None:
        if self._span is not None:
            self._span.end()

    def __enter__(self) -> Span:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.fail(f"{exc_type.__name__}: {exc}")
        self.end()


NOOP = Span()


def use_provider(provider: Any = None) -> None:
    """Send caproute's spans to ``provider`` (an OpenTelemetry ``TracerProvider``); ``None``
    returns to the global provider."""
    global _tracer, _provider
    _provider, _tracer = provider, _UNSET


def _get_tracer() -> Any:
    global _tracer
    if _tracer is _UNSET:
        try:
            from opentelemetry import trace
        except ImportError:
            _tracer = None
        else:
            _tracer = trace.get_tracer(TRACER_NAME, tracer_provider=_provider)
    return _tracer


def start_span(
    name: str,
    parent: Span | None = None,
    attributes: dict[str, Any] | None = None,
    *,
    start_ns: int | None = None,
) -> Span:
    """A started span, child of ``parent`` (else of the current context); :data:`NOOP` without
    OpenTelemetry or when ``parent`` does not record. ``None`` attribute values are left out; ``start_ns`` (epoch nanoseconds, see
    :func:`epoch_ns`) dates a span that began before this call."""
    if parent is not None and not parent.recording:
        # a child of a span that does not record (no SDK configured, or sampled out) does not
        # record either: one span per request is all an untraced request costs
        return NOOP
    tracer = _get_tracer()
    if tracer is None:
        return NOOP
    context = None
    if parent is not None:
        from opentelemetry.trace import set_span_in_context

        context = set_span_in_context(parent._span)
    attrs = None if attributes is None else {k: v for k, v in attributes.items() if v is not None}
    return Span(tracer.start_span(name, context=context, attributes=attrs, start_time=start_ns))


def epoch_ns(perf_s: float) -> int:
    """Epoch nanoseconds of a past ``time.perf_counter()`` reading (spans are dated in epoch time)."""
    return time.time_ns() - int((time.perf_counter() - perf_s) * 1e9)
