"""Dueling-feedback routing: FGTS.CDB over CCFT model embeddings (algorithms.md §B).

Online API for the server (see docs/bandits.md)::

    from caproute.bandits import DuelingPolicy
    policy = DuelingPolicy.load("policy-dir")      # any saved policy
    x = policy.embed("user question")               # (d,) query embedding
    i, j = policy.select(x)                          # two arms (may coincide)
    policy.update(x, i, j, +1)                       # +1: arm i's answer preferred, -1: arm j's
    policy.save("policy-dir")

Importing this package loads no model and reads no file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["DuelingPolicy", "FGTSCDB", "POLICIES", "get_policy_class", "load_policy", "embed_query"]

if TYPE_CHECKING:
    from caproute.bandits.fgts import FGTSCDB
    from caproute.bandits.policy import POLICIES, DuelingPolicy, get_policy_class


def __getattr__(name: str):
    if name in ("DuelingPolicy", "POLICIES", "get_policy_class"):
        from caproute.bandits import policy

        return getattr(policy, name)
    if name == "FGTSCDB":
        from caproute.bandits.fgts import FGTSCDB

        return FGTSCDB
    raise AttributeError(name)


def load_policy(path):
    """Load any saved dueling policy from its directory."""
    from caproute.bandits.policy import DuelingPolicy

    return DuelingPolicy.load(path)


def embed_query(policy, text: str):
    """The (d,) embedding of one query text with the policy's encoder."""
    return policy.embed(text)
