"""What caproute's LiteLLM routing plugin adds to LiteLLM's own routing (issue 27: goal <= 1 ms p50).

LiteLLM's deployment pick (``Router.async_get_available_deployment``, which runs the routing
plugins) over six deployments of one model group, timed one request at a time: without plugins,
and with :class:`caproute.integrations.litellm.CaprouteRoutingPlugin` over bench_serve's router
(TF-IDF kNN, 200 training queries x 6 models), interleaved in rounds so that other load on the
host hits both alike; and with a no-op plugin, which is what LiteLLM's plugin pipeline costs by
itself (its RoutingContext, message normalisation, metadata). Also the plugin's ``run`` alone
(decide + narrow + signals). No backend is
called: only routing is measured. Skipped (one row saying so) when LiteLLM is not installed.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench_serve import ECHO_MODELS, synthetic_observations

TEXTS = [f"question {i}: topic{i % 10}word{i % 7} filler{i % 13} what is the answer" for i in range(64)]


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def _pick_times(router, n: int) -> list[float]:
    out = []
    for i in range(n):
        msgs = [{"role": "user", "content": TEXTS[i % len(TEXTS)]}]
        t0 = time.perf_counter()
        if hasattr(router, "select"):   # LiteLLM 1.110; async_get_available_deployment is its deprecated name
            await router.select("caproute", {}, messages=msgs)
        else:
            await router.async_get_available_deployment(model="caproute", messages=msgs, request_kwargs={})
        out.append((time.perf_counter() - t0) * 1e3)
    return out


async def _plugin_times(plugin, n: int) -> list[float]:
    from litellm.types.router import RoutingContext

    cands = [f"openai/{m}" for m in ECHO_MODELS]
    out = []
    for i in range(n):
        msgs = [{"role": "user", "content": TEXTS[i % len(TEXTS)]}]
        ctx = RoutingContext(raw_messages=msgs, structured_messages=msgs, candidate_models=list(cands))
        t0 = time.perf_counter()
        await plugin.run(ctx)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


class _NoopPlugin:
    """A routing plugin that changes nothing: what LiteLLM's plugin pipeline costs by itself."""

    async def run(self, context):
        return context


def run(quick: bool = False) -> list[dict]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        from litellm import Router
    except ImportError:
        return [{"benchmark": "litellm_plugin", "figure": "added p50 to LiteLLM's routing", "value": "skipped",
                 "unit": "", "goal": "<= 1 ms", "notes": "LiteLLM not installed (pip install 'caproute[litellm]')"}]
    from caproute.integrations.litellm import CaprouteRoutingPlugin
    from caproute.routers.pipeline import train_pipeline

    rounds, per_round = (4, 100) if quick else (10, 200)
    tmp = Path(tempfile.mkdtemp(prefix="bench-litellm-plugin-"))
    router_dir = train_pipeline(synthetic_observations(), router="knn", features="tfidf").save(tmp / "dars-knn")
    plugin = CaprouteRoutingPlugin(router_dir)
    model_list = [{"model_name": "caproute", "litellm_params": {
        "model": f"openai/{m}", "api_base": f"http://127.0.0.1:9/{m}/v1", "api_key": "x"}} for m in ECHO_MODELS]
    bare, routed = Router(model_list=model_list), Router(model_list=model_list, plugins=[plugin])
    noop = Router(model_list=model_list, plugins=[_NoopPlugin()])

    async def measure():
        await _pick_times(bare, 50)          # warm-up: imports, caches, the router's first decisions
        await _pick_times(routed, 50)
        await _pick_times(noop, 50)
        await _plugin_times(plugin, 50)
        a, b, c, d = [], [], [], []
        for _ in range(rounds):
            a += await _pick_times(bare, per_round)
            b += await _pick_times(routed, per_round)
            d += await _pick_times(noop, per_round)
            c += await _plugin_times(plugin, per_round)
        return a, b, c, d

    decided = plugin.chooser.handle.batcher.decided
    bare_ms, routed_ms, plugin_ms, noop_ms = asyncio.run(measure())
    # every routed pick went through the plugin (one decision each), as did every run() alone
    assert plugin.chooser.handle.batcher.decided - decided == 2 * (50 + rounds * per_round)
    p50_noop = statistics.median(noop_ms)
    p50_bare, p50_routed = statistics.median(bare_ms), statistics.median(routed_ms)
    added = p50_routed - p50_bare
    load = os.getloadavg()[0]
    note = (f"LiteLLM {importlib.metadata.version('litellm')}, {len(bare_ms)} picks each, interleaved; "
            f"load average {load:.1f}")
    return [
        {"benchmark": "litellm_plugin", "figure": "LiteLLM deployment pick p50 / p99, no plugin",
         "value": f"{p50_bare:.3f} / {_p(bare_ms, 0.99):.3f}", "unit": "ms", "goal": "", "notes": note},
        {"benchmark": "litellm_plugin", "figure": "LiteLLM deployment pick p50 / p99, caproute plugin",
         "value": f"{p50_routed:.3f} / {_p(routed_ms, 0.99):.3f}", "unit": "ms", "goal": "", "notes": note},
        {"benchmark": "litellm_plugin", "figure": "added p50 to LiteLLM's routing (kNN 200 x 6)",
         "value": f"{added:.3f}", "unit": "ms", "goal": "<= 1 ms", "baseline": f"{p50_bare:.3f} ms",
         "ratio": f"{p50_routed / p50_bare:.2f}x", "notes": "goal met" if added <= 1.0 else "goal NOT met"},
        {"benchmark": "litellm_plugin", "figure": "added p50 of a no-op plugin (LiteLLM's plugin pipeline itself)",
         "value": f"{p50_noop - p50_bare:.3f}", "unit": "ms", "goal": "", "baseline": f"{p50_bare:.3f} ms",
         "notes": f"caproute's own share of the added p50: {p50_routed - p50_noop:.3f} ms"},
        {"benchmark": "litellm_plugin", "figure": "plugin run() alone p50 / p99 (decide + narrow + signals)",
         "value": f"{statistics.median(plugin_ms):.3f} / {_p(plugin_ms, 0.99):.3f}", "unit": "ms", "goal": "",
         "notes": note},
    ]


if __name__ == "__main__":
    import json

    for row in run(quick="--quick" in os.sys.argv):
        print(json.dumps(row))
