"""Tests for core.timeframes and core.clock. Expected values are worked out by hand in comments."""

import time

import pytest

from core.clock import ManualClock, ReplayClock, WallClock
from core.timeframes import bucket_start, parse_timeframe

# 2024-01-01 00:00 UTC: 19723 days after 1970-01-01; 19723 * 86_400_000 = 1_704_067_200_000.
DAY0 = 1_704_067_200_000
DAY_MS = 86_400_000


# ----------------------------------------------------------------------- parse_timeframe


@pytest.mark.parametrize(
    ("name", "ms"),
    [
        ("1s", 1_000),
        ("15s", 15_000),  # 15 * 1000
        ("1m", 60_000),
        ("30m", 1_800_000),  # 30 * 60_000
        ("1h", 3_600_000),  # 60 * 60_000
        ("4h", 14_400_000),  # 4 * 3_600_000
        ("1d", 86_400_000),  # 24 * 3_600_000
        (" 5m ", 300_000),  # surrounding spaces are stripped
    ],
)
def test_parse_timeframe_good(name, ms):
    assert parse_timeframe(name) == ms


@pytest.mark.parametrize(
    "name", ["", "m", "1", "0m", "-1m", "+1m", "1.5m", "1M", "1w", "1ms", "1 m", "abc", "m1"]
)
def test_parse_timeframe_bad_names_the_allowed_form(name):
    with pytest.raises(ValueError) as info:
        parse_timeframe(name)
    message = str(info.value)
    assert repr(name) in message
    assert "s, m, h or d" in message


# ----------------------------------------------------------------------- bucket_start


def test_bucket_start_minute():
    # 00:00:59.999 is still in the 00:00 minute; 00:01:00.000 opens the next one.
    assert bucket_start(DAY0 + 59_999, 60_000) == DAY0
    assert bucket_start(DAY0 + 60_000, 60_000) == DAY0 + 60_000
    # 00:07:42 -> 00:07:00 = DAY0 + 7 * 60_000 = DAY0 + 420_000
    assert bucket_start(DAY0 + 7 * 60_000 + 42_000, 60_000) == DAY0 + 420_000


def test_bucket_start_thirty_minutes_and_hour():
    # 13:47:10 is 13 h 47 min 10 s = 49_630_000 ms into the day.
    ts = DAY0 + 13 * 3_600_000 + 47 * 60_000 + 10_000
    assert ts - DAY0 == 49_630_000
    assert bucket_start(ts, 1_800_000) == DAY0 + 13 * 3_600_000 + 30 * 60_000  # 13:30
    assert bucket_start(ts, 3_600_000) == DAY0 + 13 * 3_600_000  # 13:00


def test_bucket_start_day_boundary_is_utc_midnight():
    last_ms_of_day = DAY0 + DAY_MS - 1  # 2024-01-01 23:59:59.999
    assert bucket_start(last_ms_of_day, DAY_MS) == DAY0
    assert bucket_start(DAY0 + DAY_MS, DAY_MS) == DAY0 + DAY_MS  # 2024-01-02 00:00 opens a day
    # The last second of the day belongs to the 23:59 minute and the 23:00 hour.
    last_second = DAY0 + DAY_MS - 1_000
    assert bucket_start(last_second, 60_000) == DAY0 + DAY_MS - 60_000
    assert bucket_start(last_second, 3_600_000) == DAY0 + 23 * 3_600_000


def test_bucket_start_of_an_open_time_is_itself():
    for tf in (1_000, 60_000, 3_600_000, DAY_MS):
        assert bucket_start(DAY0, tf) == DAY0


# ----------------------------------------------------------------------- ReplayClock


class FakeMonotonic:
    """A monotonic clock the test moves by hand (seconds, like time.monotonic)."""

    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_replay_clock_starts_at_start_and_scales_by_speed():
    mono = FakeMonotonic(100.0)
    clock = ReplayClock(DAY0, 15.0, monotonic=mono)
    assert clock.now_ms() == DAY0
    mono.t = 102.0  # 2 wall s at 15x = 30 market s = 30_000 ms
    assert clock.now_ms() == DAY0 + 30_000
    mono.t = 102.5  # 2.5 wall s * 15 = 37.5 market s
    assert clock.now_ms() == DAY0 + 37_500


