"""JSON on the proxy's hot path: orjson (a dependency of ``caproute[serve]``), with the standard
library's answer wherever orjson declines, and the standard library alone where orjson is not
installed (the feedback store also serves the LiteLLM plugin, which needs no ``caproute[serve]``).

- :func:`dumps`: compact JSON bytes. orjson writes the same values (text differs only in form:
  UTF-8 instead of ``\\u`` escapes, ``1e-5`` for ``1e-05``); what it refuses (a lone surrogate, a
  dict key that is not a string, an integer beyond 64 bits) is written by ``json.dumps`` as before.
  NumPy scalars are written as numbers, as ``json.dumps`` writes ``numpy.float64``; dataclasses and
  datetimes are left to ``default``, as ``json.dumps`` leaves them.
- :func:`loads`: parsed JSON. What orjson refuses (``NaN``, UTF-16 bytes, anything malformed) and
  integers beyond 64 bits (which orjson would read as floats) are parsed by ``json.loads``, which
  raises the errors it always raised.

Issue 27: the standard library's encoder took about 30 us per routed answer (its decision holds
some 30 floats), orjson about 2 us.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is in caproute[serve]
    orjson = None
    _OPTIONS = 0
else:
    _OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def dumps(obj: Any, default: Callable[[Any], Any] | None = None) -> bytes:
    """``obj`` as compact JSON (UTF-8 bytes); ``default`` as in ``json.dumps`` (what to write for an
    object JSON has no type for; ``None``: a ``TypeError``)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj, default=default, option=_OPTIONS)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
    return json.dumps(obj, separators=(",", ":"), default=default).encode()


_LONG_DIGITS = re.compile(r"[0-9]{19}")
_LONG_DIGITS_B = re.compile(rb"[0-9]{19}")


def loads(data: bytes | str) -> Any:
    """Parsed JSON; ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``) when it is not.

    Text with a run of 19 or more digits goes to ``json.loads``: orjson reads an integer beyond
    64 bits as a float, the standard library exactly."""
    if orjson is not None and (_LONG_DIGITS_B if isinstance(data, bytes | bytearray) else _LONG_DIGITS).search(
        data
    ) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def loads_clean(data: bytes) -> tuple[Any, bool]:
    """``(loads(data), clean)``: ``clean`` is true when no string in the value can hold a surrogate
    (orjson read it from bytes, which it accepts only as valid UTF-8, and the text has no ``\\u``
    escape), so :func:`caproute.data.text.clean_json` would return it unchanged."""
    if orjson is not None and _LONG_DIGITS_B.search(data) is None:
        try:
            return orjson.loads(data), b"\\u" not in data
        except orjson.JSONDecodeError:
            pass
    return json.loads(data), False
