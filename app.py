"""Tickwise entry point: parse flags, load config, build services, start them, serve the page.

    python app.py                      # dashboard on the bundled replay, http://127.0.0.1:8050
    python app.py --speed 60 --port 8060
    python app.py --dev                # Dash's development server instead of waitress
    python app.py --help
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys

from core.config import ConfigError, load_config

log = logging.getLogger("tickwise")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="app.py", description="Tickwise: live ML models on crypto markets")
    p.add_argument("--config", default="config.yaml", help="YAML config file (default: config.yaml)")
    p.add_argument("--source", choices=["auto", "replay", "exchange"], help="market.source")
    p.add_argument("--recording", help="replay.recording: a bundled name or a recording folder")
    p.add_argument("--speed", type=float, help="replay.speed: market seconds per wall second")
    p.add_argument("--host", help="server.host (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="server.port (default 8050)")
    p.add_argument("--no-load-models", action="store_true",
                   help="models.load_checkpoints=false: start the models from fresh weights")
    p.add_argument("--record", metavar="DIR",
                   help="record the live market (1s candles, trades, books) into a recording "
                        "folder the replay can play (--recording DIR); written when the app stops")
    p.add_argument("--dev", action="store_true",
                   help="serve with Dash's development server instead of waitress (no reloader)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p.parse_args(argv)


def overrides(args: argparse.Namespace) -> dict:
    pairs = {
        "market.source": args.source,
        "replay.recording": args.recording,
        "replay.speed": args.speed,
        "server.host": args.host,
        "server.port": args.port,
        "models.load_checkpoints": False if args.no_load_models else None,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def parse_evaluate_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="app.py evaluate",
        description="Replay a recording through the live loop as fast as the work allows and "
                    "report each model against naive baselines (report.json, report.html).")
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--recording", required=True, help="a bundled recording name or a folder")
    p.add_argument("--from", dest="start", help="market time to start (ISO, UTC); default: "
                   "after replay.warmup_days of history")
    p.add_argument("--to", dest="end", help="market time to stop (ISO, UTC); default: the end")
    p.add_argument("--split", help="market time (ISO, UTC) from which predictions are scored; "
                   "tune only on what comes before it. Default: halfway through the run")
    p.add_argument("--out", required=True, help="folder for report.json and report.html")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def evaluate(argv: list[str]) -> int:
    from pathlib import Path

    from core.config import parse_time
    from core.evaluator import evaluation_config, run_evaluation
    from core.services import StartupError

    args = parse_evaluate_args(argv)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        base = load_config(args.config)
        end_ms = parse_time(args.end) if args.end else None
        split_ms = parse_time(args.split) if args.split else None
        if args.start:
            parse_time(args.start)
    except ConfigError as exc:
        print(f"tickwise: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"tickwise: --from/--to/--split must be ISO dates or datetimes: {exc}",
              file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(base.torch.threads)
    out = Path(args.out)
    try:
        cfg = evaluation_config(base, args.recording, args.start, out)
        report = run_evaluation(cfg, out, end_ms, progress=not args.no_progress,
                                split_ms=split_ms, timeframes=base.market.timeframes)
    except (ValueError, StartupError) as exc:  # a split outside the run; Ray not reachable
        print(f"tickwise: {exc}", file=sys.stderr)
        return 2
    split = report["split"]
    print(f"scored on the {split['reported_rows']:,} predictions made from {split['ts']} on "
          f"(tuning: the {split['tuning_rows']:,} before)")
    for model, h in report["headlines"].items():
        print(f"{model:>4}: {h['text']}")
    print(report["direction"]["text"])
    print(f"wrote {out / 'report.json'} and {out / 'report.html'}")
    return 0


def _recorder(path: str, services, cfg):
    """--record: a recording of everything the feed accepts, written at exit."""
    from core.market.recorder import Recorder

    src = services.market.source.describe()
    recorder = Recorder(path, name=f"recorded-{src['recording']}",
                        description=f"Recorded by Tickwise from: {src['description']}",
                        provenance={"source": src}, licence=src["licence"],
                        book_levels=cfg.replay.book_levels)
    recorder.attach(services.market.feed)
    return recorder


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 after a normal stop; 2, with one line on stderr naming the key or path,
    for what the user must fix: bad config, an exposed address without credentials, a port in
    use (found before any thread starts), a missing or corrupt recording, a runtime folder
    that cannot be written."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["evaluate"]:
        return evaluate(argv[1:])
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from core.services import StartupError
    from dashboard.security import check_exposure, credentials_from_env
    from dashboard.server import bind

    try:
        cfg = load_config(args.config, overrides(args))
        credentials = credentials_from_env()
        check_exposure(cfg.server, credentials)
        sock = bind(cfg.server.host, cfg.server.port)  # first: a port in use stops us here
    except (ConfigError, StartupError) as exc:
        print(f"tickwise: {exc}", file=sys.stderr)
        return 2
    try:
        return _serve(args, cfg, credentials, sock)
    finally:
        sock.close()


def _build(cfg):
    """The services, or None after printing the one line that says why not."""
    from core.market.recording import RecordingError
    from core.services import StartupError, build_services

    try:
        return build_services(cfg)
    except (StartupError, RecordingError) as exc:
        print(f"tickwise: {exc}", file=sys.stderr)
    except SystemExit as exc:  # the market's own checks (a recording without the symbols)
        if not isinstance(exc.code, str):
            raise
        print(f"tickwise: {exc.code}", file=sys.stderr)
    return None


def _serve(args: argparse.Namespace, cfg, credentials, sock) -> int:
    import torch  # imported here, not at module top: nothing heavy happens at import time

    torch.set_num_threads(cfg.torch.threads)

    from core.services import StartupError
    from dashboard.app import create_app
    from dashboard.rest import endpoints
    from dashboard.security import exposure_lines
    from dashboard.server import serve

    services = _build(cfg)
    if services is None:
        return 2
    try:
        recorder = _recorder(args.record, services, cfg) if args.record else None
    except OSError as exc:
        services.training.store.close()
        print(f"tickwise: --record {args.record}: cannot write there ({exc.strerror or exc})",
              file=sys.stderr)
        return 2
    app = create_app(cfg, services.market, services.training, credentials)
    port = sock.getsockname()[1]
    for line in exposure_lines(cfg.server, port, credentials, endpoints(app.server)):
        log.info("%s", line)
    # Ctrl+C and SIGTERM both end the server through the `finally` below, which stops training
    # (writing checkpoints) and closes a recording. SIGINT is set explicitly: a shell that
    # starts us in the background may have left it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        try:  # here, in the serving process only: no reloader, so it starts once
            services.start()
        except StartupError as exc:  # the training backend's cluster does not answer
            print(f"tickwise: {exc}", file=sys.stderr)
            return 2
        # Everything imported and built so far lives for the whole run: freezing it keeps full
        # garbage collections (about 300k objects from dash, plotly, torch) from pausing every
        # thread for 100-200 ms (measured by bench/signal_cycle.py).
        gc.freeze()
        log.info("Tickwise on http://%s:%d/ (source %s, speed x%g, %s)", cfg.server.host, port,
                 services.market.source.kind, cfg.replay.speed,
                 "development server" if args.dev else f"waitress, {cfg.server.threads} threads")
        serve(app, sock, cfg.server, dev=args.dev)
    finally:
        services.stop()
        if recorder is not None:
            log.info("recording written: %s", recorder.close())
    return 0


if __name__ == "__main__":
    sys.exit(main())
