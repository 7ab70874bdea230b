"""A real PostgreSQL server for the store tests (tests/postgres_server.py): started once per
session in a temporary folder, stopped at the end. A server that cannot start fails the tests
that need it: the README's test set-up installs PostgreSQL (scripts/setup.sh --dev)."""

from __future__ import annotations

import itertools
import os

import pytest

from tests.postgres_server import LocalPostgres

_names = itertools.count()


@pytest.fixture(scope="session")
def local_postgres():
    """The session's running server (LocalPostgres)."""
    try:
        server = LocalPostgres()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    with server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(local_postgres):
    """The URL of the session's server (user ``tickwise``, trust auth, 127.0.0.1)."""
    return local_postgres.url


@pytest.fixture
def pg_url(local_postgres):
    """A fresh, empty database on the session's server; its URL."""
    return local_postgres.create_database(f"t{os.getpid()}_{next(_names)}")
