"""What the card and the panel say about a model's cost and the cycle's load."""

from __future__ import annotations

from dashboard.training_view import cost_rows, cycle_text, panel_stats

NONE = {"n": 0, "p50_ms": None, "p99_ms": None}


def test_the_card_shows_forward_share_train_step_and_cpu():
    costs = {"forward_ms": {"n": 120, "p50_ms": 1.234, "p99_ms": 8.5},
             "cycle_share_ms": {"n": 120, "p50_ms": 2.5, "p99_ms": 12.25},
             "train_step_ms": NONE, "cpu_fraction": 0.034, "window_s": 60.0}
    assert cost_rows(costs) == [
        ("forward pass", "p50 1.23 ms · p99 8.50 ms (n=120)"),
        ("cycle share", "p50 2.50 ms · p99 12.2 ms (n=120)"),
        ("train step", "none in the last minute"),
        ("CPU", "3.4% of a core (last 60 s)"),
    ]
    assert cost_rows(None) == []


def cycle(p99: float | None, interval: float | None, n: int = 50) -> dict:
    total = {"n": n, "p50_ms": None if p99 is None else p99 / 2, "p99_ms": p99}
    return {"total_ms": total, "shared_ms": {"n": n, "p50_ms": 1.0, "p99_ms": 2.0},
            "interval_ms": interval, "load": None if not (interval and p99) else p99 / interval,
            "behind_load": 0.7, "window_s": 60.0}


def test_the_panel_shows_the_cycle_against_its_interval_and_warns_before_it_falls_behind():
    assert cycle_text(cycle(12.0, 100.0)) == (
        "p99 12.0 ms of 100 ms (12%) · p50 6.00 ms · shared p50 1.00 ms", False)
    text, behind = cycle_text(cycle(80.0, 100.0))
    assert text.startswith("p99 80.0 ms of 100 ms (80%)") and behind
    assert cycle_text(cycle(30.0, None)) == ("p99 30.0 ms · p50 15.0 ms · shared p50 1.00 ms",
                                             False)
    assert cycle_text(cycle(None, 100.0, n=0)) == ("no cycle in the last minute", False)
    # live 1m bars: a minute's interval in seconds, a light load as under 1 %
    assert cycle_text(cycle(130.0, 60_000.0))[0].startswith("p99 130 ms of 60 s (<1%)")


def test_the_panel_colours_a_loaded_cycle():
    status = {"predictions_per_second": 1.0, "training_batches_per_minute": 2.0,
              "signal_generation": {"state": "ACTIVE", "last_signal_ms": None},
              "paper": {"realised_pnl": 0.0, "positions": {}}, "cycle": cycle(90.0, 100.0)}
    stats = {s.children[0].children: s.children[1].children for s in panel_stats(status)}
    value = stats["cycle vs interval"]
    assert value.className == "text-warning" and value.children.startswith("p99 90.0 ms")
    status["cycle"] = cycle(10.0, 100.0)
    stats = {s.children[0].children: s.children[1].children for s in panel_stats(status)}
    assert stats["cycle vs interval"].className == ""
