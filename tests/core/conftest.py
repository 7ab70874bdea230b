"""A real PostgreSQL server for the store tests: started once per session in a temporary folder
(Debian's binaries; as the ``postgres`` user when the tests run as root, since the server
refuses root), stopped at the end. A server that cannot start fails the tests that need it: the
README's test set-up installs PostgreSQL (scripts/setup.sh --dev)."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _pg_bin() -> Path:
    """TICKWISE_PG_BIN, else the newest of Debian's /usr/lib/postgresql/<version>/bin."""
    if "TICKWISE_PG_BIN" in os.environ:
        return Path(os.environ["TICKWISE_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/<version>/bin")


PG_BIN = _pg_bin()
_names = itertools.count()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a running PostgreSQL server (user ``tickwise``, trust auth, 127.0.0.1)."""
    if not (PG_BIN / "pg_ctl").exists():
        pytest.fail(f"PostgreSQL is not installed ({PG_BIN}/pg_ctl missing): run "
                    "scripts/setup.sh --dev, or set TICKWISE_PG_BIN")
    folder = Path(tempfile.mkdtemp(prefix="tickwise-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", _free_port()
    run = {"check": True, "capture_output": True, "text": True, "timeout": 60}
    try:
        subprocess.run(_as_server_user([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
                                        "-U", "tickwise", "--no-sync"]), **run)
        subprocess.run(_as_server_user([
            str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "start",
            "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"]), **run)
    except (subprocess.SubprocessError, OSError) as exc:
        log = folder / "log"
        detail = getattr(exc, "stderr", "") or (log.read_text() if log.exists() else "")
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc}\n{detail}")
    try:
        yield f"postgresql://tickwise@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_server_user([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m",
                                        "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server):
    """A fresh, empty database on the session's server; its URL."""
    import psycopg

    name = f"t{os.getpid()}_{next(_names)}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{postgres_server}/{name}"
