"""Issue 21 benchmark: decode speed of the local pool's portable llama.cpp build.

For each pool model, one llama.cpp server (1 thread, as ``pool up`` runs them) answers the same
prompt ``reps`` times at temperature 0 with ``max_tokens`` 64; the figure is the median of
completion tokens per second of wall time (prompt processing included, as a user sees it).

The portable build is the project's venv (the Python running this file). A natively compiled
build (``GGML_NATIVE=ON``, what llama-cpp-python builds by default) is the baseline when
``CAPROUTE_BENCH_NATIVE_PYTHON`` names a Python that has one installed, e.g.::

    python3 -m venv /tmp/venv-native
    CMAKE_ARGS="-DLLAVA_BUILD=OFF" /tmp/venv-native/bin/pip install --no-cache-dir "llama-cpp-python[server]==0.3.36"
    CAPROUTE_BENCH_NATIVE_PYTHON=/tmp/venv-native/bin/python python benchmarks/run_all.py --only pool

Both run in this process's run, one server at a time, alternating per repetition, so the ratio
portable/native compares like with like. On a host where the native build faults (a CPU that
reports AMX but a VM that refuses its tile instructions) the baseline row says how it ended.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "Write three sentences about the sea."
MAX_TOKENS = 64


def _start(python: str, gguf: Path, alias: str, chat_format: str | None, workdir: Path, tag: str):
    from caproute.collect.pool import _free_port, server_command, server_env, wait_ready

    port = _free_port()
    cmd = server_command(gguf, alias, port, chat_format)
    cmd[0] = python
    log = workdir / f"{tag}-{alias}.log"
    exit_file = workdir / f"{tag}-{alias}.exit"
    with open(log, "wb") as fh:  # under the pool's watcher, which records how the server ended
        proc = subprocess.Popen([sys.executable, "-m", "caproute.collect.pool_watch", str(exit_file), "--", *cmd],
                                stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=server_env())
    try:
        wait_ready(port, 120.0, pid=proc.pid, log=str(log), alias=alias, name=f"{alias} ({tag})",
                   exit_file=str(exit_file))
    except Exception as e:
        proc.kill()
        proc.wait()
        return None, port, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return proc, port, None


def _tok_per_s(port: int, alias: str) -> float:
    import httpx

    t = time.perf_counter()
    r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=300.0,
                   json={"model": alias, "messages": [{"role": "user", "content": PROMPT}],
                         "max_tokens": MAX_TOKENS, "temperature": 0.0, "seed": 1})
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"] / (time.perf_counter() - t)


def _system_info(python: str) -> str:
    out = subprocess.run([python, "-c", "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"],
                         capture_output=True, text=True, timeout=120)
    return " ".join(x.split("=")[0].strip() for x in out.stdout.split("|") if x.strip().endswith("= 1"))


def run(quick: bool = False) -> list[dict]:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return [{"benchmark": "pool", "figure": "decode tokens/s", "value": None, "unit": "tokens/s", "goal": None,
                 "baseline": None, "ratio": None, "notes": "skipped: llama-cpp-python not installed (make install)"}]
    from caproute.collect.pool import LOCAL_MODELS, model_file

    reps = 3 if quick else 7
    native = os.environ.get("CAPROUTE_BENCH_NATIVE_PYTHON")
    builds = {"portable": sys.executable} | ({"native": native} if native else {})
    info = {tag: _system_info(py) for tag, py in builds.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("smollm2-135m", "gemma3-270m"):
            spec = LOCAL_MODELS[name]
            gguf = model_file(name)
            servers, failed = {}, {}
            for tag, py in builds.items():
                proc, port, err = _start(py, gguf, spec.alias, spec.chat_format, Path(tmp), tag)
                if err:
                    failed[tag] = err
                else:
                    servers[tag] = (proc, port)
            try:
                speeds: dict[str, list[float]] = {tag: [] for tag in servers}
                for _, port in servers.values():
                    _tok_per_s(port, spec.alias)  # warm-up
                for _ in range(reps):
                    for tag, (_, port) in servers.items():  # alternate: same load for both
                        speeds[tag].append(_tok_per_s(port, spec.alias))
            finally:
                for proc, _ in servers.values():
                    proc.terminate()
                    proc.wait(30)
            med = {tag: statistics.median(v) for tag, v in speeds.items()}
            base = med.get("native")
            notes = (f"median of {reps}, {MAX_TOKENS} tokens, 1 thread, one server at a time; portable: "
                     f"{info['portable']}")
            if native:
                notes += f"; native: {info.get('native')}" + (f"; native failed: {failed['native']}" if "native" in failed
                                                              else "")
            else:
                notes += "; no native baseline (set CAPROUTE_BENCH_NATIVE_PYTHON)"
            if "portable" in failed:
                notes += f"; PORTABLE FAILED: {failed['portable']}"
            rows.append({
                "benchmark": "pool",
                "figure": f"decode tokens/s, {name}, portable build",
                "value": round(med["portable"], 1) if "portable" in med else None,
                "unit": "tokens/s",
                "goal": None,
                "baseline": round(base, 1) if base else None,
                "ratio": round(med["portable"] / base, 3) if base and "portable" in med else None,
                "notes": notes,
            })
    return rows
