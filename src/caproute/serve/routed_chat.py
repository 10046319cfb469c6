"""One routed chat completion, streaming or not.

:class:`RoutedChat` owns a request to ``caproute/<router>`` (or to one pool model directly): it
decides the ranked models (router, calibrated policy, sticky conversation), tries them in that
order with the one attempt loop :func:`first_answer` (shared by the JSON answer, the stream and the
duel mode, so every path falls back, counts and fails the same way), does the accounting (spend,
metrics, drift) and registers the response id for feedback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from caproute.serve import explore, jsonwire
from caproute.serve.backends import BackendFailure, BackendRejected, StreamStart, chunk_problem
from caproute.serve.conversation import message_text, routing_text
from caproute.serve.errors import ApiError, error_body
from caproute.serve.log_store import delta_text, log_answer
from caproute.serve.naming import Target, router_model_id
from caproute.serve.routing import RouterHandle, fallback_order
from caproute.serve.schemas import CaprouteOptions
from caproute.serve.slow_clients import CONNECTION_KEY
from caproute.serve.telemetry import ChatTrace

if TYPE_CHECKING:
    from caproute.serve.state import ServeState

log = logging.getLogger("caproute.serve")

CHARS_PER_TOKEN = 4  # estimate for streams whose backend reports no usage (llama.cpp)

T = TypeVar("T")


# -- the attempt loop -------------------------------------------------------------------------------


class ClientLeft(Exception):
    """The client disconnected while a backend call was in flight (the call was cancelled)."""

    def __init__(self, model: str):
        super().__init__(model)
        self.model = model


async def unless_client_leaves(request: Request | None, coro: Awaitable[T], model: str = "") -> T:
    """Await ``coro``; if the client disconnects first, cancel it (which closes the backend
    connection) and raise :class:`ClientLeft`.

    Under caproute's server the connection's protocol calls back when the client leaves
    (:meth:`~caproute.serve.slow_clients._GuardedProtocol.watch_lost`); under another ASGI server a
    task waits for ``http.disconnect`` on ``receive()``."""
    if request is None:
        return await coro
    current = asyncio.current_task()
    left = False

    def gone() -> None:
        nonlocal left
        left = True
        current.cancel()  # the backend call is cancelled where it waits; that closes its connection

    conn = request.scope.get(CONNECTION_KEY)
    if conn is not None:
        stop = conn.watch_lost(gone)
    else:

        async def wait_disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            gone()

        stop = asyncio.ensure_future(wait_disconnect()).cancel  # the call itself runs in this task
    try:
        return await coro
    except asyncio.CancelledError:
        if left:
            current.uncancel()
            raise ClientLeft(model) from None
        raise
    finally:
        stop()


def backend_rejected(state: ServeState, e: BackendRejected) -> ApiError:
    """The client's error for a request the backend refused (4xx other than 429), counted."""
    state.metrics.backend_errors.labels(e.model, f"http_{e.status}").inc()
    return ApiError(
        e.status if 400 <= e.status < 500 else 502,
        f"backend '{e.model}' rejected the request: {e.message}",
        code="backend_rejected",
    )


def all_failed(order: list[str], attempts: list[dict]) -> ApiError:
    """502 when no model answered (504 when every attempt timed out), naming each failure."""
    detail = "; ".join(f"{a['model']}: {a['reason']} ({a['detail']})" for a in attempts)
    status = 504 if attempts and all(a["reason"] == "timeout" for a in attempts) else 502
    return ApiError(
        status,
        f"no backend answered (tried {len(attempts)} of the ranked models {order}): {detail}",
        code="backends_unavailable",
    )


