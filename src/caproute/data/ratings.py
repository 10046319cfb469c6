"""Ratings on a declared scale, mapped to a quality in [0, 1] by one rule (:func:`rating_to_unit`).

Feedback arrives as thumbs, stars or grades; supervision wants a quality q in [0, 1] like every
other observation's score. A rating declares its scale:

- ``unit`` (the default): already in [0, 1], kept as is;
- ``thumbs``: 1 (up) -> 1.0; 0 or -1 (down) -> 0.0; nothing else;
- ``LO-HI`` (e.g. ``1-5``, ``0-10``, ``1-10``; LO < HI, numbers, LO may be negative): a rating r
  in [LO, HI] -> (r - LO) / (HI - LO), so the lowest rating is 0 and the highest 1, linearly (a 4
  of 1-5 is 0.75). Ratings outside the range are refused, never clipped.

The linear map is our choice (PROPOSED): it keeps a scale's mean as the mean quality; a
non-linear calibration of a scale belongs in the data, not in this rule.
"""

from __future__ import annotations

import math
import re

SCALES_DOC = "unit | thumbs | LO-HI (e.g. 1-5)"
_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)\s*$")


class RatingError(ValueError):
    """A rating that is not on its declared scale (or a scale that cannot be read)."""


def parse_scale(scale: str | None) -> tuple[float, float] | str:
    """``'unit'``, ``'thumbs'`` or the (LO, HI) of a range scale; :class:`RatingError` otherwise."""
    if scale is None or scale == "unit":
        return "unit"
    if scale == "thumbs":
        return "thumbs"
    m = _RANGE.match(scale) if isinstance(scale, str) else None
    if m is None:
        raise RatingError(f"unknown rating scale '{scale}' (expected {SCALES_DOC})")
    lo, hi = float(m.group(1)), float(m.group(2))
    if not lo < hi:
        raise RatingError(f"rating scale '{scale}': the lowest rating must be below the highest")
    return lo, hi


def rating_to_unit(value: float, scale: str | None = "unit") -> float:
    """The quality in [0, 1] of ``value`` on ``scale`` (see the module docstring)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RatingError(f"a rating must be a finite number, got {value!r}")
    s = parse_scale(scale)
    if s == "unit":
        if not 0.0 <= value <= 1.0:
            raise RatingError(f"score {value} is outside [0, 1]; declare its scale (e.g. \"scale\": \"1-5\")")
        return float(value)
    if s == "thumbs":
        if value == 1:
            return 1.0
        if value in (0, -1):
            return 0.0
        raise RatingError(f"a thumbs rating is 1 (up) or 0 / -1 (down), got {value}")
    lo, hi = s
    if not lo <= value <= hi:
        raise RatingError(f"rating {value} is outside its scale '{scale}'")
    return (float(value) - lo) / (hi - lo)
