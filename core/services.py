"""Composition root: every service built from the config, started and stopped together.

``build_services`` only constructs (nothing starts, no thread, no scheduler); ``start`` does
the backfill, loads checkpoints, starts the market pump and the scheduler, once, in the
serving process. app.py, the end-to-end tests and the benchmarks all use this one path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from core.config import Config
from core.kernels import warm_up
from core.live.backends import BackendError, ThreadBackend, TrainingBackend
from core.live.models import build_learners
from core.live.quality import QUALITY_ROWS
from core.live.service import LiveTraining
from core.market.service import MarketService, build_market
from core.predictions import PredictionStore, Retention, postgres
from core.scheduler import build_scheduler
from nn.checkpoints import CheckpointManager

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """Something the user must fix before Tickwise can start (a folder it cannot write, a
    port in use): app.py prints the message, one line, and exits with status 2."""


@dataclass
class Services:
    config: Config
    market: MarketService
    training: LiveTraining
    scheduler: BackgroundScheduler | None = None
    loaded_checkpoints: dict | None = None

    def start(self) -> None:
        if self.scheduler is not None:
            return
        start_backend(self.training)  # first: a Ray address that does not answer stops here
        warm_up()  # compile (first run on a machine) or load the kernels, before any job
        if self.config.models.load_checkpoints:
            self.loaded_checkpoints = self.training.load_checkpoints()
            for name, path in self.loaded_checkpoints.items():
                log.info("model %s resumed from %s", name, path)
        self.market.start()
        self.scheduler = build_scheduler(self.training)
        self.scheduler.start()
        if self.config.training.start_active:
            self.training.start()

    def stop(self) -> None:
        self.training.stop()  # writes the final checkpoints
        self.training.events.close()  # open event streams end (after the "stopped" event)
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=True)
            self.scheduler = None
        self.market.stop()
        self.training.learning.backend.stop()  # its actors, and a Ray started here
        self.training.store.close()


def build_services(cfg: Config) -> Services:
    """Every service, built; nothing started. A runtime folder that cannot be written (read
    only, full) raises StartupError naming it before anything is written there."""
    market = build_market(cfg)
    runtime = cfg.runtime_path
    check_writable(runtime, "runtime_dir")
    store = open_store(store_location(cfg.store.url, runtime), Retention(
        keep_days=cfg.store.keep_days, max_rows=cfg.store.max_rows, keep_resolved=QUALITY_ROWS),
        symbols=cfg.market.symbols)
    checkpoints = CheckpointManager(runtime / "checkpoints", cfg.training.keep_checkpoints)
    training = LiveTraining(cfg, market, store,
                                   build_learners(cfg, market.model_timeframes), checkpoints,
                                   make_backend(cfg))
    return Services(cfg, market, training)


def make_backend(cfg: Config) -> TrainingBackend:
    """Where the learners train, as ``training.backend`` says (built, not started). Ray is
    imported only here, only for ``ray``: the default run never imports it."""
    if cfg.training.backend == "thread":
        return ThreadBackend()
    # app.py's SIGTERM handler stops Tickwise (checkpoints written); Ray's own, unless this is
    # set when ray is imported, logs a stack trace first on every ordinary stop.
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        from core.live.ray_training import RayBackend
    except ImportError as exc:
        raise StartupError(f"training.backend ray: ray is not installed ({exc}); "
                           "pip install -r requirements-scale.txt") from None
    return RayBackend(cfg.ray, cfg.torch.threads)


def start_backend(training: LiveTraining) -> None:
    """Connect the training backend (a Ray cluster, or a local Ray started here); one that
    cannot start: StartupError naming ray.address and the address."""
    try:
        training.learning.backend.start()
    except BackendError as exc:
        raise StartupError(str(exc)) from None


def check_writable(folder: Path, key: str) -> None:
    """Make ``folder`` and write (and fsync) a page there: a read-only or full file system
    refuses it now, with a one-line StartupError naming ``key`` and the folder, and no file is
    left behind."""
    probe = folder / ".tickwise-write-test"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, bytes(4096))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StartupError(f"{key} {folder}: cannot write there ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


# SQLite's words for a file it cannot use (full, read only, not SQLite), not for a bug.
_FILE_FAULTS = ("disk is full", "unable to open", "readonly", "not a database", "disk I/O",
                "malformed")


def store_location(url: str, runtime: Path) -> Path | str:
    """``store.url`` as ``open_store`` takes it: a SQLite file's path (empty: the one in the
    runtime folder; ``sqlite:///`` then a path, relative to the repo root unless it starts
    with /) or a PostgreSQL URL. Anything else: StartupError naming the key."""
    if not url:
        return runtime / "predictions.sqlite"
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if postgres.is_url(url):
        return url
    raise StartupError(f"store.url {postgres.masked(url)!r}: expected sqlite:///<path> or "
                       "postgresql://user@host:port/database")


def open_store(path: Path | str, retention: Retention | None = None,
               symbols: tuple[str, ...] | None = None) -> PredictionStore:
    """The prediction store; if it cannot be opened or created (a full disk, a file that is
    not SQLite, a PostgreSQL server that cannot be reached), StartupError naming it, and a
    file this call created is removed."""
    if postgres.is_url(path):
        # A shared database: this process writes its market.symbols, others theirs.
        return _open_postgres(str(path), retention, symbols)
    existed = path.exists()
    try:
        return PredictionStore(path, retention)
    except (OSError, sqlite3.DatabaseError) as exc:
        if isinstance(exc, sqlite3.DatabaseError) and not any(
                why in str(exc) for why in _FILE_FAULTS):
            raise  # not the file's fault: a bug, shown as one
        if not existed:
            for leftover in (path, path.with_name(path.name + "-wal"),
                             path.with_name(path.name + "-shm"), path.with_name(path.name + "-journal")):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
        raise StartupError(f"runtime_dir: the prediction store {path} cannot be opened ({exc})") from None


def _open_postgres(url: str, retention: Retention | None,
                   symbols: tuple[str, ...] | None) -> PredictionStore:
    """The store on PostgreSQL; a server that cannot be reached (or refuses the login), or no
    psycopg: StartupError naming store.url and the address (its password masked)."""
    where = postgres.masked(url)
    try:
        import psycopg
    except ImportError:
        raise StartupError(f"store.url {where}: psycopg is not installed "
                           "(pip install -r requirements.txt)") from None
    try:
        return PredictionStore(url, retention, symbols)
    except psycopg.OperationalError as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StartupError(f"store.url {where}: cannot connect ({why})") from None
    except RuntimeError as exc:  # another writer of these symbols, another schema version
        raise StartupError(f"store.url {where}: {str(exc).removeprefix(where + ': ')}") from None