async def first_answer(
    state: ServeState,
    order: list[str],
    call: Callable[[str], Awaitable[T]],
    attempts: list[dict],
    *,
    not_after: float | None = None,
    request: Request | None = None,
) -> tuple[str, T]:
    """(model, result) of the first model in ``order`` that ``call(model)`` answers.

    A retryable failure (:class:`BackendFailure`, or any other error of one attempt: a reply no
    parser foresaw is still that backend's ``bad_response``) is appended to ``attempts``, counted
    in ``caproute_backend_errors_total`` and logged, and the next model is tried until
    ``not_after`` (monotonic seconds). Raises the client's :class:`ApiError` for a rejection
    (4xx) and :func:`all_failed` when no model answered; :class:`ClientLeft` when the client left.
    """
    for name in order:
        if not_after is not None and time.monotonic() >= not_after:
            break  # the request's deadline passed: answer now (504 if every attempt timed out)
        try:
            return name, await unless_client_leaves(request, call(name), name)
        except BackendFailure as e:
            reason, detail = e.reason, e.detail
        except BackendRejected as e:
            raise backend_rejected(state, e) from None
        except ClientLeft:
            raise
        except Exception as e:
            log.exception("backend %s: unexpected error reading its answer", name)
            reason, detail = "bad_response", f"{type(e).__name__}: {str(e)[:200]}"
        attempts.append({"model": name, "reason": reason, "detail": detail})
        state.metrics.backend_errors.labels(name, reason).inc()
        log.warning(
            "backend %s failed (%s: %s); %s",
            name,
            reason,
            detail,
            "falling back" if name != order[-1] else "no fallback left",
        )
    raise all_failed(order, attempts)


# -- accounting -------------------------------------------------------------------------------------


def usage_ok(state: ServeState, name: str, usage) -> bool:
    """False (and counted as a bad_response of ``name``) when a stream's usage is malformed."""
    from caproute.collect.client import MalformedResponse, parse_usage

    try:
        parse_usage(usage)
        return True
    except MalformedResponse as e:
        state.metrics.backend_errors.labels(name, "bad_response").inc()
        log.warning("backend %s: malformed usage in a stream (%s: %s); tokens estimated", name, e.field, e.problem)
        return False