def test_replay_clock_rounds_float_noise_to_the_millisecond():
    # A realistic monotonic reading: 1000.3 - 1000.0 = 0.2999999999999545 in floating point;
    # 0.3 s at 15x is 4.5 market s = 4500 ms, not 4499.
    mono = FakeMonotonic(1000.0)
    clock = ReplayClock(0, 15.0, monotonic=mono)
    mono.t = 1000.3
    assert clock.now_ms() == 4_500
    mono.t = 1000.7  # 0.7 * 15 = 10.5 s
    assert clock.now_ms() == 10_500


def test_replay_clock_set_speed_keeps_time_continuous():
    mono = FakeMonotonic(10.0)
    clock = ReplayClock(DAY0, 10.0, monotonic=mono)
    mono.t = 13.0  # 3 s * 10 = 30_000 ms
    assert clock.now_ms() == DAY0 + 30_000
    clock.set_speed(60.0)
    assert clock.speed == 60.0
    assert clock.now_ms() == DAY0 + 30_000  # no jump at the change
    mono.t = 14.0  # + 1 s * 60 = 60_000 ms at the new speed only
    assert clock.now_ms() == DAY0 + 90_000
    clock.set_speed(1.0)
    mono.t = 16.0  # + 2 s * 1 = 2_000 ms
    assert clock.now_ms() == DAY0 + 92_000


def test_replay_clock_pause_holds_and_resume_continues_without_jump():
    mono = FakeMonotonic(0.0)
    clock = ReplayClock(DAY0, 20.0, monotonic=mono)
    mono.t = 1.0  # 1 s * 20 = 20_000 ms
    clock.pause()
    assert clock.paused
    mono.t = 500.0  # a long wall pause: market time does not move
    assert clock.now_ms() == DAY0 + 20_000
    clock.pause()  # pausing twice changes nothing
    assert clock.now_ms() == DAY0 + 20_000
    clock.resume()
    assert not clock.paused
    assert clock.now_ms() == DAY0 + 20_000  # the paused 499 s are not counted
    mono.t = 500.25  # 0.25 s * 20 = 5_000 ms
    assert clock.now_ms() == DAY0 + 25_000
    clock.resume()  # resuming a running clock changes nothing
    assert clock.now_ms() == DAY0 + 25_000


def test_replay_clock_speed_change_while_paused_applies_after_resume():
    mono = FakeMonotonic(0.0)
    clock = ReplayClock(0, 10.0, monotonic=mono)
    clock.pause()
    mono.t = 5.0
    clock.set_speed(100.0)
    assert clock.now_ms() == 0
    clock.resume()
    mono.t = 5.5  # 0.5 s * 100 = 50_000 ms
    assert clock.now_ms() == 50_000


@pytest.mark.parametrize("speed", [0.0, -1.0])
def test_replay_clock_rejects_non_positive_speed(speed):
    with pytest.raises(ValueError, match="speed must be > 0"):
        ReplayClock(0, speed, monotonic=FakeMonotonic())
    clock = ReplayClock(0, 5.0, monotonic=FakeMonotonic())
    with pytest.raises(ValueError, match="speed must be > 0"):
        clock.set_speed(speed)
    assert clock.speed == 5.0


def test_replay_clock_default_monotonic_never_goes_back():
    clock = ReplayClock(DAY0, 1000.0)
    readings = [clock.now_ms() for _ in range(200)]
    assert readings[0] >= DAY0
    assert readings == sorted(readings)


# ----------------------------------------------------------------------- ManualClock, WallClock


def test_manual_clock_moves_only_forward():
    clock = ManualClock(DAY0)
    assert clock.now_ms() == DAY0
    clock.advance(1_500)
    assert clock.now_ms() == DAY0 + 1_500
    clock.set(DAY0 + 1_500)  # standing still is allowed
    clock.advance(0)
    assert clock.now_ms() == DAY0 + 1_500
    with pytest.raises(ValueError, match="never goes back"):
        clock.set(DAY0 + 1_499)
    with pytest.raises(ValueError, match="never goes back"):
        clock.advance(-1)
    assert clock.now_ms() == DAY0 + 1_500  # a refused move leaves the time as it was
    clock.set(DAY0 + DAY_MS)
    assert clock.now_ms() == DAY0 + DAY_MS


def test_wall_clock_reads_utc_milliseconds():
    before = time.time_ns() // 1_000_000
    now = WallClock().now_ms()
    after = time.time_ns() // 1_000_000
    assert isinstance(now, int)
    assert before <= now <= after
    assert WallClock.speed == 1.0
