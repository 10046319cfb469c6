"""``caproute pool up|status|down``: the local llama.cpp model pool."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from caproute.cli import app
from caproute.cli.params import comma_list

pool_app = typer.Typer(no_args_is_help=True, help="Start, show and stop the local llama.cpp model pool.")
app.add_typer(pool_app, name="pool")

WorkdirOpt = Annotated[
    Path | None,
    typer.Option(
        "--workdir", help="pool state and logs (default ~/.cache/caproute/pool or $CAPROUTE_POOL_DIR)"
    ),
]


@pool_app.command("up")
def up(
    config_out: Annotated[Path, typer.Option("--config-out", help="write the pool YAML here")],
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models", help="comma-separated: smollm2-135m,gemma3-270m,smollm2-135m-q2k (default: all)",
            callback=comma_list,
        ),
    ] = None,
    port_base: Annotated[int, typer.Option("--port-base", help="first port (0 = pick free ports)")] = 8090,
    workdir: WorkdirOpt = None,
    n_threads: Annotated[int, typer.Option("--n-threads", help="threads per server")] = 1,
    rewriter: Annotated[
        str | None,
        typer.Option(
            "--rewriter", help="rewrite with this pool model instead of a dedicated SmolLM2 rewriter server"
        ),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option("--judge", help="also write a judge-scored 'chat' task graded by this pool model "
                                     "(open-ended prompts, no gold answer)"),
    ] = None,
) -> None:
    """Start one OpenAI-compatible llama.cpp server per model on 127.0.0.1 and write the pool YAML."""
    from caproute.collect.pool import start_pool

    names = list(models) if models else None
    h = start_pool(names, port_base, workdir, config_out=config_out, n_threads=n_threads, rewriter=rewriter,
                   judge=judge)
    _print(h.workdir)
    Console().print(
        f"pool config: {h.config_path}\nstop with: caproute pool down"
        + (f" --workdir {workdir}" if workdir else "")
    )


def _print(workdir: Path | None) -> list[dict]:
    from caproute.collect.pool import pool_status

    rows = pool_status(workdir)
    t = Table(title="local pool")
    for c in ("model", "base_url", "pid", "state", "weights"):
        # names and URLs are never cut (issue 16: the URL was truncated at 80 columns); the weights
        # file name folds onto a second line when the terminal is narrow
        full = max([len(c)] + [len(str(r.get(c if c != "model" else "name", ""))) for r in rows])
        t.add_column(c, no_wrap=c != "weights", min_width=full if c in ("model", "base_url") else None,
                     overflow="fold")
    for r in rows:
        state = "ready" if r["ready"] else ("starting" if r["alive"] else f"stopped: {r.get('exit') or 'exit status unknown'}")
        t.add_row(r["name"], r["base_url"], str(r["pid"]), state, Path(r["gguf"]).name)
    console = Console()
    if not console.is_terminal:  # piped or logged: print full rows instead of an 80-column table
        console = Console(width=max(console.width, 160))
    console.print(t if rows else "no pool running")
    for r in rows:
        if not r["alive"]:
            console.print(f"[red]{escape(r['name'])}[/] {escape(r.get('exit') or 'is not running (exit status unknown)')}; "
                          f"log {escape(r['log'])} ends with:\n{escape(r.get('log_tail') or '(empty)')}",
                          highlight=False, soft_wrap=True)
    return rows


@pool_app.command("status")
def status(workdir: WorkdirOpt = None) -> None:
    """Show the servers of the pool and whether they answer; a server that is no longer running is
    shown with how it ended and its log tail, and the exit status is 1."""
    rows = _print(workdir)
    if any(not r["alive"] for r in rows):
        raise typer.Exit(1)


@pool_app.command("check")
def check(
    models: Annotated[
        list[str] | None,
        typer.Option("--models", help="comma-separated pool models (default: all)", callback=comma_list),
    ] = None,
) -> None:
    """Smoke-check the local pool: start every model on free ports in a temporary folder, get one
    real completion from each, stop them. Run by `make install`; fails with a named error (exit
    status, log tail, what to do) when a server cannot start or crashes."""
    import tempfile

    from caproute.collect.pool import DEFAULT_MODELS, start_pool

    names = list(models) if models else list(DEFAULT_MODELS)
    with (tempfile.TemporaryDirectory(prefix="caproute-pool-check-") as tmp,
          start_pool(names, port_base=0, workdir=tmp, rewriter_server=False, ready_timeout_s=180.0)):
        pass
    Console().print(f"pool check: {', '.join(names)} each answered a completion", highlight=False)


@pool_app.command("down")
def down(workdir: WorkdirOpt = None) -> None:
    """Stop exactly the servers started by `pool up` (from the pool state file)."""
    from caproute.collect.pool import stop_pool

    stopped = stop_pool(workdir)
    Console().print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
