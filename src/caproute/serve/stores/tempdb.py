"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` + ``pg_ctl`` of the Debian
package (``apt-get install postgresql``; binaries in /usr/lib/postgresql/<version>/bin) in a
temporary directory, on a free port and a unix socket in that directory, trust authentication.
PostgreSQL refuses to run as root: as root the server runs as user ``nobody`` (``runuser``)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def pg_bin() -> Path | None:
    """The directory of initdb/pg_ctl, or None when PostgreSQL is not installed."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(d, "initdb").exists() and Path(d, "pg_ctl").exists():
            return Path(d)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class TempPostgres:
    """``with TempPostgres() as db: db.url`` -- a private PostgreSQL server (stopped and deleted at exit).
    ``stop()``/``start()`` restart it on the same port and data (tests of a database restart)."""

    def __init__(self, port: int | None = None, tcp: bool = False):
        from caproute.serve.testing import free_port

        self.bin = pg_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.port, self.tcp = port or free_port(), tcp
        self.dir = Path(tempfile.mkdtemp(prefix="caproute-pg-"))
        self.data = self.dir / "data"
        self.user = "nobody" if os.geteuid() == 0 else None
        if self.user:
            os.chmod(self.dir, 0o777)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120, cwd=self.dir)

    @property
    def url(self) -> str:
        if self.tcp:
            return f"postgresql://postgres@127.0.0.1:{self.port}/caproute"
        return f"postgresql://postgres@/caproute?host={self.dir}&port={self.port}"

    def init(self) -> TempPostgres:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        listen = "127.0.0.1" if self.tcp else ""
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '{listen}'\nport = {self.port}\nunix_socket_directories = '{self.dir}'\n"
                    "fsync = on\nshared_buffers = 32MB\nmax_connections = 200\n")
        self.start()
        self._run("createdb", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "caproute")
        return self

    def start(self, timeout_s: float = 60) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", str(int(timeout_s)),
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def __enter__(self) -> TempPostgres:
        return self.init()

    def __exit__(self, *exc) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