def answer_spend(
    state: ServeState, name: str, raw: dict, usage: dict, completion_chunks: int | None
) -> tuple[float, bool]:
    """USD of one answer from its usage, or estimated (prompt chars / 4, one token per chunk);
    counted in the token and spend metrics. Returns (spend, estimated)."""
    from caproute.collect.client import MalformedResponse, parse_usage

    ep = state.backends.endpoints[name]
    try:
        u = parse_usage(usage or None)
    except MalformedResponse as e:  # only streams get here: complete() validated its usage
        state.metrics.backend_errors.labels(name, "bad_response").inc()
        log.warning("backend %s: ignoring malformed usage (%s: %s); tokens estimated", name, e.field, e.problem)
        u = None
    estimated = u is None
    if estimated:
        chars = sum(len(message_text(msg.get("content"))) for msg in raw.get("messages", []))
        pt, ct, cached = max(1, chars // CHARS_PER_TOKEN), int(completion_chunks or 0), 0
    else:
        pt, ct, cached = u.prompt_tokens, u.completion_tokens, u.cached_tokens
    state.metrics.tokens.labels(name, "prompt").inc(pt)
    state.metrics.tokens.labels(name, "completion").inc(ct)
    spend = ep.cost_usd(pt, ct, cached if isinstance(cached, int) else 0)
    state.metrics.spend.labels(name).inc(spend)
    return spend, estimated


def decision_dict(d, handle: RouterHandle) -> dict:
    """A pipeline Decision with pool model names (``router_model`` keeps the router's name)."""
    dd = d.to_dict()
    pool = handle.pool_names
    if any(k != v for k, v in pool.items()):
        for key in ("mu_q", "mu_c", "sigma_q", "utility", "mu_latency"):
            if key in dd:
                dd[key] = {pool[m]: v for m, v in dd[key].items()}
        dd["router_model"] = dd["model"]
        dd["model"] = pool[dd["model"]]
    return dd


def json_response(obj: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        jsonwire.dumps(obj),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _sse(obj: Any) -> bytes:
    return b"data: " + jsonwire.dumps(obj) + b"\n\n"


# -- the routed chat --------------------------------------------------------------------------------


class RoutedChat:
    """One chat completion to a router (or directly to a pool model).

    ``await decide(target, opts)`` ranks the models; ``await respond(stream)`` tries them in order
    (:func:`first_answer`) and returns the JSON answer or the event stream. Either way the answer
    is accounted (:meth:`account`) and registered for feedback (:meth:`register`) under
    :attr:`rid`.
    """

    def __init__(
        self,
        state: ServeState,
        raw: dict,
        *,
        conv: str | None = None,
        t_in: float | None = None,
        request: Request | None = None,
        api: str = "openai",
    ):
        self.state, self.raw, self.conv, self.request = state, raw, conv, request
        self.t_in = time.perf_counter() if t_in is None else t_in  # when the proxy received it
        self.handle: RouterHandle | None = None
        self.params = None
        self.decision: dict | None = None
        self.order: list[str] = []
        self.attempts: list[dict] = []
        self.not_after: float | None = None
        self.rid = f"chatcmpl-cr{os.urandom(16).hex()}"  # 32 hex digits, as uuid4().hex (a fifth of its CPU)
        self.meta: dict[str, Any] = {}
        self.trace = ChatTrace(self, api)  # spans and per-(router, model) metrics
        self.pick: explore.Pick | None = None  # the served model's draw and propensity (routed only)
        self.routing_text: str | None = None

    @property
    def kind(self) -> str:
        return "chat" if self.handle is not None else "direct"

    # -- decide -------------------------------------------------------------------------------------
    async def decide(self, target: Target, opts: CaprouteOptions | None) -> None:
        """The ranked models to try (``max_attempts`` of them) and the request's deadline."""
        state, cfg = self.state, self.state.config
        t0 = time.perf_counter()
        state.admit()
        # the whole request's deadline (all attempts), counted from when the proxy received it
        if cfg.request_timeout_s is not None:
            self.not_after = time.monotonic() + cfg.request_timeout_s - (t0 - self.t_in)
        sticky = False
        if target.kind == "direct":
            self.order = [target.name]
        else:
            handle = self.handle = state.routers[target.name]
            params = self.params = state.params(handle, target, opts)
            text = self.routing_text = routing_text(self.raw["messages"], cfg.conversation, cfg.max_routing_chars)
            d = await handle.batcher.decide(text, params.lam, params.beta, params.lam_t)
            decision = decision_dict(d, handle)
            self.decision = decision
            models = [handle.pool_names[x] for x in handle.models]
            # --explore: the first model is drawn from a logged distribution (the router's choice without it)
            self.pick = explore.pick(decision["utility"], decision["model"], models, state.exploration,
                                     state.explore_rng)
            order = fallback_order(decision["utility"], decision["mu_c"], self.pick.chosen, models)
            if self.conv is not None:
                stuck = state.sticky.get(self.conv, handle.name)
                if stuck is not None and stuck in order:
                    order = [stuck, *[x for x in order if x != stuck]]
                    sticky = True
                    self.pick = explore.fixed(stuck, models)
            self.order = order[: cfg.max_attempts]
            state.metrics.overhead.labels(handle.name).observe(time.perf_counter() - t0)
        self.meta = {
            "response_id": self.rid,
            "router": router_model_id(self.handle.name) if self.handle else None,
            "policy_version": self.params.version if self.params else None,
            "params_source": self.params.source if self.params else "direct",
            "decision": self.decision,
            "conversation_id": self.conv,
            "sticky": sticky,
            "routing_overhead_ms": round((time.perf_counter() - t0) * 1e3, 3),
        }
        if self.pick is not None:
            self.meta["propensity"] = self.pick.propensity
            if state.exploration.on:
                self.meta.update(explored=self.pick.explored, explore_loss=round(self.pick.loss, 6))
        self.trace.decided(t0)

    # -- answer -------------------------------------------------------------------------------------
    async def respond(self, stream: bool) -> Response:
        """The answer of the first model that gives one: JSON, or server-sent events from the
        first content chunk on (the point of no fallback). 499 when the client left first."""
        backends = self.state.backends
        if stream:
            call = lambda name: backends.open_stream(name, self.raw, self.not_after)  # noqa: E731
        else:
            call = lambda name: backends.complete(name, self.raw, self.not_after)  # noqa: E731
        call = self.trace.attempts(call)
        try:
            name, answer = await first_answer(
                self.state, self.order, call, self.attempts, not_after=self.not_after, request=self.request
            )
        except ApiError as e:
            self.trace.failed(e.message)
            raise
        except ClientLeft as e:
            self.trace.failed("the client left")
            log.info("client left during the call to %s: backend request cancelled", e.model)
            return Response(status_code=499)
        return self._stream(answer) if stream else self._json(name, *answer)

    def _json(self, name: str, data: dict, elapsed: float) -> Response:
        self.state.metrics.backend_latency.labels(name).observe(elapsed)
        spend, estimated = answer_spend(self.state, name, self.raw, data.get("usage") or {}, None)
        self.account(name, spend)
        backend_id = data.get("id")
        data["id"], data["model"] = self.rid, name
        data["caproute"] = {
            **self.meta,
            "model": name,
            "backend_id": backend_id,
            "attempts": self.attempts,
            "fallback": bool(self.attempts),
            "spend_usd": spend,
            "spend_estimated": estimated,
        }
        self.register(name)
        self._log(name, data=data, spend=spend, estimated=estimated)
        self.trace.done(name, stream=False)
        return json_response(self.render(data), headers=self.headers(name, elapsed))

    def _stream(self, start: StreamStart) -> Response:
        self.state.metrics.backend_latency.labels(start.model).observe(start.first_byte_s)
        headers = self.headers(start.model, start.first_byte_s)
        headers["cache-control"] = "no-cache"
        return StreamingResponse(self._relay(start), media_type="text/event-stream", headers=headers)

    async def _relay(self, start: StreamStart):
        """The client's event stream: the backend's chunks under this response's id and model, the
        ``caproute`` object in the first; an error event (not a fallback) when the backend fails
        after its first content chunk. Registers and accounts however the stream ends."""
        state, name = self.state, start.model
        info = {**self.meta, "model": name, "attempts": self.attempts, "fallback": bool(self.attempts)}
        n_chunks, usage = 0, {}
        parts: list[str] = []  # the answer text, for the request log

        def relay(chunk: dict) -> bytes:
            nonlocal n_chunks, usage
            problem = chunk_problem(chunk)
            if problem is not None:
                raise BackendFailure(name, *problem)
            if chunk.get("usage") is not None:
                if usage_ok(state, name, chunk["usage"]):
                    usage = chunk["usage"]
                else:
                    del chunk["usage"]  # not forwarded; the tokens are estimated
            n_chunks += 1
            if state.request_log is not None:
                parts.append(delta_text(chunk))
            chunk["id"], chunk["model"] = self.rid, name
            if n_chunks == 1:
                chunk["caproute"] = info
            return self.event(chunk)

        try:
            for chunk in start.head:
                yield relay(chunk)
            async for chunk in start.chunks:
                if chunk is None:
                    break
                yield relay(chunk)
            else:
                raise BackendFailure(name, "stream_cut", "the backend closed the stream without [DONE]")
            yield self.end_events()
        except Exception as e:
            reason = (
                e.reason
                if isinstance(e, BackendFailure)
                else "stream_cut"
                if isinstance(e, httpx.HTTPError)
                else "bad_response"
            )
            state.metrics.backend_errors.labels(name, reason).inc()
            log.warning("stream from %s broke after %d chunks: %s", name, n_chunks, e)
            err = error_body(
                f"the backend '{name}' failed mid-stream ({reason}); the answer is incomplete",
                type="server_error",
                code="backend_stream_failed",
            )
            yield self.error_event(err)
        finally:
            # registered first: the client has the id since the first chunk, whatever happens next
            self.register(name)
            # the client may have left (the body task is being cancelled): close the backend
            # connection and free the model's slot regardless
            with anyio.CancelScope(shield=True):
                await start.aclose()
            try:
                spend, est = answer_spend(state, name, self.raw, usage, n_chunks)
                self.account(name, spend)
                self._log(name, text="".join(parts), usage=usage, spend=spend, estimated=est)
            except Exception:
                log.exception("accounting of stream %s from %s failed", self.rid, name)
            self.trace.done(name, stream=True)

    # -- the wire format (the Anthropic Messages API overrides these: serve/anthropic.py) ----------
    def render(self, data: dict) -> dict:
        """The JSON answer in the client's API (OpenAI's chat completion here)."""
        return data

    def event(self, chunk: dict) -> bytes:
        """One backend chunk as the client's server-sent event(s)."""
        return _sse(chunk)

    def end_events(self) -> bytes:
        """What ends a complete stream."""
        return b"data: [DONE]\n\n"

    def error_event(self, err: dict) -> bytes:
        """The event of a stream that broke after its first content (OpenAI's error body ``err``)."""
        return b"data: " + json.dumps(err).encode() + b"\n\n"

    def headers(self, model: str, backend_s: float) -> dict[str, str]:
        h = {"x-caproute-model": model, "x-caproute-response-id": self.rid}
        if self.meta.get("router"):
            h["x-caproute-router"] = self.meta["router"]
        if self.meta.get("policy_version"):
            h["x-caproute-policy-version"] = self.meta["policy_version"]
        h["server-timing"] = server_timing(self.t_in, self.meta["routing_overhead_ms"], backend_s)
        return h

    # -- accounting and registration ----------------------------------------------------------------
    def account(self, name: str, spend: float) -> None:
        """Routing metrics, fallbacks, the sticky conversation and the policy's drift monitor."""
        handle, params, state = self.handle, self.params, self.state
        if handle is None:
            return
        m = state.metrics
        models = tuple(handle.pool_names[x] for x in handle.models)
        m.routed_to(handle.name, name, models)
        if self.attempts:
            m.fallbacks.labels(handle.name).inc()
        if self.conv is not None:
            state.sticky.set(self.conv, handle.name, name)
        if handle.drift is not None and params is not None and params.policy is handle.policy:
            self._drift(name, models.index(name), spend)

    def _drift(self, name: str, idx: int, spend: float) -> None:
        handle, m = self.handle, self.state.metrics
        st = handle.drift.record(idx, spend, float(self.decision["mu_q"][name]),
                                 self.decision.get("mu_latency", {}).get(name))
        m.drift.labels(handle.name, "share_tv").set(st.share_tv)
        m.drift.labels(handle.name, "target").set(st.target_deviation)
        m.drifting.labels(handle.name).set(1.0 if st.drifting else 0.0)
        if st.changed and st.drifting:
            log.warning(
                "router %s: live traffic drifted from policy %s (share TV %.3f, target deviation %.3f over "
                "the last %d requests; tolerances %.3f / %.3f); consider `caproute calibrate` again",
                handle.name,
                handle.policy.version,
                st.share_tv,
                st.target_deviation,
                st.n,
                handle.drift.share_tol,
                handle.drift.target_tol,
            )
        elif st.changed:
            log.info("router %s: live traffic back within policy %s tolerance", handle.name, handle.policy.version)

    def register(self, model: str) -> None:
        """The response id in the feedback store (feedback on it is accepted from now on)."""
        handle, params = self.handle, self.params
        with self.trace.registering(model):
            self.state.store.register(
                {
                    "response_id": self.rid,
                    "kind": self.kind,
                    "router": handle.name if handle else None,
                    "model": model,
                    "conversation_id": self.conv,
                    "policy_version": params.version if params else None,
                    "lam": params.lam if params else None,
                    "beta": params.beta if params else None,
                    "decision": self.decision,
                }
            )

    def _log(self, model: str, **answer) -> None:
        log_answer(
            self.state,
            response_id=self.rid,
            kind=self.kind,
            router=self.handle.name if self.handle else None,
            model=model,
            raw=self.raw,
            routing=self.routing_record(),
            **answer,
        )
        judge = self.state.shadow_judge
        if judge is not None and self.handle is not None:
            judge.offer(self.rid, model, self.raw, answer)  # sampled, judged later: never delays the client

    def routing_record(self) -> dict | None:
        """What off-policy replay needs of a routed request (the request log's routing columns)."""
        handle, params, pick = self.handle, self.params, self.pick
        if handle is None or pick is None:
            return None
        return explore.routing_record(
            self.routing_text, pick, router_version=handle.fingerprint,
            policy_version=params.version if params else None, lam=params.lam if params else None,
            beta=params.beta if params else None, lam_t=params.lam_t if params else None,
            exploration=self.state.exploration)


def server_timing(t_in: float, route_ms: float, backend_s: float) -> str:
    """``Server-Timing``: routing decision, backend call, and the proxy's own time (total - backend)."""
    total_ms = (time.perf_counter() - t_in) * 1e3
    backend_ms = backend_s * 1e3
    return (
        f"route;dur={route_ms:.3f}, backend;dur={backend_ms:.3f}, proxy;dur={total_ms - backend_ms:.3f}, "
        f"total;dur={total_ms:.3f}"
    )
