"""caproute as a LiteLLM routing plugin (``pip install 'caproute[litellm]'``).

LiteLLM (SDK ``Router(plugins=[...])`` from 1.92, proxy ``router_settings.plugins`` from 1.94)
runs each routing plugin's ``async run(context)`` before it picks a deployment; a plugin narrows
``context.candidate_models`` (the deployments' ``litellm_params.model`` strings of the requested
model group) and writes ``context.signals``. :class:`CaprouteRoutingPlugin` does that with a
caproute router (a ``caproute train`` folder) or a dueling policy (``caproute duel init``), loaded
once:

- the first attempt of a request is decided (the routing text of the conversation, micro-batched
  with concurrent requests as ``caproute serve`` does) and the candidates narrowed to the chosen
  model; a retry of the same request (LiteLLM runs the plugins again, with the previous signals in
  the request's metadata) narrows to the next model of caproute's fallback order, without deciding
  again;
- the decision (model, predicted mu_q, mu_c, sigma_q and utility, lambda/beta, policy version,
  response id, fallback order, attempt) goes into ``context.signals["caproute"]``;
- with ``feedback_db`` the decision is registered in caproute's feedback store under the response
  id, and with ``log_store`` the answered request is written to caproute's request log (the same
  stores and record formats as ``caproute serve --feedback-db/--log-store``), with the routing
  record replay needs (routing text, the candidates caproute chose among, the drawn model and its
  propensity, lambda/beta/lambda_t, router and policy versions; built by the proxy's own
  :func:`caproute.serve.explore.routing_record`), so ``caproute feedback export`` (observations
  and ``--replay-log``), ``caproute replay`` and retraining work for LiteLLM traffic too. A request
  a fallback answered is logged with the model that answered (export skips it from the replay log,
  as the proxy's); a dueling policy's draw has no known propensity, so its rows carry no routing
  record (replay skips them). ``explore=EPS`` samples the model as ``caproute serve --explore``
  does (:mod:`caproute.serve.explore`: the same distribution over the candidates, the drawn
  model's propensity logged). The answer
  side needs the plugin registered as a LiteLLM callback as well (``litellm.callbacks`` /
  ``litellm_settings.callbacks``): it is a ``CustomLogger``, and it also puts the decision in a
  non-streamed answer's body (``caproute``) and one chunk of a stream (the first one LiteLLM's
  streaming hook sees, which in 1.110 is the last chunk).

Models are matched to candidates by ``model_map`` ({caproute model: litellm model}) or else by
name: a candidate equal to the caproute model's name or ending in ``/<name>`` (``openai/big``).
Candidates that caproute does not know are removed while caproute routes; a model group with none
of caproute's models is left untouched. Per-request lambda/beta: ``metadata={"caproute":
{"lambda": 0.2, "beta": 0}}`` in the request (most specific first: the request, the plugin's
``lam``/``beta``, the calibrated ``policy``, the router's training values); the PROPOSED latency
weight the same way, ``{"lambda_t": 0.5}`` (else a latency-budget policy's, else 0: the paper's U;
a router without a latency model refuses lambda_t > 0 with a ConfigError).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    from litellm.integrations.custom_logger import CustomLogger
except ImportError as e:  # pragma: no cover - the extra is missing
    raise ImportError("caproute.integrations.litellm needs LiteLLM: pip install 'caproute[litellm]'") from e

from caproute.errors import ConfigError

log = logging.getLogger("caproute.litellm")

SIGNAL_KEY = "caproute"
#: LiteLLM releases with routing plugins in both the SDK (1.92) and the proxy (1.94); the tests
#: pin the release they ran against (tests/test_litellm_plugin.py: TESTED_LITELLM).
MIN_LITELLM = "1.94"
#: routing records held from the decision until the answer is logged (older ones are dropped: a request
#: that never answered): bounds the memory at about 10k routing texts
MAX_PENDING_RECORDS = 10_000
_PARAM_KEYS = {"lambda": "lam", "lam": "lam", "beta": "beta", "lambda_t": "lam_t", "lam_t": "lam_t"}


@dataclass(frozen=True)
class Choice:
    """One request's routing: caproute model names in fallback order (best first) and what to record."""

    order: tuple[str, ...]
    router: str
    policy_version: str
    params_source: str
    lam: float | None
    beta: float | None
    decision: dict[str, Any]  # the full decision (every model's predictions), as caproute serve stores it
    lam_t: float | None = None  # the PROPOSED latency weight the decision was made at (None: a duel)
    router_version: str | None = None  # the router folder's fingerprint (None: a duel)


