"""Does an OpenAI-compatible server's answer to a seeded request depend on the requests served
before it? Sends the same seeded requests three times (forward, reversed, forward) and counts
identical answers. With ``--pool`` it starts one local llama.cpp server (SmolLM2) for the check.

    python scripts/check_server_order.py --pool
    python scripts/check_server_order.py --base-url http://127.0.0.1:8000/v1 --model my-model

Used for docs/scaling.md ("Same seed, same observations?"): if forward vs reversed differ while
forward vs forward agree, collection answers depend on request order, so `collect --engine ray`
(which reorders requests) cannot reproduce `--engine local` answer for answer on that server.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import httpx

QUESTIONS = [f"Tom has {a} apples and buys {b} more. How many apples does Tom have now?" for a, b in
             [(3, 4), (5, 9), (12, 7), (8, 8), (21, 5), (6, 13), (9, 2), (15, 15), (4, 11), (7, 30), (2, 2),
              (40, 1)]]
TEMPLATE = "Solve the problem. End with a line 'Final Answer: <number>'.\n\n{q}"


def answers(base_url: str, model: str, order: list[tuple[int, str, int]], api_key: str | None) -> dict[int, str]:
    out = {}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(timeout=300, headers=headers) as c:
        for i, prompt, seed in order:
            r = c.post(f"{base_url}/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": prompt}],
                "temperature": 0.7, "top_p": 0.95, "seed": seed, "max_tokens": 48})
            r.raise_for_status()
            out[i] = r.json()["choices"][0]["message"]["content"]
    return out


def check(base_url: str, model: str, api_key: str | None = None) -> dict:
    reqs = [(i, TEMPLATE.format(q=q), 1000 + i) for i, q in enumerate(QUESTIONS)]
    fwd = answers(base_url, model, reqs, api_key)
    rev = answers(base_url, model, list(reversed(reqs)), api_key)
    fwd2 = answers(base_url, model, reqs, api_key)
    return {"requests": len(reqs),
            "identical, forward vs forward again": sum(fwd[i] == fwd2[i] for i in fwd),
            "identical, forward vs reversed order": sum(fwd[i] == rev[i] for i in fwd)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", action="store_true", help="start one local llama.cpp SmolLM2 server")
    ap.add_argument("--base-url")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--api-key")
    a = ap.parse_args()
    if a.pool:
        from caproute.collect.pool import start_pool

        with start_pool(["smollm2-135m"], port_base=0, workdir=tempfile.mkdtemp(), rewriter_server=False) as p:
            print(json.dumps(check(p.config.models[0].base_url, "smollm2-135m")))
    else:
        if not a.base_url:
            ap.error("--base-url or --pool")
        print(json.dumps(check(a.base_url, a.model, a.api_key)))


if __name__ == "__main__":
    main()
