"""Adapters turn third-party releases into canonical observations. They live beside the core
(never as special cases inside it); register a new one in ``ADAPTERS``."""

from __future__ import annotations

from caproute.data.adapters.routerbench import read_routerbench
from caproute.data.adapters.routerdc import read_routerdc

ADAPTERS = {"routerdc": read_routerdc, "routerbench": read_routerbench}

__all__ = ["ADAPTERS", "read_routerbench", "read_routerdc"]
