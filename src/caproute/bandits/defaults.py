"""FGTS.CDB's one default set and the name of what ran (issue 24.1); no heavy imports, so the CLI
can read the defaults at import time.

:data:`DEFAULTS` is shared by :class:`caproute.bandits.fgts.FGTSCDB`, ``caproute duel``
(:class:`caproute.bandits.experiment.DuelSpec`) and ``caproute duel init``
(:func:`caproute.bandits.lifecycle.init_policy`): the paper's FGTS.CDB (feel-good term on, SGLD)
on the paper's CCFT arms (no per-model component). Sources (algorithms.md §B.4): eta = 0.25
FOUND-2nd (third-party code attributes it to the paper); mu = 1/sqrt(T) PROPOSED (the paper's
theory takes mu of order 1/sqrt(T); third-party code cites 1/(10 e^B sqrt(T))); SGLD FOUND-2nd
("the paper samples with SGLD"); the importance-reweighted feel-good term of the Laplace option is
the third-party recipe (FOUND-2nd). Everything else is an option, named by :func:`method_label`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from caproute.bandits.arms import DEFAULT_RESIDUAL


@dataclass(frozen=True)
class FGTSDefaults:
    """The one default set of FGTS.CDB (issue 24.1); the source of each value is in docs/bandits.md."""

    #: likelihood temperature: the value third-party code attributes to the paper (FOUND-2nd)
    eta: float = 0.25
    #: feel-good weight; None = 1/sqrt(horizon) (PROPOSED: the paper's theory gives O(1/sqrt(T)),
    #: third-party code 1/(10 e^B sqrt(T))); 0 switches the feel-good term off (not FGTS.CDB)
    mu: float | None = None
    #: "the paper samples with SGLD" (FOUND-2nd); "laplace" is our fast approximation (option)
    sampler: str = "sgld"
    #: laplace only: importance reweighting of Gaussian draws (the third-party recipe, FOUND-2nd)
    feel_good: str = "importance"
    #: expected rounds T for mu = 1/sqrt(T) (PROPOSED)
    horizon: int = 5000
    #: gamma of the per-model arm component; 0 = the paper's CCFT arms (caproute.bandits.arms)
    arm_residual: float = DEFAULT_RESIDUAL


DEFAULTS = FGTSDefaults()

#: cost weight lambda of the duel's r*(x, a) = mean score - lambda * normalised cost (lambda_c of
#: algorithms.md §B.5; PROPOSED 1: the paper gives none). The same u = q - lambda c as
#: supervise.utility.observation_utility, at the duel's own default (DARS's is 0.05).
DEFAULT_DUEL_LAMBDA = 1.0


def _num(x: float) -> str:
    return f"{x:.3g}"


def method_label(*, eta: float = DEFAULTS.eta, mu: float | None = DEFAULTS.mu, horizon: int = DEFAULTS.horizon,
                 sampler: str = DEFAULTS.sampler, feel_good: str = DEFAULTS.feel_good, arm_residual: float = 0.0,
                 offline_prior: bool = False, laplace_refit: bool = False) -> str:
    """What ran, named for it: "FGTS.CDB (SGLD, η 0.25, μ 1/√T)" for the defaults; with mu = 0 the
    feel-good term is gone and the method is "dueling-TS (Laplace, η 4, μ 0)"; extensions
    (arm component γ, offline prior, batch refits) are appended after a semicolon."""
    mu_eff = 1.0 / np.sqrt(max(int(horizon), 1)) if mu is None else float(mu)
    fg_on = mu_eff > 0.0
    if sampler == "sgld":
        samp = "SGLD"
    else:
        samp = f"Laplace+{feel_good}" if fg_on else "Laplace"
    mu_txt = "1/√T" if mu is None else _num(float(mu))
    parts = [samp, f"η {_num(eta)}", f"μ {mu_txt}"]
    ext = []
    if arm_residual:
        ext.append(f"arm component γ {_num(arm_residual)}")
    if offline_prior:
        ext.append("offline prior")
    if laplace_refit and sampler == "laplace":
        ext.append("batch refits")
    inner = ", ".join(parts) + ("; " + ", ".join(ext) if ext else "")
    return f"{'FGTS.CDB' if fg_on else 'dueling-TS'} ({inner})"
