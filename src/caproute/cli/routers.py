"""``caproute train``, ``caproute route`` and ``caproute routers``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from caproute.cli import app
from caproute.cli.common import BetaOpt, DataOpt, DeviceOpt, LambdaOpt, StoreOpt
from caproute.cli.params import SEED_DEFAULT, choice, comma_list, deprecated, finite, joined, parse_params
from caproute.supervise.utility import DEFAULT_BETA, DEFAULT_LAMBDA

console = Console()


def _first_sentence(doc: str) -> str:
    import re

    text = " ".join(doc.strip().split("\n\n")[0].split())
    m = re.search(r"\.\s+(?=[A-Z])", text)
    return text if m is None else text[:m.start() + 1]


def _parse_params(items: list[str] | None, defaults: dict | None = None) -> dict:
    """``--param NAME=VALUE`` items (see :func:`caproute.cli.params.parse_params`)."""
    return parse_params(items, defaults)


def _check_router_out(out: Path) -> None:
    """Refuse --out before any training when it is not a new, empty or router directory
    (the same rule :meth:`RoutingPipeline.save` applies when it writes)."""
    from caproute.errors import ConfigError
    from caproute.routers.pipeline import PIPELINE_FILE

    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / PIPELINE_FILE).exists())):
        raise ConfigError(f"{out}: exists and is not a caproute router directory; choose another --out")


@app.command("train")
def train_cmd(
    router: Annotated[str, typer.Option("--router", help="router family (see `caproute routers`)")],
    out: Annotated[Path, typer.Option("--out", help="router directory to write")],
    store: StoreOpt = None, data: DataOpt = None,
    dataset: Annotated[list[str] | None, typer.Option(
        "--dataset", help="dataset name, a comma-separated list or 'all' (several are pooled into one, as "
                          "bench does); may be omitted when the data holds one dataset", callback=comma_list)] = None,
    supervision: Annotated[str, typer.Option("--supervision", help="dars | single (or an ablation variant)")] = "dars",
    features: Annotated[str, typer.Option(
        "--features", help="tfidf | minilm | minilm-onnx | minilm-int8 | model2vec")] = "tfidf",
    lam: LambdaOpt = DEFAULT_LAMBDA, beta: BetaOpt = DEFAULT_BETA,
    seed: Annotated[int, typer.Option("--seed", help="random seed (single-shot draw, router init)")] = SEED_DEFAULT,
    param: Annotated[list[str] | None, typer.Option("--param", metavar="NAME=VALUE", help="router hyper-parameter NAME=VALUE (repeatable)")] = None,
    device: DeviceOpt = None,
) -> None:
    """Train one router on the training split and save it (encoder + router + pipeline.json) to OUT.

    A partial grid (queries with only some models observed, e.g. routed traffic with feedback)
    trains on the observed pairs; the coverage is printed."""
    from caproute.core.device import set_default_device

    set_default_device(device)
    from caproute.evaluate.protocol import pool_datasets, read_datasets
    from caproute.routers.pipeline import make_router, train_pipeline

    params = _parse_params(param, make_router(router).get_params())
    make_router(router, lam=lam, seed=seed, params=params)   # ranges checked before any data is read
    _check_router_out(out)
    obs, names, _ = read_datasets(store=store, data=data, dataset=joined(dataset))
    normalizer = None
    if len(names) > 1:       # pooled: costs normalised per dataset, query ids '<dataset>/<id>'
        obs, normalizer = pool_datasets(obs, names)
    name = str(obs["dataset"].iloc[0]) if len(obs) else names[0]
    with console.status(f"training {router} on {name} ({supervision}, {features})"):
        pipe = train_pipeline(obs, router=router, supervision=supervision, features=features, lam=lam,
                              beta=beta, seed=seed, params=params, dataset=name, cache=True, normalizer=normalizer)
        pipe.save(out)
    m = pipe.meta
    console.print(f"{router} ({supervision}, {features}) trained on {name}: {m['n_train_queries']} queries x "
                  f"{len(pipe.models)} models -> {out}")
    from caproute.supervise.coverage import Coverage

    c = Coverage.from_dict(m["coverage"])
    if not c.complete:
        console.print(f"partial grid: {escape(c.summary())}; unobserved pairs are masked out of training")


@app.command("route")
def route_cmd(
    query: Annotated[list[str], typer.Argument(help="query text (several: one decision each)")],
    router: Annotated[Path, typer.Option("--router", help="router directory written by `caproute train`")],
    lam: Annotated[float | None, typer.Option(
        "--lambda", help="cost weight (default: the training value)", callback=finite("--lambda", lo=0.0))] = None,
    beta: Annotated[float | None, typer.Option(
        "--beta", help="risk weight (default: the training value)", callback=finite("--beta", lo=0.0))] = None,
    lam_t: Annotated[float, typer.Option(
        "--lambda-t", help="latency weight, quality per second (PROPOSED; needs a router trained on latency_s)",
        callback=finite("--lambda-t", lo=0.0))] = 0.0,
    fmt: Annotated[str, typer.Option(
        "--format", help="table | json (a JSON list on stdout, one object per query with its text)",
        callback=choice("--format", ("table", "json")))] = "table",
    as_json: Annotated[bool, typer.Option(
        "--json", help="deprecated: use --format json", hidden=True)] = False,
) -> None:
    """Route QUERY: the chosen model and every model's predicted mu_q, mu_c, sigma_q and utility."""
    from caproute.routers.pipeline import RoutingPipeline

    pipe = RoutingPipeline.load(router)
    decisions = pipe.decide(query, lam, beta, lam_t)
    if fmt == "json":
        typer.echo(json.dumps([{"query": q, **d.to_dict()} for q, d in zip(query, decisions, strict=True)],
                              indent=2))
        return
    if as_json:   # the old shape (one object for one query), kept for one release
        deprecated("route --json", "route --format json")
        payload = [d.to_dict() for d in decisions]
        typer.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
        return
    for q, d in zip(query, decisions, strict=True):
        short = escape(q if len(q) <= 70 else q[:67] + "...")
        table = Table(title=f"{pipe.router.name} router ({pipe.meta.get('supervision', '?')}): {short}\n"
                            f"lambda={d.lam:g} beta={d.beta:g}" + (f" lambda_t={d.lam_t:g}" if d.lam_t else "")
                            + f" -> [bold]{d.model}[/]")
        label = "policy p" if d.kind == "policy" else "mu_q"
        lat = ["mu_latency"] if d.mu_latency is not None else []
        for col in ("model", label, "mu_c", "sigma_q", *lat, "utility"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for m in pipe.models:
            style = "bold green" if m == d.model else None
            extra = [f"{d.mu_latency[m]:.3f}"] if lat else []
            table.add_row(("* " if m == d.model else "  ") + escape(m), f"{d.mu_q[m]:.4f}", f"{d.mu_c[m]:.4f}",
                          f"{d.sigma_q[m]:.4f}", *extra, f"{d.utility[m]:.4f}", style=style)
        console.print(table)


@app.command("routers")
def routers_cmd() -> None:
    """List the router families and their hyper-parameters."""
    from caproute.routers.base import REGISTRY, get_router_class

    get_router_class("knn")   # imports every family
    table = Table(title="router families")
    table.add_column("name")
    table.add_column("hyper-parameters (defaults)")
    table.add_column("ranges")
    table.add_column("description")
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        params = ", ".join(f"{k}={v!r}" for k, v in cls().get_params().items())
        ranges = ", ".join(f"{k} {rule}" for k, rule in cls.param_spec.items())
        table.add_row(name, params, ranges, _first_sentence(cls.__doc__ or sys.modules[cls.__module__].__doc__ or ""))
    console.print(table)
