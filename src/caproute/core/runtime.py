"""The runtime: independent grid cells run locally (processes) or on Ray with identical results,
and the one progress reporter (:class:`Progress`) every long loop shows.

A *cell* is a picklable description of one unit of work (e.g. one router x one supervision
set); ``fn(cell)`` must be a pure, module-level function whose result depends only on the cell
(seeds travel inside the cell). Results come back in cell order, so a report is the same for
any ``jobs`` and either engine. Large shared inputs (features, observations) go in ``shared``:
they are sent once per worker (local) or put once in the object store (Ray), and ``fn`` is
called as ``fn(cell, shared)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

ENGINES = ("local", "ray")

_SHARED: Any = None


def _init_worker(shared: Any) -> None:
    global _SHARED
    _SHARED = shared


def _call_local(fn: Callable, cell: Any) -> Any:
    return fn(cell, _SHARED)


def map_cells(fn: Callable[[Any, Any], Any], cells: Sequence[Any], *, shared: Any = None,
              jobs: int = 1, engine: str = "local", ray_address: str | None = None,
              progress: str | None = None, max_retries: int = 3) -> list[Any]:
    """``[fn(cell, shared) for cell in cells]``, in parallel; order preserved.

    ``progress``: a description shows a rich progress bar. On Ray a task whose worker dies is
    retried (``max_retries``); because a cell's result is only kept once, nothing counts twice.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}")
    cells = list(cells)
    if engine == "ray":
        return _map_ray(fn, cells, shared, ray_address, progress, max_retries)
    results: list[Any] = [None] * len(cells)
    with Progress(progress, len(cells)) as advance:
        if jobs <= 1 or len(cells) <= 1:
            for i, cell in enumerate(cells):
                results[i] = fn(cell, shared)
                advance()
            return results
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(shared,)) as pool:
            futures = {pool.submit(_call_local, fn, cell): i for i, cell in enumerate(cells)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                advance()
    return results


def _map_ray(fn, cells, shared, address, progress, max_retries):
    import ray

    from caproute.core.ray_connect import init_ray

    init_ray(address)  # the cluster at `address`, or a local instance on loopback only
    shared_ref = ray.put(shared)
    remote = ray.remote(max_retries=max_retries, retry_exceptions=False)(_ray_cell)
    refs = [remote.remote(fn, cell, shared_ref) for cell in cells]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(cells)
    pending = list(refs)
    with Progress(progress, len(cells)) as advance:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                results[index[ref]] = ray.get(ref)
                advance()
    return results


def _ray_cell(fn, cell, shared):
    return fn(cell, shared)


class Progress:
    """The one progress reporter for long loops (grid cells, partitions, encodings, fine-tuning,
    collection shards): a rich bar on stderr's console, or nothing.

    ``with Progress("encoding", total) as advance: ... advance(n)``. Nothing is drawn when
    ``description`` is None, or when ``terminal_only`` and the console is not a terminal (logs,
    pipes: the caller prints its own lines). ``advance(n=1)`` moves the bar; ``advance.update(
    completed=..., total=..., info=...)`` sets it (``info`` is a free text column).
    """

    def __init__(self, description: str | None, total: int | None = None, *, console=None,
                 transient: bool = False, terminal_only: bool = False):
        self.description, self.total, self.console = description, total, console
        self.transient, self.terminal_only = transient, terminal_only
        self._p, self._task = None, None

    @property
    def active(self) -> bool:
        return self._p is not None

    def __enter__(self) -> Progress:
        if self.description is None or (self.terminal_only and not _is_terminal(self.console)):
            return self
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        kw = {"console": self.console} if self.console is not None else {}
        self._p = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                               transient=self.transient, **kw)
        self._p.start()
        self._task = self._p.add_task(self.description, total=self.total, info="")
        return self

    def __call__(self, n: int = 1) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def update(self, *, completed: int | None = None, total: int | None = None, info: str | None = None) -> None:
        if self._p is not None:
            kw = {k: v for k, v in (("completed", completed), ("total", total), ("info", info)) if v is not None}
            self._p.update(self._task, **kw)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.stop()
            self._p = None
        return False


def _is_terminal(console) -> bool:
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    return bool(console.is_terminal)