class _RouterChooser:
    """A saved routing pipeline behind the proxy's decision batcher (one vectorised decide per loop turn)."""

    def __init__(self, path: str | Path, name: str | None, policy: str | Path | None, lam, beta):
        from caproute.routers.pipeline import RoutingPipeline
        from caproute.serve.calibrate import directory_fingerprint, load_policy
        from caproute.serve.routing import RouterHandle

        path = Path(path)
        pipeline = RoutingPipeline.load(path)
        self.handle = RouterHandle(name or path.name, path, pipeline, {m: m for m in pipeline.models},
                                   directory_fingerprint(path))
        if policy is not None:
            self.handle.attach_policy(load_policy(policy))
        self.lam, self.beta = _nonneg(lam, "lam"), _nonneg(beta, "beta")

    @property
    def models(self) -> tuple[str, ...]:
        return self.handle.models

    def params(self, request: Mapping[str, Any]) -> tuple[float, float, float, str, str]:
        """(lam, beta, lam_t, source, policy version): the request's, else the plugin's, the policy's,
        the router's; lam_t: the request's, else a latency-budget policy's, else 0."""
        h, pol = self.handle, self.handle.policy
        lam, beta, lam_t, source = h.pipeline.lam, h.pipeline.beta, 0.0, "default"
        if pol is not None:
            lam, beta, lam_t, source = pol.lam, pol.beta, pol.lam_t, "policy"
        if self.lam is not None or self.beta is not None:
            lam = lam if self.lam is None else self.lam
            beta = beta if self.beta is None else self.beta
            lam_t, source = 0.0, "plugin"
        if request:
            lam, beta, source = request.get("lam", lam), request.get("beta", beta), "request"
            lam_t = request.get("lam_t", lam_t)
        version = pol.version if source == "policy" else f"{source}:lambda={lam:g},beta={beta:g}" + (
            f",lambda_t={lam_t:g}" if lam_t > 0 else "")
        return float(lam), float(beta), float(lam_t), source, version

    async def choose(self, text: str, request: Mapping[str, Any]) -> Choice:
        from caproute.serve.routing import fallback_order

        lam, beta, lam_t, source, version = self.params(request)
        self.handle.pipeline.check_lam_t(lam_t)  # a router without latencies: a named ConfigError
        d = await self.handle.batcher.decide(text, lam, beta, lam_t)
        order = fallback_order(d.utility, d.mu_c, d.model, self.models)
        return Choice(tuple(order), self.handle.name, version, source, lam, beta, d.to_dict(), lam_t,
                      self.handle.fingerprint)


class _DuelChooser:
    """A dueling-bandit policy: its selected pair first (the first arm answers), then the other arms."""

    def __init__(self, path: str | Path, name: str | None):
        from caproute.bandits.policy import DuelingPolicy

        self.path = Path(path)
        self.policy = DuelingPolicy.load(self.path)
        self.name = name or "duel"
        self.policy.embed("warm-up")  # load the sentence encoder now, not in the first request

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.policy.models_)

    async def choose(self, text: str, request: Mapping[str, Any]) -> Choice:
        p = self.policy
        i, j = p.select(p.embed(text))
        models = self.models
        order = [models[i]] + ([models[j]] if j != i else []) + [m for k, m in enumerate(models) if k not in (i, j)]
        version = f"{p.name}@t={p.t_}"
        decision = {"model": models[i], "kind": "duel", "pair": [models[i], models[j]], "policy": p.name,
                    "policy_step": int(p.t_)}
        return Choice(tuple(order), self.name, version, "duel", None, None, decision)


