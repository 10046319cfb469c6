"""Library entry points behind ``caproute meta`` (usable from a notebook)."""

from __future__ import annotations

import os
from pathlib import Path

from caproute.causal.experiment import MetaConfig, MetaResults, prepare_dataset, run_meta
from caproute.causal.features import Encoder
from caproute.causal.labels import PairwiseGains, read_gains
from caproute.errors import DataError


def load_pairwise(data: str | os.PathLike | None = None, *, judges: list[str] | None = None,
                  store: str | os.PathLike | None = None, dataset: str | None = None,
                  primary: str | None = None, alternative: str | None = None,
                  judge_file: str | os.PathLike | None = None, simulated=None) -> dict[str, PairwiseGains]:
    """Pairwise gains per judge from one of three sources.

    - PandaLM's pairs.parquet (file or folder): one entry per judge (default: gpt35, pandalm7b);
    - a gains file (:func:`caproute.causal.labels.write_gains`): one entry, named by its pref_source;
    - observations (``store`` or ``data``) with ``primary`` and ``alternative``: gold = mean score
      difference, preferences from ``judge_file`` or a :class:`SimulatedJudge` (``simulated``).
    """
    from caproute.causal.pandalm import PANDALM_JUDGES, is_pandalm, read_pandalm

    if primary is not None or alternative is not None:
        from caproute.causal.from_observations import (
            SimulatedJudge,
            gains_from_observations,
            read_judge_labels,
        )
        from caproute.data.source import load_observations

        if primary is None or alternative is None:
            raise DataError("pass both --primary and --alternative", source="arguments")
        obs, _ = load_observations(store=store, data=data, dataset=dataset)
        if judge_file is not None:
            name = judges[0] if judges else Path(judge_file).stem
            judge = read_judge_labels(judge_file)
        else:
            judge = simulated if simulated is not None else SimulatedJudge()
            name = judge.name
        g = gains_from_observations(obs, primary, alternative, judge=judge, judge_name=name)
        return {g.pref_source: g}
    if store is not None:
        raise DataError("--store needs --primary and --alternative", source="arguments")
    if data is None:
        raise DataError("pass --data (PandaLM pairs or a gains file) or --store", source="arguments")
    if is_pandalm(data):
        import dataclasses

        from caproute.causal.pandalm import SYNTHETIC_JUDGES, SYNTHETIC_KINDS

        judges = list(judges) if judges else list(PANDALM_JUDGES)
        out = {}
        for j in judges:
            if j in SYNTHETIC_JUDGES:     # verdicts transformed once the queries are embedded
                g = read_pandalm(data, SYNTHETIC_JUDGES[j])
                out[j] = dataclasses.replace(g, pref_source=j, meta={**g.meta, "synthetic": SYNTHETIC_KINDS[j],
                                                                      "base_judge": SYNTHETIC_JUDGES[j]})
            else:
                out[j] = read_pandalm(data, j)
        return out
    g = read_gains(data)
    if judges and list(judges) != [g.pref_source]:
        raise DataError(f"this gains file holds preferences of '{g.pref_source}', not {judges}", source=str(data))
    return {g.pref_source: g}


def run_meta_experiment(gains: dict[str, PairwiseGains], config: MetaConfig, *, name: str = "pairs",
                        jobs: int = 1, engine: str = "local", ray_address: str | None = None,
                        encoder: Encoder | None = None, progress: bool = True) -> MetaResults:
    """Embed the queries once, then run the Monte Carlo cells (see :mod:`caproute.causal.experiment`)."""
    ds = prepare_dataset(gains, name=name, encoder=encoder)
    return run_meta(ds, config, jobs=jobs, engine=engine, ray_address=ray_address, progress=progress)
