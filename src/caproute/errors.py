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


class DataWarning(UserWarning):
    """Input data that was usable after a documented repair (e.g. rows dropped); the message says
    what was done. The CLI prints it as one line, ``warning: <message>``."""


def show_warnings_on_one_line() -> None:
    """Make Python print caproute's :class:`DataWarning` as one ``warning: ...`` line on stderr instead
    of the default ``file:line: DataWarning: ...`` plus a source line (issue 16). Other warnings
    keep Python's format. Called by the CLI only; libraries and tests see ordinary warnings."""
    import sys
    import warnings

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DataWarning):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show
