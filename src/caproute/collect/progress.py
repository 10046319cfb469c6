"""The collector's two companions during a run: the batched observation writer and the progress
display (a live bar on a terminal, a log line every ``every_s`` seconds otherwise)."""

from __future__ import annotations

import time

import pandas as pd

from caproute.collect.ledger import RunStats
from caproute.collect.plan import CollectSpec
from caproute.data.collect_tables import write_score_details
from caproute.data.store import ObservationStore


class ObservationWriter:
    """Observations and scorer details of a run, written in small batches (at most one batch is
    lost to a kill -9; a rerun regenerates it)."""

    def __init__(self, store: ObservationStore, spec: CollectSpec, dataset: str):
        self.store, self.spec, self.dataset = store, spec, dataset
        self.buffer: list[dict] = []
        self.details: list[dict] = []
        self.last = time.monotonic()
        self.written = 0

    def add_detail(self, row: dict) -> None:
        self.details.append(row)

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if (
            len(self.buffer) >= self.spec.batch_size
            or time.monotonic() - self.last > self.spec.flush_interval_s
        ):
            self.flush()

    def flush(self) -> None:
        if self.details:  # before the observations: a crash in between only re-scores on resume
            write_score_details(self.store.connection, self.details)
            self.details = []
        if self.buffer:
            df = pd.DataFrame(self.buffer)
            self.written += self.store.upsert(df, source=f"collect:{self.dataset}", on_conflict="ignore")
            self.buffer = []
        self.last = time.monotonic()


class CollectProgress:
    """Live rich progress on a terminal; otherwise (nohup, pipes) a log line every ``every_s`` seconds."""

    # ETA from the rate of the last ETA_WINDOW_S seconds, shown once ETA_MIN_DONE generations are in:
    # the first minute mixes rewriting (queued ahead of the decoders) and server warm-up, so a rate
    # since the start overstates the remaining time several-fold (issue 16).
    ETA_WINDOW_S = 120.0
    ETA_MIN_DONE = 10

    def __init__(self, stats: RunStats, console, every_s: float = 30.0, enabled: bool = True):
        self.stats, self.console, self.every_s = stats, console, every_s
        self.enabled = enabled
        self._live = None
        self._last = 0.0
        self._samples: list[tuple[float, int]] = []  # (monotonic time, done)

    def eta_s(self) -> float | None:
        """Seconds left at the recent rate, or None while there is too little to measure it."""
        s = self.stats
        now = time.monotonic()
        self._samples.append((now, s.done))
        while len(self._samples) > 2 and now - self._samples[1][0] > self.ETA_WINDOW_S:
            self._samples.pop(0)
        t0, d0 = self._samples[0]
        if s.done < self.ETA_MIN_DONE or s.done - d0 < 2 or now - t0 <= 0:
            return None
        return (s.total - s.done) / ((s.done - d0) / (now - t0))

    def _info(self) -> str:
        s = self.stats
        eta = self.eta_s()
        budget = f" of ${s.budget_usd:g}" if s.budget_usd else ""
        return (
            f"{s.rate:.2f}/s, spent ${s.spend_usd:.6f}{budget} (actual), errors {s.errors}, "
            + ("eta: measuring" if eta is None else f"eta {eta / 60:.1f} min")
        )

    def _line(self) -> str:
        s = self.stats
        return (
            f"{s.done}/{s.total} generations, rewrites model/template {s.rewrites_model}/{s.rewrites_template}, "
            + self._info()
        )

    def __enter__(self):
        if self.enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._live = Progress(
                TextColumn("[bold]collect"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._live.__enter__()
            self._task = self._live.add_task("collect", total=self.stats.total, info="")
        return self

    def update(self, force: bool = False) -> None:
        if not self.enabled:
            return
        s = self.stats
        if self._live is not None:
            self._live.update(self._task, completed=s.done, info=self._info())
        elif force or time.monotonic() - self._last > self.every_s:
            self._last = time.monotonic()
            self.console.print(self._line(), highlight=False)

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.__exit__(*exc)
        return False