class CaprouteRoutingPlugin(CustomLogger):
    """A LiteLLM routing plugin (``async run(context)``) and callback that routes with caproute.

    Give exactly one of ``router`` (a ``caproute train`` folder) and ``duel_policy`` (a
    ``caproute duel init`` folder). ``name``: the router's name in records (default: the folder's).
    ``policy``: a calibrated policy file of that router (``caproute calibrate``). ``lam``/``beta``:
    fixed lambda/beta for every request (a request's ``metadata.caproute`` still wins).
    ``model_map``: {caproute model: LiteLLM ``litellm_params.model``} where names differ.
    ``conversation``/``max_routing_chars``: which text the router sees (as ``caproute serve``).
    ``max_attempts``: how many models of the fallback order retries may walk (then the last repeats).
    ``feedback_db``/``log_store``: caproute's feedback store and request log (SQLite paths), off by default.
    ``explore``/``explore_mode``/``explore_temperature``/``explore_seed``: sample the served model
    as ``caproute serve --explore`` does (a router only; default 0: the router's choice, propensity 1).
    """

    def __init__(self, router: str | Path | None = None, *, duel_policy: str | Path | None = None,
                 name: str | None = None, policy: str | Path | None = None, lam: float | None = None,
                 beta: float | None = None, model_map: Mapping[str, str] | None = None,
                 conversation: str = "last_user", max_routing_chars: int = 4000, max_attempts: int = 3,
                 feedback_db: str | Path | None = None, log_store: str | Path | None = None,
                 explore: float = 0.0, explore_mode: str = "epsilon", explore_temperature: float | None = None,
                 explore_seed: int | None = None):
        super().__init__()
        if (router is None) == (duel_policy is None):
            raise ConfigError("CaprouteRoutingPlugin: give exactly one of router= (a `caproute train` folder) "
                              "and duel_policy= (a `caproute duel init` folder)")
        if policy is not None and router is None:
            raise ConfigError("CaprouteRoutingPlugin: policy= calibrates a router; it needs router=")
        if max_attempts < 1:
            raise ConfigError(f"CaprouteRoutingPlugin: max_attempts must be >= 1, got {max_attempts}")
        from caproute.serve.conversation import MODES
        from caproute.serve.explore import DEFAULT_TEMPERATURE, Exploration

        if conversation not in MODES:
            raise ConfigError(f"CaprouteRoutingPlugin: conversation must be one of {MODES}, got '{conversation}'")
        try:
            self.exploration = Exploration(explore, explore_mode, DEFAULT_TEMPERATURE if explore_temperature is None
                                           else explore_temperature)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"CaprouteRoutingPlugin: {e}") from None
        if self.exploration.on and router is None:
            raise ConfigError("CaprouteRoutingPlugin: explore= samples from a router's predicted utilities; "
                              "it needs router= (a dueling policy explores by itself)")
        self.explore_rng = random.Random(explore_seed)
        self.chooser = (_RouterChooser(router, name, policy, lam, beta) if router is not None
                        else _DuelChooser(duel_policy, name))
        self.model_map = dict(model_map or {})
        unknown = sorted(set(self.model_map) - set(self.chooser.models))
        if unknown:
            raise ConfigError(f"CaprouteRoutingPlugin: model_map names {unknown}, which the router does not "
                              f"route to (its models: {list(self.chooser.models)})")
        self.conversation, self.max_routing_chars, self.max_attempts = conversation, max_routing_chars, max_attempts
        self._mappings: dict[tuple[str, ...], dict[str, str]] = {}
        self._stamped: OrderedDict[str, None] = OrderedDict()  # streams whose first chunk carries the decision
        self._records: OrderedDict[str, dict] = OrderedDict()  # response id -> routing record, until logged
        # LiteLLM keeps one callback per key (class name and public str/int/bool attributes): a unique one
        # lets two plugins in one process (or one after another) each receive their own answers
        self.instance_id = uuid.uuid4().hex
        self.store = self.request_log = None
        if feedback_db is not None:
            from caproute.serve.feedback import FeedbackStore

            self.store = FeedbackStore(FeedbackStore.check_path(feedback_db)).start()
        if log_store is not None:
            from caproute.serve.log_store import RequestLog

            self.request_log = RequestLog(RequestLog.check_path(log_store)).start()

    @property
    def models(self) -> tuple[str, ...]:
        return self.chooser.models

    def close(self) -> None:
        """Flush and close the feedback store and request log (their queued records are written)."""
        for writer in (self.store, self.request_log):
            if writer is not None:
                writer.close()

    # -- the routing plugin ------------------------------------------------------------------------
    def candidates_for(self, candidates: Sequence[str]) -> dict[str, str]:
        """{caproute model: candidate} for the models of this router that are among ``candidates``."""
        key = tuple(candidates)
        found = self._mappings.get(key)
        if found is None:
            found = {}
            for m in self.models:
                target = self.model_map.get(m)
                if target is not None:
                    if target in key:
                        found[m] = target
                    continue
                match = [c for c in key if c == m or c.endswith("/" + m)]
                if match:
                    found[m] = match[0]
            if len(self._mappings) > 1024:
                self._mappings.clear()
            self._mappings[key] = found
        return found

    async def run(self, context):
        """Narrow ``context.candidate_models`` to caproute's model for this attempt; sign the decision."""
        mapping = self.candidates_for(context.candidate_models)
        if not mapping:
            return context  # a model group caproute does not route: leave LiteLLM's choice alone
        metadata = context.metadata if isinstance(context.metadata, dict) else {}
        prev = (metadata.get("routing_plugin_signals") or {}).get(SIGNAL_KEY)
        if isinstance(prev, dict) and prev.get("candidates") == sorted(mapping.values()):
            signal = {**prev, "attempt": min(int(prev["attempt"]) + 1, len(prev["fallback_order"]) - 1)}
        else:
            t0 = time.perf_counter()
            from caproute.serve.conversation import routing_text

            text = routing_text(context.structured_messages or context.raw_messages or [], self.conversation,
                                self.max_routing_chars)
            choice = await self.chooser.choose(text, _request_params(metadata.get(SIGNAL_KEY)))
            signal, record = self._signal(choice, mapping, text, t0)
            self._register(signal, choice)
            if record is not None and self.request_log is not None:
                self._records[signal["response_id"]] = record
                if len(self._records) > MAX_PENDING_RECORDS:   # requests that never answered
                    self._records.popitem(last=False)
        chosen = signal["fallback_order"][signal["attempt"]]
        signal["model"], signal["litellm_model"] = _pick(signal, chosen), chosen
        context.candidate_models = [chosen]
        context.signals[SIGNAL_KEY] = signal
        return context

    def _signal(self, choice: Choice, mapping: dict[str, str], text: str, t0: float
                ) -> tuple[dict[str, Any], dict | None]:
        """(the signal, the request log's routing record: None for a duel). A router's served model is
        drawn among the candidates caproute knows (its choice among them, propensity 1, without
        ``explore``); the fallback order follows the drawn model as on caproute's proxy."""
        from caproute.serve import explore
        from caproute.serve.routing import fallback_order

        d = choice.decision
        order = [m for m in choice.order if m in mapping]
        drawn = record = None
        if isinstance(d.get("utility"), dict):   # a router (a duel's draw has no known propensity)
            candidates = [m for m in self.models if m in mapping]
            drawn = explore.pick(d["utility"], order[0], candidates, self.exploration, self.explore_rng)
            order = fallback_order(d["utility"], d["mu_c"], drawn.chosen, candidates)
            record = explore.routing_record(text, drawn, router_version=choice.router_version,
                                            policy_version=choice.policy_version, lam=choice.lam,
                                            beta=choice.beta, lam_t=choice.lam_t, exploration=self.exploration)
        order = order[: self.max_attempts]
        chosen = order[0]
        per_model = {k: d[k][chosen] for k in ("mu_q", "mu_c", "sigma_q", "utility") if isinstance(d.get(k), dict)}
        signal = {
            "response_id": f"chatcmpl-cr{uuid.uuid4().hex}",
            "router": choice.router,
            "decided_model": chosen,
            **per_model,
            "lambda": choice.lam, "beta": choice.beta, "lambda_t": choice.lam_t,
            "policy_version": choice.policy_version, "params_source": choice.params_source,
            "models": order,                                   # caproute names, fallback order
            "fallback_order": [mapping[m] for m in order],     # the same as LiteLLM candidates
            "candidates": sorted(mapping.values()),
            "attempt": 0,
            "decide_ms": round((time.perf_counter() - t0) * 1e3, 3),
        }
        if drawn is not None:   # as the proxy's answers: the drawn model's propensity (and the draw)
            signal["propensity"] = drawn.propensity
            if self.exploration.on:
                signal.update(explored=drawn.explored, explore_loss=round(drawn.loss, 6))
        return signal, record

    def _register(self, signal: dict[str, Any], choice: Choice) -> None:
        if self.store is None:
            return
        try:
            self.store.register({
                "response_id": signal["response_id"], "created": time.time(), "kind": "chat",
                "router": choice.router, "model": signal["decided_model"], "policy_version": choice.policy_version,
                "lam": choice.lam, "beta": choice.beta,
                "decision": {**choice.decision, "fallback_order": signal["models"], "via": "litellm"},
            })
        except Exception:  # noqa: BLE001 - recording must never fail a request
            log.exception("caproute: could not register %s", signal["response_id"])

    # -- the answer side (LiteLLM callback hooks) ---------------------------------------------------
    async def async_post_call_success_deployment_hook(self, request_data, response, call_type):
        """A non-streamed answer carries the decision as ``caproute`` (body) and in ``_hidden_params``."""
        signal = _signal_of(request_data)
        if signal is not None and response is not None:
            with contextlib.suppress(Exception):   # a response type that takes no attributes
                response.caproute = signal
                response._hidden_params[SIGNAL_KEY] = signal
        return response

    async def async_post_call_streaming_deployment_hook(self, request_data, response_chunk, call_type):
        """One chunk of a stream carries the decision (``caproute``): the first this hook is shown."""
        signal = _signal_of(request_data)
        call = request_data.get("litellm_call_id") if isinstance(request_data, dict) else None
        if signal is not None and call and call not in self._stamped:
            self._stamped[call] = None
            if len(self._stamped) > 10_000:
                self._stamped.popitem(last=False)
            with contextlib.suppress(Exception):   # a chunk type that takes no attributes
                response_chunk.caproute = signal
        return response_chunk

    async def async_post_call_response_headers_hook(self, data, user_api_key_dict, response,
                                                    request_headers=None, litellm_call_info=None):
        """Proxy answers carry ``x-caproute-response-id``, ``x-caproute-model``, ``x-caproute-router``
        and ``x-caproute-policy-version``."""
        signal = _signal_of(data)
        if signal is None:
            return None
        return {"x-caproute-response-id": signal["response_id"], "x-caproute-model": signal["model"],
                "x-caproute-router": str(signal["router"]), "x-caproute-policy-version": signal["policy_version"]}

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        """Write the answered request to caproute's request log (and the model that answered to the store)."""
        signal = _signal_of(kwargs)
        if signal is None or (self.request_log is None and self.store is None):
            return
        routing = self._records.pop(signal["response_id"], None)
        try:
            answered = self._answered_model(signal, kwargs)
            if self.store is not None and answered != signal["decided_model"]:
                self.store.register({   # a fallback answered: the store's row names the model that did
                    "response_id": signal["response_id"], "created": time.time(), "kind": "chat",
                    "router": signal["router"], "model": answered, "policy_version": signal["policy_version"],
                    "lam": signal["lambda"], "beta": signal["beta"],
                    "decision": {k: signal[k] for k in ("decided_model", "models", "attempt")} | {"via": "litellm"},
                })
            if self.request_log is not None:
                text, finish, usage = _answer(response_obj)
                cost = kwargs.get("response_cost")
                self.request_log.record(
                    response_id=signal["response_id"], kind="chat", router=signal["router"], model=answered,
                    messages=list(kwargs.get("messages") or []), answer=text, finish_reason=finish, usage=usage,
                    cost_usd=float(cost) if isinstance(cost, int | float) else None,
                    cost_estimated=not isinstance(cost, int | float), routing=routing)
        except Exception:  # noqa: BLE001 - the log must not fail a request
            log.exception("caproute: could not log %s", signal.get("response_id"))

    def _answered_model(self, signal: dict[str, Any], kwargs: dict) -> str:
        """The caproute name of the deployment that answered (the signal's model when unknown)."""
        slo = kwargs.get("standard_logging_object") or {}
        served = slo.get("model") if isinstance(slo, dict) else None
        for name, cand in zip(signal["models"], signal["fallback_order"], strict=False):
            if served == cand:
                return name
        return signal["model"]

    # -- feedback, without caproute's proxy ---------------------------------------------------------
    def feedback(self, response_id: str, score: float, comment: str | None = None, timeout_s: float = 10.0):
        """Store a rating in [0, 1] of an answer (its ``caproute.response_id``) in the feedback store,
        durably (returns once committed); what ``POST /v1/feedback`` of caproute's proxy does."""
        from caproute.serve.feedback import Feedback

        if self.store is None:
            raise ConfigError("CaprouteRoutingPlugin: feedback needs feedback_db=")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise ValueError(f"score must be a number in [0, 1], got {score!r}")
        return self.store.add(Feedback("scalar", response_id, score=float(score), comment=comment)).result(timeout_s)


