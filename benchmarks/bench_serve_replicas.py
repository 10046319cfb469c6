"""Issue 26 benchmark: `caproute serve` replicas sharing one PostgreSQL state.

Separate processes on this machine: one echo backend (``python -m caproute.serve.echo``), N
proxies (``caproute serve --state postgresql://...``, N = 1, 2, 4) and a private PostgreSQL 15
server (:class:`caproute.serve.stores.tempdb.TempPostgres`, unix socket, fsync on), the load
generator in this process (bench_serve's keep-alive client). The "load balancer" is the client:
its 50 connections are spread round-robin over the replicas. Every routed request registers its
response id in PostgreSQL (one group commit per batch of queued registrations per replica).

Figures:

- routed requests/s at 50 closed-loop clients over N replicas, and the CPU per request from /proc
  of the proxies (sum over replicas) and of the PostgreSQL server (postmaster and its backends):
  on a 2-core machine the CPU per request is the figure that carries over; requests/s here is
  bounded by the two cores the load generator, the proxies, the backend and PostgreSQL share;
- the added latency of the PostgreSQL state against the SQLite files: one replica each, 100
  requests/s paced (open loop, 50 clients), p50 and p99 of PostgreSQL minus SQLite.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_serve as bs

REPLICAS = (1, 2, 4)


async def spread_closed_loop(ports: list[int], body: bytes, n: int, clients: int) -> list[float]:
    """``clients`` keep-alive connections, client k on ``ports[k % len(ports)]``, until ``n`` requests."""
    lat, left = [], [n]

    async def worker(k):
        c = bs.Conn(ports[k % len(ports)])
        try:
            while left[0] > 0:
                left[0] -= 1
                t = time.perf_counter()
                status, _, _ = await c.request("/v1/chat/completions", body)
                lat.append(time.perf_counter() - t)
                if status != 200:
                    raise RuntimeError(f"HTTP {status}")
        finally:
            c.close()

    await asyncio.gather(*[worker(k) for k in range(clients)])
    return lat


def start_replica(router: Path, pool: Path, port: int, tmp: Path, name: str, state: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "caproute", "serve", "--router", f"dars-knn={router}", "--pool", str(pool),
           "--insecure-local", "--port", str(port), "--feedback-db", str(tmp / f"{name}.sqlite3"),
           "--log-level", "warning"]
    if state is not None:
        cmd += ["--state", state]
    return bs.start(cmd, tmp / f"{name}.log")


def postmaster_pid(db) -> int:
    return int((db.data / "postmaster.pid").read_text().split()[0])


def run(quick: bool = False) -> list[dict]:
    from caproute.routers.pipeline import train_pipeline
    from caproute.serve.stores.tempdb import TempPostgres, pg_bin
    from caproute.serve.testing import write_pool_yaml

    if pg_bin() is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    med = statistics.median
    repeats, n_req, seconds = (1, 600, 4.0) if quick else (3, 1500, 10.0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    router = train_pipeline(bs.synthetic_observations(), router="knn", features="tfidf").save(tmp / "dars-knn")
    body = json.dumps(bs.BODY).encode()
    rows: list[dict] = []
    procs: list[subprocess.Popen] = []
    with TempPostgres() as db:
        try:
            echo = bs.free_port()
            procs.append(bs.start([sys.executable, "-m", "caproute.serve.echo", "--port", str(echo), "--model", "e"],
                                  tmp / "echo.log"))
            bs.wait_http(echo, "/v1/models", procs[-1])
            pool = write_pool_yaml(tmp / "pool.yaml", [
                {"name": m, "base_url": f"http://127.0.0.1:{echo}/v1", "model": m, "max_concurrency": 1024}
                for m in bs.ECHO_MODELS])
            pg_pid = postmaster_pid(db)
            for n in REPLICAS:
                ports = [bs.free_port() for _ in range(n)]
                reps = [start_replica(router, pool, p, tmp, f"r{n}-{k}", db.url) for k, p in enumerate(ports)]
                try:
                    for p, proc in zip(ports, reps, strict=True):
                        bs.wait_http(p, "/healthz", proc, 180)
                    asyncio.run(spread_closed_loop(ports, body, 200, bs.CLIENTS))  # warm-up
                    rate, cpu_proxy, cpu_pg = [], [], []
                    for _ in range(repeats):
                        c0 = sum(bs.cpu_seconds(r.pid) for r in reps)
                        g0 = bs.process_tree_cpu(pg_pid)
                        t = time.perf_counter()
                        asyncio.run(spread_closed_loop(ports, body, n_req, bs.CLIENTS))
                        rate.append(n_req / (time.perf_counter() - t))
                        cpu_proxy.append((sum(bs.cpu_seconds(r.pid) for r in reps) - c0) / n_req * 1e3)
                        cpu_pg.append((bs.process_tree_cpu(pg_pid) - g0) / n_req * 1e3)
                finally:
                    bs.stop(reps)
                rows.append({"benchmark": "serve_replicas", "figure": f"routed requests/s, {n} replica(s), PostgreSQL",
                             "value": round(med(rate), 1), "unit": "req/s", "goal": "",
                             "notes": f"50 closed-loop clients spread over the replicas; CPU per request: proxies "
                                      f"{med(cpu_proxy):.2f} ms, PostgreSQL {med(cpu_pg):.2f} ms (/proc); "
                                      f"{bs.load_note()}"})
                rows.append({"benchmark": "serve_replicas", "figure": f"CPU ms per routed request, {n} replica(s)",
                             "value": round(med(cpu_proxy) + med(cpu_pg), 3), "unit": "ms",
                             "goal": "", "notes": f"proxies {med(cpu_proxy):.3f} + PostgreSQL {med(cpu_pg):.3f}; "
                                                  f"{1000 / (med(cpu_proxy) + med(cpu_pg)):.0f} req/s per free core"})
            # added latency of the PostgreSQL state against the SQLite files, one replica, 100 req/s paced
            paced = {}
            for name, state in (("sqlite", None), ("postgresql", db.url)):
                port = bs.free_port()
                rep = start_replica(router, pool, port, tmp, f"paced-{name}", state)
                try:
                    bs.wait_http(port, "/healthz", rep, 180)
                    asyncio.run(bs.closed_loop(port, "/v1/chat/completions", body, 200, bs.CLIENTS))
                    paced[name] = asyncio.run(bs.open_loop(port, "/v1/chat/completions", body, 100, seconds,
                                                           bs.CLIENTS))
                finally:
                    bs.stop([rep])
            for q in (50, 99):
                s, p = bs.pct(paced["sqlite"], q), bs.pct(paced["postgresql"], q)
                rows.append({"benchmark": "serve_replicas", "figure": f"added p{q} of PostgreSQL state vs SQLite, "
                             "100 req/s paced", "value": round(p - s, 2), "unit": "ms", "goal": "",
                             "notes": f"one replica each; p{q} {p:.2f} ms (PostgreSQL) vs {s:.2f} ms (SQLite); "
                                      f"{bs.load_note()}"})
        finally:
            bs.stop(procs)
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(json.dumps(r))
