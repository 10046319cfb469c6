"""One default set for FGTS.CDB (issue 24.1): the class, `caproute duel` (DuelSpec and the CLI) and
`caproute duel init` agree, the default is the paper's method, and outputs are named for what ran."""

from __future__ import annotations

import inspect

import click
import pytest
import typer

from caproute.bandits.defaults import DEFAULTS, method_label

KEYS = ("eta", "mu", "sampler", "feel_good", "horizon")


def _signature_defaults(fn) -> dict:
    return {k: v.default for k, v in inspect.signature(fn).parameters.items()}


def _cli_defaults(*path: str) -> dict:
    from caproute.cli import app

    cmd = typer.main.get_command(app)
    ctx = click.Context(cmd)
    for name in path:
        cmd = cmd.get_command(ctx, name)
    return {p.name: p.default for p in cmd.params}


def test_the_default_is_the_papers_fgts_cdb():
    assert DEFAULTS.sampler == "sgld" and DEFAULTS.eta == 0.25 and DEFAULTS.mu is None
    assert DEFAULTS.arm_residual == 0.0 and DEFAULTS.feel_good == "importance"
    assert method_label() == "FGTS.CDB (SGLD, η 0.25, μ 1/√T)"


def test_class_spec_init_and_cli_share_one_default_set():
    from caproute.bandits.embeddings import CCFTConfig
    from caproute.bandits.experiment import DuelSpec
    from caproute.bandits.fgts import FGTSCDB
    from caproute.bandits.lifecycle import init_policy

    cls = _signature_defaults(FGTSCDB.__init__)
    init = _signature_defaults(init_policy)
    spec = DuelSpec()
    duel_cli, init_cli = _cli_defaults("duel"), _cli_defaults("duel", "init")
    for k in KEYS:
        want = getattr(DEFAULTS, k)
        assert cls[k] == want and init[k] == want, k
        assert init_cli[k] == want, k
        if k != "horizon":          # the experiment's horizon is --rounds
            assert getattr(spec, k) == want and duel_cli[k] == want, k
    # arms: the paper's CCFT embeddings, no per-model component, everywhere; no prior
    assert CCFTConfig().residual == 0.0 == init["arm_residual"] == init_cli["arm_residual"]
    assert duel_cli["arm_residual"] == 0.0
    assert not spec.offline_prior and not init["offline_prior"] and not duel_cli["offline_prior"]
    assert not spec.laplace_refit and not cls["laplace_refit"]
    assert cls["prior_mean"] is None and cls["prior_cov"] is None


@pytest.mark.parametrize("kw,label", [
    ({}, "FGTS.CDB (SGLD, η 0.25, μ 1/√T)"),
    ({"sampler": "laplace", "eta": 4.0, "mu": 0.0}, "dueling-TS (Laplace, η 4, μ 0)"),
    ({"sampler": "laplace", "feel_good": "tilt", "eta": 4.0, "mu": 0.0, "arm_residual": 0.5},
     "dueling-TS (Laplace, η 4, μ 0; arm component γ 0.5)"),
    ({"sampler": "laplace", "feel_good": "tilt", "mu": 0.01, "offline_prior": True, "laplace_refit": True},
     "FGTS.CDB (Laplace+tilt, η 0.25, μ 0.01; offline prior, batch refits)"),
])
def test_method_label_names_what_ran(kw, label):
    assert method_label(**kw) == label


def test_policy_and_spec_report_their_method():
    import numpy as np

    from caproute.bandits.embeddings import CCFTConfig
    from caproute.bandits.experiment import DuelSpec
    from caproute.bandits.fgts import FGTSCDB

    assert FGTSCDB(np.eye(3, 4)).method_ == "FGTS.CDB (SGLD, η 0.25, μ 1/√T)"
    assert FGTSCDB(np.eye(3, 4), sampler="laplace", eta=4.0, mu=0.0).method_ == "dueling-TS (Laplace, η 4, μ 0)"
    spec = DuelSpec(rounds=400, sampler="laplace", feel_good="tilt", eta=4.0, mu=0.0, ccft=CCFTConfig(residual=0.5))
    st = spec.settings()
    assert st["method"] == "dueling-TS (Laplace, η 4, μ 0; arm component γ 0.5)"
    assert (st["eta"], st["mu"], st["sampler"], st["arm_residual"]) == (4.0, 0.0, "laplace", 0.5)
    line = DuelSpec(rounds=400).settings_line()
    assert line == ("fgts-cdb = FGTS.CDB (SGLD, η 0.25, μ 1/√T): sampler sgld, η 0.25, μ 1/√T = 0.05, "
                    "arm component γ 0 (paper's CCFT arms), offline prior off")
