"""Versioned, checksummed artifact folders: the one save/load mechanism of routers, encoders,
dueling policies and pipelines (no pickle).

An artifact folder holds a JSON config with a ``format_version`` and the SHA-256 of each state
file. Loading checks, with one error wording everywhere: the files are there, the JSON parses,
the version is one this caproute reads, and every checksum matches. Arrays go to safetensors.
A single-file artifact (a calibrated policy) is one JSON document that carries its own SHA-256
(:func:`write_document` / :func:`read_document`), written atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from caproute.errors import ConfigError

FORMAT_KEY = "format_version"


def json_default(o):
    """``json.dumps(default=...)`` for numpy scalars and arrays and tuples."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def dumps(config: dict[str, Any]) -> str:
    """The text of a config file (indented JSON, trailing newline)."""
    return json.dumps(config, indent=2, default=json_default) + "\n"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    return sha256_hex(Path(path).read_bytes())


def require_files(path: Path, names: Iterable[str], what: str) -> None:
    """A named error unless every file in ``names`` exists in the folder ``path``."""
    names = list(names)
    if not all((path / n).exists() for n in names):
        raise ConfigError(f"{path}: not a saved {what} (needs {' and '.join(names)})")


def parse_config(cfg_file: Path, text: str | None = None) -> dict[str, Any]:
    """The JSON object in ``cfg_file`` (or ``text`` read from it); invalid JSON is a named error."""
    try:
        return json.loads(cfg_file.read_text() if text is None else text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{cfg_file}: invalid JSON ({e.msg}, line {e.lineno})") from None


def check_version(config: dict[str, Any], cfg_file: Path, version: int) -> None:
    have = config.get(FORMAT_KEY)
    if have != version:
        raise ConfigError(f"{cfg_file}: {FORMAT_KEY} {have!r}, this caproute reads {version}")


def read_config(cfg_file: Path, version: int) -> dict[str, Any]:
    """Parse ``cfg_file`` and check its format version."""
    config = parse_config(cfg_file)
    check_version(config, cfg_file, version)
    return config


def check_sha256(file: Path, expected: str | None, data: bytes | None = None) -> bytes:
    """The bytes of ``file`` (or ``data`` read from it), checked against ``expected``."""
    data = file.read_bytes() if data is None else data
    if sha256_hex(data) != expected:
        raise ConfigError(f"{file}: checksum mismatch (file changed or corrupt)")
    return data


def save_arrays(path: Path, state_file: str, arrays: dict[str, np.ndarray]) -> str:
    """Write ``arrays`` as safetensors to ``path/state_file``; returns its SHA-256."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    save_file(arrays, str(path / state_file))
    return file_sha256(path / state_file)


def write_artifact(path: str | Path, config_file: str, config: dict[str, Any], *, version: int,
                   state_file: str | None = None, arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Write a folder: ``arrays`` to ``state_file`` (its SHA-256 stored as ``state_sha256``) and
    ``config`` with ``format_version`` first to ``config_file``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {FORMAT_KEY: version, **config}
    if state_file is not None:
        config["state_sha256"] = save_arrays(path, state_file, arrays or {})
    (path / config_file).write_text(dumps(config))
    return path


def write_checkpoint(path: str | Path, config: dict[str, Any], blob: bytes, *, version: int,
                     files: tuple[str, str, str, str]) -> None:
    """One crash-safe checkpoint of a (config, state bytes) pair: ``files`` = (config, state,
    pending config, pending state) names. Both are first written whole under the pending names,
    then renamed over the committed ones, config last (:func:`caproute.core.atomic.commit_files`);
    :func:`read_checkpoint` rolls forward over an interrupted commit."""
    from caproute.core.atomic import commit_files

    config_file, state_file, config_next, state_next = files
    config = {FORMAT_KEY: version, **config, "state_sha256": sha256_hex(blob)}
    commit_files(path, [(state_next, state_file, blob), (config_next, config_file, dumps(config).encode())])


def read_checkpoint(path: str | Path, *, what: str,
                    files: tuple[str, str, str, str]) -> tuple[dict[str, Any], bytes, Path]:
    """The newest consistent (config, state bytes, config path) of a folder written by
    :func:`write_checkpoint`. Candidates, newest first: the pending pair of an interrupted save
    (pending config with the pending state, or with the committed state once that was renamed),
    then the committed pair. A candidate counts only when the state's SHA-256 equals the config's.
    The format version is the caller's to check (:func:`check_version`)."""
    path = Path(path)
    config_file, state_file, config_next, state_next = files
    pending = path / config_next
    if pending.exists():
        try:
            cfg = json.loads(pending.read_text())
        except (OSError, json.JSONDecodeError):
            cfg = None
        if isinstance(cfg, dict):
            for s in (path / state_next, path / state_file):
                if s.exists():
                    blob = s.read_bytes()
                    if sha256_hex(blob) == cfg.get("state_sha256"):
                        return cfg, blob, pending
    require_files(path, [config_file, state_file], what)
    config = parse_config(path / config_file)
    blob = check_sha256(path / state_file, config.get("state_sha256"))
    return config, blob, path / config_file


def read_artifact(path: str | Path, config_file: str, *, version: int, what: str,
                  state_file: str | None = None) -> tuple[dict[str, Any], bytes | None]:
    """Config and checked state bytes of a folder written by :func:`write_artifact`."""
    path = Path(path)
    require_files(path, [config_file] + ([state_file] if state_file else []), what)
    cfg_file = path / config_file
    config = read_config(cfg_file, version)
    blob = None
    if state_file is not None:
        blob = check_sha256(path / state_file, config.get("state_sha256"))
    return config, blob


DOC_SHA_KEY = "sha256"


def _document_digest(doc: dict[str, Any]) -> str:
    return sha256_hex(json.dumps(doc, sort_keys=True, default=json_default).encode())


def write_document(out: str | Path, doc: dict[str, Any], *, version: int) -> Path:
    """Write ``doc`` as one JSON file, ``format_version`` first and ``sha256`` (of the canonical
    JSON of everything else) last, atomically (a temporary sibling renamed into place)."""
    from caproute.core.atomic import atomic_file

    body = {FORMAT_KEY: version, **{k: v for k, v in doc.items() if k not in (FORMAT_KEY, DOC_SHA_KEY)}}
    body = json.loads(dumps(body))   # the digest covers exactly what a reader parses back
    text = dumps({**body, DOC_SHA_KEY: _document_digest(body)})
    with atomic_file(out) as tmp:
        tmp.write_text(text)
    return Path(out)


def read_document(path: str | Path, *, version: int, what: str,
                  unchecked_versions: Iterable[int] = ()) -> dict[str, Any]:
    """The JSON object of a file written by :func:`write_document`, its version and checksum
    checked (the ``sha256`` key removed). Files of a version in ``unchecked_versions`` (written
    before the checksum existed) are returned as they are."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} file not found")
    doc = parse_config(p)
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: not a {what} file (expected a JSON object)")
    if doc.get(FORMAT_KEY) in tuple(unchecked_versions):
        return doc
    check_version(doc, p, version)
    expected = doc.pop(DOC_SHA_KEY, None)
    if expected != _document_digest(doc):
        raise ConfigError(f"{p}: checksum mismatch (file changed or corrupt)")
    return doc