def _signal_of(data) -> dict[str, Any] | None:
    """The caproute signal stamped on a LiteLLM request's metadata (``metadata`` or ``litellm_metadata``)."""
    if not isinstance(data, dict):
        return None
    nested = data.get("litellm_params")   # LiteLLM's logging details keep the request's metadata there
    for md in (data.get("metadata"), data.get("litellm_metadata"),
               nested.get("metadata") if isinstance(nested, dict) else None):
        if isinstance(md, dict):
            sig = (md.get("routing_plugin_signals") or {}).get(SIGNAL_KEY)
            if isinstance(sig, dict):
                return sig
    return None


def _pick(signal: dict[str, Any], litellm_model: str) -> str:
    return signal["models"][signal["fallback_order"].index(litellm_model)]


def _request_params(raw) -> dict[str, float]:
    """lambda/beta/lambda_t of a request's ``metadata.caproute`` (``{}`` when none); bad values are a ValueError."""
    if not isinstance(raw, Mapping):
        return {}
    out = {}
    for key, value in raw.items():
        name = _PARAM_KEYS.get(str(key).lower())
        if name is not None:
            out[name] = _nonneg(value, f"metadata.caproute.{key}")
    return out


def _nonneg(value, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 or value == float("inf"):
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def _answer(response) -> tuple[str | None, str | None, dict | None]:
    """(text, finish_reason, usage) of a LiteLLM ModelResponse (a streamed one is assembled by LiteLLM)."""
    try:
        data = response.model_dump() if hasattr(response, "model_dump") else dict(response)
    except Exception:  # noqa: BLE001
        return None, None, None
    from caproute.serve.log_store import answer_text

    text, finish = answer_text(data)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    return text, finish, usage
