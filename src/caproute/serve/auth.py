"""API keys: clients send ``Authorization: Bearer <key>``; the server keeps only SHA-256 hashes.

Hashes come from a keys file (one ``sha256:<64 hex>`` per line, optionally followed by a label;
``#`` starts a comment) and/or the environment variable ``CAPROUTE_API_KEY_HASHES``
(comma-separated). ``caproute serve-key`` makes a key, prints it once and appends its hash.
Keys are compared by hash with :func:`hmac.compare_digest`; neither keys nor hashes are logged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from caproute.errors import ConfigError

ENV_HASHES = "CAPROUTE_API_KEY_HASHES"
KEY_PREFIX = "cr-"
_HASH = re.compile(r"^sha256:([0-9a-f]{64})$")


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def key_id(key: str | None) -> str | None:
    """A short, non-reversible id of a client's key (16 hex of its hash), or None without a key:
    what the feedback store keeps to tell clients apart."""
    return None if key is None else hash_key(key)[7:23]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def parse_hashes(text: str, *, source: str) -> list[tuple[str, str]]:
    """(hash, label) pairs from keys-file text; errors name the source and line."""
    out = []
    for i, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        h, _, label = line.partition(" ")
        if not _HASH.match(h):
            raise ConfigError(
                f"{source}: line {i}: expected 'sha256:<64 lowercase hex>' [label], got a {len(h)}-character "
                "value that is not a hash (not shown: it may be a key; store hashes, never keys: see "
                "`caproute serve-key`)"
            )
        out.append((h, label.strip()))
    return out


@dataclass
class KeyRing:
    hashes: tuple[str, ...]

    @classmethod
    def load(cls, keys_file: str | os.PathLike | None = None, *, env: dict | None = None) -> KeyRing:
        env = os.environ if env is None else env
        hashes: list[str] = []
        if keys_file is not None:
            p = Path(keys_file)
            if not p.is_file():
                raise ConfigError(f"{p}: API keys file not found")
            hashes += [h for h, _ in parse_hashes(p.read_text(), source=str(p))]
        if env.get(ENV_HASHES):
            hashes += [h for h, _ in parse_hashes(env[ENV_HASHES].replace(",", "\n"), source=ENV_HASHES)]
        return cls(tuple(hashes))

    def __len__(self) -> int:
        return len(self.hashes)

    def check(self, presented: str | None) -> bool:
        if not presented:
            return False
        h = hash_key(presented)
        ok = False
        for known in self.hashes:  # no early exit: time does not depend on which key matched
            ok |= hmac.compare_digest(h, known)
        return ok


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def append_key(keys_file: str | os.PathLike, label: str = "") -> str:
    """Make a key, append its hash (and label) to ``keys_file``, return the key (shown once)."""
    key = new_key()
    p = Path(keys_file)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(f"{hash_key(key)} {label}".rstrip() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return key
