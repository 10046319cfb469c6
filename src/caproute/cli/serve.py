"""``caproute serve``, ``caproute calibrate`` and ``caproute serve-key``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from caproute.cli import app
from caproute.cli.common import DataOpt, DatasetOpt, StoreOpt
from caproute.cli.params import choice, comma_list, finite, path_list
from caproute.errors import ConfigError

console = Console()


def _routers(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        name, eq, path = v.partition("=")
        if not eq:
            name, path = Path(v).name, v
        if name in out:
            raise ConfigError(f"--router: two routers named '{name}' (use NAME=DIR)")
        out[name] = path
    return out


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    from caproute.core.configfile import parse_pairs

    return dict(parse_pairs(values, option=flag, empty_value=False))


@app.command("serve")
def serve_cmd(
    router: Annotated[
        list[str] | None,
        typer.Option(
            "--router", help="router directory, or NAME=DIR; comma list or repeated for several "
                             "(served as caproute/NAME)", callback=comma_list,
        ),
    ] = None,
    pool: Annotated[Path | None, typer.Option("--pool", help="pool YAML (models, endpoints, prices)")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="serve YAML (see docs/serve.md); flags win")
    ] = None,
    policy: Annotated[
        list[Path] | None, typer.Option("--policy", help="calibrated policy (caproute calibrate)", callback=path_list)
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="bind address [127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option("--port", help="port [8000]")] = None,
    insecure_local: Annotated[
        bool, typer.Option("--insecure-local/--no-insecure-local", help="no API keys (loopback addresses only)")
    ] = False,
    keys_file: Annotated[Path | None, typer.Option("--keys-file", help="sha256 hashes of API keys")] = None,
    feedback_db: Annotated[Path | None, typer.Option("--feedback-db", help="SQLite feedback store")] = None,
    state: Annotated[
        str | None,
        typer.Option("--state", help="postgresql://user:pass@host/db: replicas share one state (docs/scaling.md)"),
    ] = None,
    state_refresh: Annotated[
        float | None,
        typer.Option("--state-refresh", help="seconds between reads of what other replicas learned [2]",
                     callback=finite("--state-refresh", lo=0.0, lo_open=True)),
    ] = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="default lambda [router's]",
                                              callback=finite("--lambda", lo=0.0))] = None,
    beta: Annotated[float | None, typer.Option("--beta", help="default beta [router's]",
                                               callback=finite("--beta", lo=0.0))] = None,
    lam_t: Annotated[float | None, typer.Option(
        "--lambda-t", help="default latency weight lambda_t, quality per second (PROPOSED; needs routers "
        "trained on latency_s) [0]", callback=finite("--lambda-t", lo=0.0))] = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="last_user | user_turns | history")
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", help="models tried per request")
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="allow this origin (CORS)", callback=comma_list)
    ] = None,
    model_map: Annotated[
        list[str] | None,
        typer.Option("--model-map", help="ROUTER_MODEL=POOL_MODEL where the names differ (comma list or repeated)",
                     callback=comma_list),
    ] = None,
    duel_policy: Annotated[
        Path | None,
        typer.Option("--duel-policy", help="dueling-bandit policy directory: enables caproute/duel"),
    ] = None,
    duel_state_out: Annotated[
        Path | None,
        typer.Option("--duel-state-out", help="where the online duel policy is saved [--duel-policy]"),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="debug | info | warning | error")
    ] = None,
    log_store: Annotated[
        Path | None,
        typer.Option("--log-store", help="opt-in: log routed requests and answers (SQLite) for feedback export"),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="server processes sharing the port [1]")
    ] = None,
    request_timeout: Annotated[
        float | None,
        typer.Option("--request-timeout", help="seconds per client request, fallbacks included"),
    ] = None,
    explore: Annotated[
        float | None,
        typer.Option("--explore", help="share EPS of routed requests that explore, with logged propensities "
                     "(caproute replay; docs/serve.md) [0]", min=0, max=1),
    ] = None,
    explore_mode: Annotated[
        str | None, typer.Option("--explore-mode", help="epsilon (uniform) | softmax (over predicted utility / T)")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", help="temperature T of --explore-mode softmax [0.1]")
    ] = None,
    explore_seed: Annotated[int | None, typer.Option("--explore-seed", help="seed of the exploration draws")] = None,
    judge: Annotated[
        str | None, typer.Option("--judge", help="pool model that shadow-judges a sample of routed answers")
    ] = None,
    judge_sample: Annotated[
        float | None,
        typer.Option("--judge-sample", help="share F of routed answers judged in the background [0]", min=0, max=1),
    ] = None,
    judge_budget_usd: Annotated[
        float | None, typer.Option("--judge-budget-usd", help="stop judging once the judge spent this (USD)", min=0)
    ] = None,
) -> None:
    """Serve routers as an OpenAI-compatible endpoint in front of the pool."""
    from caproute.serve.config import load_serve_config
    from caproute.serve.server import bind_socket, prepare_server, run_workers
    from caproute.serve.stores import check_state

    cfg = load_serve_config(
        config,
        routers=_routers(router) if router else None,
        pool=pool,
        policies=policy or None,
        host=host,
        port=port,
        insecure_local=insecure_local or None,
        keys_file=keys_file,
        feedback_db=feedback_db,
        state=state,
        state_refresh_s=state_refresh,
        lam=lam,
        beta=beta,
        lam_t=lam_t,
        conversation=conversation,
        max_attempts=max_attempts,
        cors_origins=cors_origin or None,
        duel_policy=duel_policy,
        duel_state_out=duel_state_out,
        log_level=log_level,
        log_store=log_store,
        model_map=_pairs(model_map, "--model-map") if model_map else None,
        workers=workers,
        request_timeout_s=request_timeout,
        explore=explore,
        explore_mode=explore_mode,
        explore_temperature=temperature,
        explore_seed=explore_seed,
        judge=judge,
        judge_sample=judge_sample,
        judge_budget_usd=judge_budget_usd,
    )
    # everything that can fail is checked before the banner: the stores, the port, then the app
    check_state(cfg)  # SQLite paths, or PostgreSQL reachable with a schema of this version (created here)
    sock = bind_socket(cfg.host, cfg.port)
    try:
        server = prepare_server(cfg)  # loads and checks routers, pool, policies
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    console.print(
        f"caproute serve: routers {', '.join(f'caproute/{n}' for n in cfg.routers)} on "
        f"http://{cfg.host}:{port}/v1"
        + (f"  [{cfg.workers} workers]" if cfg.workers > 1 else "")
        + ("  [insecure-local: no API keys]" if cfg.insecure_local else "")
        + (f"  [explore {cfg.explore:g} {cfg.explore_mode}]" if cfg.explore > 0 else "")
        + (f"  [judge {cfg.judge} on {cfg.judge_sample:g} of answers]" if cfg.judge_sample > 0 else ""),
        highlight=False,
    )
    if cfg.workers > 1:
        del server  # each worker builds its own app from the same config
        run_workers(cfg, sock)
    else:
        server.run(sockets=[sock])


@app.command("serve-migrate")
def serve_migrate_cmd(
    to: Annotated[str, typer.Option("--to", help="postgresql://user:pass@host/db, the replicas' --state")],
    feedback_db: Annotated[Path, typer.Option("--feedback-db", help="the SQLite feedback store to copy")],
    log_store: Annotated[Path | None, typer.Option("--log-store", help="the SQLite request log to copy")] = None,
) -> None:
    """Copy a server's SQLite state (feedback store, request log, sticky map) into PostgreSQL.

    Idempotent: rows already there are kept. See docs/scaling.md."""
    from caproute.serve.stores.migrate import migrate_sqlite
    from caproute.serve.stores.pg import is_postgres_url, redact

    if not is_postgres_url(to):
        raise ConfigError(f"--to must be a postgresql:// URL, got '{to[:40]}'")
    rep = migrate_sqlite(to, feedback_db, log_store)
    console.print(f"migrated to {redact(to)}: {rep.line()}", highlight=False)


@app.command("serve-key")
def serve_key_cmd(
    keys_file: Annotated[Path, typer.Option("--keys-file", help="file of key hashes (appended to)")],
    label: Annotated[str, typer.Option("--label", help="a note stored next to the hash")] = "",
) -> None:
    """Create an API key: prints it once and stores only its SHA-256 hash.

    The key alone goes to stdout (``KEY=$(caproute serve-key ...)`` captures it); the notice to stderr."""
    from caproute.serve.auth import append_key

    key = append_key(keys_file, label)
    Console(stderr=True).print(f"new API key (shown once, only its hash is stored in {keys_file}):")
    print(key)


@app.command("calibrate")
def calibrate_cmd(
    router: Annotated[Path, typer.Option("--router", help="router directory (caproute train --out)")],
    out: Annotated[Path, typer.Option("--out", help="policy JSON to write")],
    target_cost: Annotated[float | None, typer.Option("--target-cost", help="mean USD per query",
                                                      callback=finite("--target-cost", lo=0.0))] = None,
    target_share: Annotated[
        float | None, typer.Option("--target-share", help="at most this share of calls to --strong-model",
                                   callback=finite("--target-share", lo=0.0, hi=1.0))
    ] = None,
    strong_model: Annotated[
        str | None, typer.Option("--strong-model", help="model of --target-share")
    ] = None,
    quality_floor: Annotated[
        float | None,
        typer.Option("--quality-floor", help="at least this mean quality, as cheaply as possible",
                     callback=finite("--quality-floor", lo=0.0, hi=1.0)),
    ] = None,
    latency_budget_ms: Annotated[
        float | None,
        typer.Option("--latency-budget-ms", help="mean latency per query at most this (ms): fits lambda_t at "
                     "--lambda (PROPOSED latency term; the router must predict latency)",
                     callback=finite("--latency-budget-ms", lo=0.0)),
    ] = None,
    lam: Annotated[float | None, typer.Option("--lambda", help="cost weight kept fixed by --latency-budget-ms "
                                              "[router's]", callback=finite("--lambda", lo=0.0))] = None,
    store: StoreOpt = None,
    data: DataOpt = None,
    dataset: DatasetOpt = None,
    split: Annotated[str | None, typer.Option("--split", help="split of --store/--data [all rows]",
                                              callback=choice("--split", ("train", "test")))] = None,
    sample: Annotated[
        Path | None,
        typer.Option(
            "--sample", help="JSONL of requests ({messages} or {input}); outcomes are then predicted"
        ),
    ] = None,
    beta: Annotated[float | None, typer.Option("--beta", help="risk weight [router's]",
                                               callback=finite("--beta", lo=0.0))] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="router name in the policy [directory name]")
    ] = None,
    tolerance: Annotated[
        float, typer.Option("--tolerance", help="drift: max TV distance of model shares")
    ] = 0.1,
    target_tolerance: Annotated[
        float,
        typer.Option(
            "--target-tolerance",
            help="drift: max relative (cost, quality) or absolute (share) target deviation",
        ),
    ] = 0.2,
    window: Annotated[int, typer.Option("--window", help="drift: live requests per window")] = 200,
    png: Annotated[Path | None, typer.Option("--png", help="plot of cost and quality against lambda")] = None,
) -> None:
    """Fit lambda to a target mean cost, strong-model share or quality floor, or lambda_t to a mean
    latency budget; write a policy."""
    from caproute.serve.calibrate import CalibrationTarget, calibrate_router, plot_sweep, write_policy

    given = [x is not None for x in (target_cost, target_share, quality_floor, latency_budget_ms)]
    if sum(given) != 1:
        raise ConfigError(
            "give exactly one of --target-cost, --target-share (with --strong-model), --quality-floor, "
            "--latency-budget-ms"
        )
    if lam is not None and latency_budget_ms is None:
        raise ConfigError("--lambda is the cost weight kept fixed by --latency-budget-ms; the other targets fit it")
    if latency_budget_ms is not None:
        target = CalibrationTarget("latency", latency_budget_ms / 1000.0)
    elif target_cost is not None:
        target = CalibrationTarget("cost", target_cost)
    elif target_share is not None:
        if strong_model is None:
            raise ConfigError("--target-share needs --strong-model")
        target = CalibrationTarget("share", target_share, strong_model)
    else:
        target = CalibrationTarget("quality", quality_floor)
    if (sample is not None) + (store is not None) + (data is not None) != 1:
        raise ConfigError("give exactly one traffic sample: --store, --data or --sample")
    if sample is not None:
        from caproute.serve.traffic import read_requests

        traffic = read_requests(sample)
    else:
        from caproute.data.source import load_observations

        obs, ds = load_observations(store=store, data=data, dataset=dataset, split=split)
        traffic = (obs, f"{store or data}:{ds}" + (f":{split}" if split else ""))
    cal, doc = calibrate_router(
        router,
        target,
        traffic,
        beta=beta,
        lam=lam,
        name=name,
        share_tolerance=tolerance,
        target_tolerance=target_tolerance,
        window=window,
    )
    write_policy(doc, out)
    exp = doc["expected"]
    console.print(
        f"policy {doc['version']}: lambda = {cal.lam:.6g}, beta = {cal.beta:g}"
        + (f", lambda_t = {cal.lam_t:.6g}" if target.kind == "latency" else "")
        + f" ({doc['sample']['n']} queries, outcomes {doc['sample']['outcomes']})",
        highlight=False,
    )
    console.print(
        f"  mean cost {exp['mean_cost_usd']:.6g} USD/query, mean quality {exp['mean_quality']:.4f}, "
        "shares " + ", ".join(f"{m} {s:.1%}" for m, s in exp["model_share"].items()),
        highlight=False,
    )
    if target.kind == "latency":
        console.print(f"  mean latency {exp['mean_latency_s'] * 1e3:.1f} ms per query ({doc['sample']['latency']})",
                      highlight=False)
    console.print(f"  -> {out}", highlight=False)
    if png is not None:
        plot_sweep(cal, png)
        console.print(f"  -> {png}", highlight=False)
