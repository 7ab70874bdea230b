"""core.live.learning.Rates: the panel's predictions/s and training batches/min."""

import pytest

from core.live.learning import RATE_WINDOW_S, Rates


def test_early_rate_is_over_the_time_since_start_not_the_events_own_span():
    rates = Rates(since=100.0)
    rates.add(3, now=101.0)  # three batches in the first second
    # 3.3 s after the start: 3 / 3.3 s = 54.5 a minute, over the time actually elapsed;
    # after 10 s with nothing more it is 3 / 10 s = 18 a minute, not still 54.
    assert rates.per_second(now=103.3) * 60 == pytest.approx(3 / 3.3 * 60)
    assert rates.per_second(now=110.0) * 60 == pytest.approx(18.0)


def test_at_least_one_second_and_at_most_the_window():
    rates = Rates(since=0.0)
    rates.add(2, now=0.2)
    assert rates.per_second(now=0.5) == pytest.approx(2.0)  # span floored at 1 s
    rates.add(60, now=200.0)
    # the window: only the last RATE_WINDOW_S seconds count, the two old events are gone
    assert rates.per_second(now=230.0) == pytest.approx(60 / RATE_WINDOW_S)


def test_restart_forgets_the_previous_session():
    rates = Rates(since=0.0)
    rates.add(50, now=10.0)
    rates.restart(now=20.0)
    assert rates.per_second(now=21.0) == 0.0
    rates.add(1, now=21.5)
    assert rates.per_second(now=22.0) == pytest.approx(0.5)
