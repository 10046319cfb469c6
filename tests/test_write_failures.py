"""Writes that fail half-way (disk full, file-size limit) are named errors that leave nothing, and
staging files of a writer that was killed are cleaned by the next run (issue 23, item 10)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from caproute.core.atomic import atomic_file, clean_stale_staging, staged_dir
from caproute.errors import DataError

CLI = [sys.executable, "-m", "caproute"]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_staging_of_a_killed_writer_is_removed(tmp_path):
    out = tmp_path / "obs.parquet"
    dead, live = _dead_pid(), os.getppid()
    stale_file = tmp_path / f".obs.parquet.{dead}.tmp-abc123"
    stale_dir = tmp_path / f".obs.parquet.{dead}.old"
    busy = tmp_path / f".obs.parquet.{live}.tmp-xyz"  # another writer that still runs
    other = tmp_path / f".other.parquet.{dead}.tmp-1"  # another output's: not ours to judge
    stale_file.write_bytes(b"x" * 1000)
    stale_dir.mkdir()
    (stale_dir / "f").write_text("x")
    busy.write_text("x")
    other.write_text("x")
    with atomic_file(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new"
    assert not stale_file.exists() and not stale_dir.exists()
    assert busy.exists() and other.exists()
    assert clean_stale_staging(out) == []


def test_staged_dir_cleans_too(tmp_path):
    out = tmp_path / "bench"
    stale = tmp_path / f".bench.{_dead_pid()}.tmp-q"
    stale.mkdir()
    with staged_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1" and not stale.exists()


def test_a_failed_write_is_named_and_leaves_nothing(tmp_path):
    out = tmp_path / "o.jsonl"

    def fail(tmp: Path):
        raise OSError(28, "No space left on device")  # what write() raises: no file name

    with (pytest.raises(DataError, match=r"o.jsonl.*cannot write \(No space left on device\); nothing was written"),
          atomic_file(out) as tmp):
        fail(tmp)
    assert list(tmp_path.iterdir()) == []
    # an OSError about another file (an input that vanished) is not relabelled
    with pytest.raises(FileNotFoundError), atomic_file(out):
        (tmp_path / "missing.txt").read_text()


def _limited(limit_bytes: int):
    def pre():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return pre


@pytest.mark.parametrize("argv,expected", [
    (["export", "{t}/big.jsonl", "--store", "{t}/s.duckdb"], "big.jsonl: cannot write (File too large)"),
    (["import", "builtin", "--store", "{t}/s2.duckdb"], "s2.duckdb: cannot write the store"),
])
def test_file_size_limit_is_a_named_error_in_the_cli(tmp_path, argv, expected):
    """A real write failure (RLIMIT_FSIZE: the file-size limit) through the CLI: exit 2, one line
    naming the file, no traceback, no staging files left."""
    subprocess.run([*CLI, "import", "builtin", "--store", str(tmp_path / "s.duckdb")], check=True,
                   capture_output=True, timeout=300)
    before = {p.name for p in tmp_path.iterdir()}
    res = subprocess.run([*CLI, *[a.format(t=tmp_path) for a in argv]], capture_output=True, text=True,
                         timeout=300, preexec_fn=_limited(200_000))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and expected in " ".join(res.stderr.split())
    left = {p.name for p in tmp_path.iterdir()} - before
    assert not [n for n in left if n.startswith(".")], left
