"""A real PostgreSQL server for the tests: Debian's ``postgresql`` binaries, ``initdb``
and ``pg_ctl`` in a temporary directory, listening on a loopback TCP port only (its
socket directory is the temporary directory too). Run as the ``postgres`` user when
the tests run as root (initdb refuses root)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .conftest import missing


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or (
        [shutil.which(name)] if shutil.which(name) else []
    )
    if not found:
        missing(f"{name} not installed (Debian package postgresql; scripts/setup.sh --test installs it)")
    return found[-1]


class PostgresServer:
    """``initdb`` + ``pg_ctl start`` on ``127.0.0.1:port``; :meth:`stop` / :meth:`start` for outages."""

    def __init__(self, port: int) -> None:
        # Not under pytest's tmp_path: as root that is private to root, and the server runs as postgres.
        self.dir = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
        self.port = port
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            [_bin("initdb"), "-D", str(self.dir / "data"), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync"]
        )
        conf = self.dir / "data" / "postgresql.conf"
        with open(conf, "a") as f:
            f.write(
                f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{self.dir}'\nfsync = off\n"
            )

    @property
    def url(self) -> str:
        """``postgresql://USER@127.0.0.1:PORT/postgres`` (trust auth on loopback)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str]) -> None:
        result = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{cmd[0]} failed: {result.stdout[-1500:]}{result.stderr[-1500:]}"

    def start(self) -> None:
        self._run(
            [_bin("pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-t", "60", "start"]
        )

    def stop(self, mode: str = "fast") -> None:
        self._run([_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", mode, "-w", "stop"])

    def remove(self) -> None:
        """Stop (if running) and delete the cluster."""
        subprocess.run(
            [*self.as_user, _bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


_databases = [0]


def new_database(server: PostgresServer) -> str:
    """A fresh, empty database on ``server``; its URL."""
    from sqlalchemy import create_engine

    from bridge.records.store import database_url

    _databases[0] += 1
    name = f"test_{os.getpid()}_{_databases[0]}"
    engine = create_engine(database_url(server.url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    engine.dispose()
    return server.url.rsplit("/", 1)[0] + "/" + name
