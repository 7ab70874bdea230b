"""A throwaway PostgreSQL server in a temporary folder, for the store tests and the store
benches (bench/scale.py): Debian's binaries, run as the ``postgres`` user when the caller is
root (the server refuses root), user ``tickwise`` with trust auth on 127.0.0.1. The README's
test set-up installs PostgreSQL (scripts/setup.sh --dev).

``stop()`` and ``start()`` take the server down and bring it back on the same port and data
(the store's outage test: a database lost while predictions flow)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def pg_bin() -> Path:
    """TICKWISE_PG_BIN, else the newest of Debian's /usr/lib/postgresql/<version>/bin."""
    if "TICKWISE_PG_BIN" in os.environ:
        return Path(os.environ["TICKWISE_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/<version>/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class LocalPostgres:
    """``with LocalPostgres() as pg: pg.url`` (the server's URL, no database: add ``/name``);
    ``pg.create_database(name)`` returns a database's URL."""

    def __init__(self, bin_dir: Path | None = None):
        self.bin = bin_dir or pg_bin()
        if not (self.bin / "pg_ctl").exists():
            raise RuntimeError(f"PostgreSQL is not installed ({self.bin}/pg_ctl missing): run "
                               "scripts/setup.sh --dev, or set TICKWISE_PG_BIN")
        self.folder = Path(tempfile.mkdtemp(prefix="tickwise-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self.data, self.port = self.folder / "data", free_port()
        self.url = f"postgresql://tickwise@127.0.0.1:{self.port}"
        try:
            self._run([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                       "-U", "tickwise", "--no-sync"])
            self.start()
        except (subprocess.SubprocessError, OSError) as exc:
            log = self.folder / "log"
            detail = getattr(exc, "stderr", "") or (log.read_text() if log.exists() else "")
            shutil.rmtree(self.folder, ignore_errors=True)
            raise RuntimeError(f"PostgreSQL did not start: {exc}\n{detail}") from exc

    def _run(self, args: list[str]) -> None:
        subprocess.run(_as_server_user(args), check=True, capture_output=True, text=True,
                       timeout=60)

    def start(self) -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                   str(self.folder / "log"), "-w", "start", "-o",
                   f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=200"])

    def stop(self) -> None:
        """Down at once (connections cut, as when a database host is lost)."""
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                   "stop"])

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"{self.url}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"{self.url}/{name}"

    def close(self) -> None:
        subprocess.run(_as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                                        "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
