"""The contract between the live loop (``core``) and the models (``nn``): the only thing both
import. Everything a model reads or returns, and every name both sides must agree on, is
defined here once:

- the action vocabulary (what a prediction may call) and how an action reads as a direction;
- timeframe names;
- the observation a model sees (its candle channels, hand-made scalars and book features);
- what a model returns (``ModelOutput``), what a resolved prediction tells it (``Outcome``)
  and what it trains on (``Experience``);
- ``setting``: how a config field declares its default, range and meaning, so a model's config
  dataclass (beside its network, in its own module) is also its documentation and validation.

Nothing here imports from the rest of Tickwise; ``nn`` imports nothing from ``core``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# -- actions ------------------------------------------------------------------------------

TRADE_ACTIONS = ("BUY", "SELL", "HOLD")
DIRECTION_ACTIONS = ("UP", "DOWN")  # direction models (the order-book model) call these
ACTIONS = TRADE_ACTIONS + DIRECTION_ACTIONS
LONG_ACTIONS = ("BUY", "UP")  # a call that profits when the price rises
SHORT_ACTIONS = ("SELL", "DOWN")  # ... when it falls; HOLD is neither
# The direction an action claims, for scores that compare directions only (HOLD reads as UP:
# it never bets on a fall).
DIRECTION_OF = {"BUY": "UP", "SELL": "DOWN", "HOLD": "UP", "UP": "UP", "DOWN": "DOWN"}

# -- timeframes ---------------------------------------------------------------------------

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_timeframe(name: str) -> int:
    """'30m' -> 1_800_000. Raises ValueError naming the allowed form."""
    text = str(name).strip()
    unit = text[-1:]
    count = text[:-1]
    if unit not in _UNIT_MS or not count.isdigit() or int(count) <= 0:
        raise ValueError(f"{name!r} is not a timeframe; use a positive count and a unit s, m, "
                         "h or d (e.g. 1s, 1m, 1h, 1d)")
    return int(count) * _UNIT_MS[unit]


# -- what an observation holds ---------------------------------------------------------------

N_CHANNELS = 5  # per candle: open, high, low, close (log vs last close), volume (z-scored log1p)

# Hand-made scalars, in this order (the DQN's state starts with them):
SCALAR_NAMES = (
    "ret_1", "ret_5", "ret_10",  # simple returns of the close over 1, 5, 10 candles
    "volatility_20",  # std of the last 20 log returns
    "volume_ratio_20",  # last volume / mean of the 20 before (log1p-squashed)
    "close_vs_sma5", "close_vs_sma10", "sma5_vs_sma10",  # ratios - 1
    "rsi_14",  # scaled to [-1, 1]
    "pivot_high_1", "pivot_low_1", "pivot_high_2", "pivot_low_2",  # last swing levels vs close
    "regime_trending", "regime_ranging", "regime_volatile",  # one-hot
    "regime_efficiency",
)
N_SCALARS = len(SCALAR_NAMES)

BOOK_TOP_LEVELS = 10  # bucketed top levels per side in the book vector
BOOK_NAMES = (
    "spread_bps", "imbalance", "micro_vs_mid_bps",
    "bid_depth_10bps", "ask_depth_10bps", "bid_depth_50bps", "ask_depth_50bps",
    "bid_depth_100bps", "ask_depth_100bps",
    *(f"bid_size_{i}" for i in range(BOOK_TOP_LEVELS)),
    *(f"ask_size_{i}" for i in range(BOOK_TOP_LEVELS)),
)
N_BOOK = len(BOOK_NAMES)


@dataclass
class Observation:
    """What the market looks like to the models at one moment, for one symbol and timeframe.

    Built once per prediction round by core/observations.py from the candle store and books;
    every array is already normalised (see core/features/windows.py).
    """

    symbol: str
    timeframe: str  # the timeframe whose next candle is predicted
    ts: int  # market time, UTC ms
    windows: dict[str, np.ndarray]  # tf -> [N_CHANNELS, L] normalised window of this symbol
    ref_windows: dict[str, np.ndarray]  # tf -> [N_CHANNELS, L] the reference's (BTC) window
    scalars: np.ndarray  # [N_SCALARS] hand-made features, in SCALAR_NAMES order
    book: np.ndarray | None = None  # [N_BOOK] order-book features, None without a book
    # What other models offer about this observation, by model name (``Learner.offer``): a
    # model reads only the names it declares in ``Learner.uses``.
    extras: dict[str, Any] = field(default_factory=dict)


# -- what a model returns and learns from -------------------------------------------------------


@dataclass
class ModelOutput:
    action: int  # index into the learner's ``actions``
    confidence: float  # 0..1
    ohlcv: np.ndarray | None = None  # [5] predicted next candle as relative changes, if any
    hidden: np.ndarray | None = None  # last hidden layer, for models that feed others
    explored: bool = False  # True when epsilon-greedy picked a random action


@dataclass
class Experience:
    """A resolved prediction turned into something a learner trains on."""

    state: np.ndarray
    action: int
    reward: float
    next_state: np.ndarray | None = None  # None at the end of an episode
    timeframe: str = "1m"
    weight: float = 1.0  # executed paper trades weigh more (training.trade_weight)
    label: int | None = None  # hindsight-best action (CNN) or true direction (COB)
    target_confidence: float | None = None
    target_ohlcv: np.ndarray | None = None  # [5] actual next candle as relative changes


@dataclass(frozen=True, slots=True)
class Outcome:
    """A resolved prediction as the core hands it to the model's own rule (``experience``)."""

    state: np.ndarray  # what the model predicted from
    action: str  # what it called
    change: float  # actual close / reference price - 1
    reward: float  # core/rewards.py's table
    next_state: np.ndarray | None  # the model's state at the candle's close
    timeframe: str
    hold_band: float  # |change| up to this is "no move" on this timeframe (rewards.hold_band)
    target_ohlcv: np.ndarray  # [5] the actual candle relative to the reference (read-only)
    weight: float = 1.0  # executed paper trades weigh more (training.trade_weight)


@dataclass(frozen=True)
class Look:
    """How the page shows a model: its card's title and its markers on the price chart."""

    title: str  # the card's heading, e.g. "CNN · multi-timeframe"
    markers: dict[str, str]  # action -> plotly marker symbol; an action not named is not drawn
    executed_only: bool = False  # draw only the predictions that traded on paper


# -- config fields ------------------------------------------------------------------------


def setting(default: Any = None, doc: str = "", *, ge: float | None = None,
            gt: float | None = None, le: float | None = None, lt: float | None = None,
            factory: Any = None) -> Any:
    """A config dataclass field with its default, allowed range and one-line meaning in one
    place (pydantic's names: ``ge`` >=, ``gt`` >, ``le`` <=, ``lt`` <). core/config.py
    validates every value against them and writes ``doc`` as the key's comment in config.yaml;
    a ``Literal`` annotation gives the choices. ``factory`` for mutable defaults."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)
