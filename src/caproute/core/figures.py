"""The one matplotlib set-up and figure writer of every report (bench, adaptive study, duel,
Meta-Router, diagnostics, calibration): the Agg backend (no display), PNG written atomically."""

from __future__ import annotations

import os
from pathlib import Path

FORMATS = ("png", "svg", "pdf")


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use, never at import time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out: str | os.PathLike, *, dpi: float | None = None) -> Path:
    """Write ``fig`` to ``out`` atomically (format from the suffix: png, svg or pdf, else png) and
    close it."""
    from caproute.core.atomic import atomic_file

    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    try:
        with atomic_file(out) as tmp:
            fig.savefig(tmp, dpi=dpi, format=fmt if fmt in FORMATS else "png")
    finally:
        pyplot().close(fig)
    return out
