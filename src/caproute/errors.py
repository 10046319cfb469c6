"""Errors that say where and what: every data error names its source, row/line and field."""

from __future__ import annotations


class CaprouteError(Exception):
    """Base class for errors caproute raises on purpose (shown without a traceback by the CLI)."""


class DataError(CaprouteError, ValueError):
    """Bad input data. ``source`` is a file or table name, ``row`` a 1-based line or row number."""

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 field: str | None = None):
        self.source, self.row, self.field, self.reason = source, row, field, message
        where = []
        if source:
            where.append(str(source))
        if row is not None:
            where.append(f"line {row}")
        if field:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


class ConfigError(CaprouteError, ValueError):
    """Bad configuration (pool YAML, router directory, policy file)."""
