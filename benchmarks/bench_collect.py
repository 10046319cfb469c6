"""Issue 4 benchmark: the collector's own ceiling, so it is never the bottleneck of a collection.

- ``collect_overhead``: generations per second the runner sustains (rewrite planning, client, scoring,
  batched DuckDB upserts) against a local OpenAI-compatible HTTP server that answers instantly. Goal:
  >= 20/s, i.e. at least 5x what the real local pool delivers (2-4 generations/s on 2 cores).
- ``scorer_numeric`` / ``scorer_math``: responses scored per second (math uses math-verify; goal
  >= 10/s, above the rate any pool produces MATH-length answers).

The real pool's throughput is reported from the builtin collection (DATASHEET.md, docs/local-pool.md),
not re-measured here: it takes the better part of an hour.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd


def _server():
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seed = int(body.get("seed", 0))
            if body["messages"][0]["role"] == "system":
                q = body["messages"][-1]["content"].removeprefix("Rewrite: ")
                text = f"Tell me now, {chr(97 + seed % 26)}{chr(97 + seed // 26 % 26)}: {q}"
            else:
                text = f"Final Answer: {seed % 2}"
            payload = json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text},
                        }
                    ],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _overhead(n_queries: int) -> float:
    from caproute.collect.config import parse_pool_config
    from caproute.collect.plan import CollectSpec
    from caproute.collect.runner import collect

    srv = _server()
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    try:

        def m(name):
            return {
                "name": name,
                "base_url": url,
                "model": name,
                "api_key_env": "",
                "price_input_per_1m": 1,
                "price_output_per_1m": 1,
                "max_concurrency": 4,
            }

        cfg = parse_pool_config(
            {
                "models": [m("a"), m("b"), m("c")],
                "rewriter": {"model": "rw", "endpoint": m("rw")},
                "tasks": {
                    "t": {
                        "prompt_template": "Q: {question}",
                        "scorer": "numeric",
                        "max_tokens": 8,
                        "kind": "math",
                    }
                },
            },
            source="bench",
        )
        q = pd.DataFrame(
            {
                "query_id": [f"q{i}" for i in range(n_queries)],
                "split": ["train"] * n_queries,
                "question": [f"What is {i} + 1?" for i in range(n_queries)],
                "context": [None] * n_queries,
                "answer": ["1"] * n_queries,
            }
        )
        with tempfile.TemporaryDirectory() as d:
            spec = CollectSpec(dataset="b", task="t", models=("a", "b", "c"), similarity_check=False)
            t0 = time.perf_counter()
            stats, _ = collect(cfg, q, Path(d) / "s.duckdb", spec, progress=False)
            wall = time.perf_counter() - t0
        return stats.done / wall
    finally:
        srv.shutdown()
        srv.server_close()


def _scorer_rate(name: str, n: int) -> float:
    from caproute.collect.scorers import get_scorer

    sc = get_scorer(name)
    texts = [f"Some reasoning.\nFinal Answer: {i % 50}" for i in range(n)]
    t0 = time.perf_counter()
    for i, t in enumerate(texts):
        sc(t, str(i % 40))
    return n / (time.perf_counter() - t0)


def run(quick: bool = False) -> list[dict]:
    reps = 1 if quick else 3
    nq = 20 if quick else 60
    overhead = statistics.median(_overhead(nq) for _ in range(reps))
    num = statistics.median(_scorer_rate("numeric", 5000) for _ in range(reps))
    mth = statistics.median(_scorer_rate("math", 100 if quick else 300) for _ in range(reps))
    return [
        {
            "benchmark": "collect",
            "figure": "collector ceiling (instant local server, 3 models, 3x3 grid)",
            "value": round(overhead, 1),
            "unit": "generations/s",
            "goal": ">= 20",
            "baseline": None,
            "ratio": None,
            "notes": f"{nq} training queries x 3 models x 9 observations + rewrites; median of {reps}",
        },
        {
            "benchmark": "collect",
            "figure": "numeric scorer",
            "value": round(num),
            "unit": "responses/s",
            "goal": ">= 10000",
            "baseline": None,
            "ratio": None,
            "notes": "Final Answer line + first number",
        },
        {
            "benchmark": "collect",
            "figure": "math scorer (math-verify)",
            "value": round(mth),
            "unit": "responses/s",
            "goal": ">= 10",
            "baseline": None,
            "ratio": None,
            "notes": "sympy-backed equivalence",
        },
    ]


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
