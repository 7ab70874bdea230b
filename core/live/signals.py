"""Signal fusion per symbol and paper execution (the signal desk).

Every 10 market seconds each symbol's latest predictions (CNN and DQN, per timeframe) are fused
into one signal: each prediction votes +confidence for BUY, -confidence for SELL, 0 for HOLD,
weighted by its timeframe's weight; the vote is then nudged by the reference symbol's vote in
proportion to the two symbols' return correlation (a BTC move tends to drag ETH along). A
signal whose confidence (|vote| / total weight) reaches the threshold acts on a paper
position: BUY opens a long or closes a short, SELL opens a short or closes a long. P&L is in
quote currency after fees.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import numpy as np

from core.config import SignalConfig
from core.live.challengers import is_challenger
from core.market.candles import CandleStore
from nn.contract import TRADE_ACTIONS


@dataclass(frozen=True)
class Vote:
    model: str
    timeframe: str
    action: str  # BUY, SELL or HOLD
    confidence: float
    prediction_id: int | None = None


@dataclass(frozen=True)
class Signal:
    symbol: str
    ts: int
    action: str  # BUY, SELL or HOLD
    confidence: float  # 0..1
    score: float  # signed fused vote, -1..1
    correlation: float | None
    votes: int


def fuse(votes: list[Vote], weights: dict[str, float]) -> tuple[float, float]:
    """(score, total weight): score = sum w_tf * s / sum w_tf, s = +conf BUY, -conf SELL, 0 HOLD."""
    total = 0.0
    acc = 0.0
    for vote in votes:
        w = weights.get(vote.timeframe, 0.0)
        if w <= 0:
            continue
        sign = {"BUY": 1.0, "SELL": -1.0}.get(vote.action, 0.0)
        acc += w * sign * vote.confidence
        total += w
    return (acc / total if total else 0.0), total


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two return series of the same length; None if undefined."""
    n = min(len(a), len(b))
    if n < 3:
        return None
    x, y = a[-n:], b[-n:]
    if x.std() == 0 or y.std() == 0:
        return None
    r = float(np.corrcoef(x, y)[0, 1])
    return r if math.isfinite(r) else None  # a NaN or inf return leaves it undefined


def make_signal(symbol: str, ts: int, score: float, ref_score: float | None,
                corr: float | None, threshold: float, votes: int) -> Signal:
    """Blend in the reference's score by |corr| x corr-sign / 2, then threshold."""
    if not all(math.isfinite(v) for v in (score, ref_score, corr) if v is not None):
        # A NaN would otherwise pass the threshold (min(1, nan) is 1) and act as a SELL.
        raise ValueError(f"signal for {symbol}: score {score}, reference score {ref_score} and "
                         f"correlation {corr} must be finite")
    blended = score
    if ref_score is not None and corr is not None:
        blended = (score + 0.5 * corr * ref_score) / (1.0 + 0.5 * abs(corr))
    confidence = min(1.0, abs(blended))
    action = "HOLD"
    if confidence >= threshold and blended != 0:
        action = "BUY" if blended > 0 else "SELL"
    return Signal(symbol, ts, action, confidence, blended, corr, votes)


@dataclass
class Trade:
    symbol: str
    ts: int
    side: str  # "long" or "short"
    action: str  # "open" or "close"
    price: float
    quantity: float
    pnl: float = 0.0  # realised on close, after fees


@dataclass
class Position:
    side: str  # "long" or "short"
    entry_price: float
    quantity: float
    entry_ts: int


@dataclass
class PaperBook:
    """Paper positions per symbol and their realised P&L (quote currency, after fees)."""

    config: SignalConfig
    positions: dict[str, Position] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    realised_pnl: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def act(self, signal: Signal, price: float) -> Trade | None:
        """Apply a signal at price; returns the trade it made, if any."""
        if signal.action == "HOLD" or not math.isfinite(price) or price <= 0:
            return None
        fee = self.config.fee_rate
        with self._lock:
            pos = self.positions.get(signal.symbol)
            if pos is None:
                side = "long" if signal.action == "BUY" else "short"
                qty = self.config.position_size_usd / price
                self.positions[signal.symbol] = Position(side, price, qty, signal.ts)
                trade = Trade(signal.symbol, signal.ts, side, "open", price, qty,
                              pnl=-fee * price * qty)
            elif (pos.side == "long") == (signal.action == "SELL"):
                direction = 1.0 if pos.side == "long" else -1.0
                gross = direction * (price - pos.entry_price) * pos.quantity
                trade = Trade(signal.symbol, signal.ts, pos.side, "close", price, pos.quantity,
                              pnl=gross - fee * price * pos.quantity)
                del self.positions[signal.symbol]
            else:
                return None  # already positioned in the signal's direction
            self.realised_pnl += trade.pnl
            self.trades.append(trade)
            del self.trades[:-200]
            return trade

    def unrealised(self, prices: dict[str, float]) -> float:
        with self._lock:
            total = 0.0
            for symbol, pos in self.positions.items():
                price = prices.get(symbol)
                if price:
                    direction = 1.0 if pos.side == "long" else -1.0
                    total += direction * (price - pos.entry_price) * pos.quantity
            return total

    def snapshot(self, prices: dict[str, float]) -> dict:
        with self._lock:
            positions = {s: {"side": p.side, "entry_price": p.entry_price,
                             "quantity": p.quantity, "entry_ts": p.entry_ts}
                         for s, p in self.positions.items()}
            trades = [t.__dict__.copy() for t in self.trades[-20:]]
            realised = self.realised_pnl
        return {"positions": positions, "recent_trades": trades, "realised_pnl": realised,
                "unrealised_pnl": self.unrealised(prices)}


class SignalDesk:
    """Each symbol's latest vote per (model, timeframe), fused every signal interval into one
    signal that acts on the paper book; the predictions behind a trade are marked executed."""

    def __init__(self, config: SignalConfig, candles: CandleStore, reference: str):
        self.config = config
        self.candles = candles
        self.reference = reference
        self.votes: dict[str, dict[tuple[str, str], Vote]] = {s: {} for s in candles.symbols}
        self.signals: dict[str, Signal] = {}
        self.last_signal_ms: int | None = None
        self.paper = PaperBook(config)

    def note(self, predictions, ids: list[int]) -> None:
        """The stored predictions that trade actions vote with (the newest per model and tf)."""
        for pid, row in zip(ids, predictions, strict=True):
            if row.action in TRADE_ACTIONS and not is_challenger(row.model):  # never trade
                self.votes[row.symbol][(row.model, row.timeframe)] = Vote(
                    row.model, row.timeframe, row.action, row.confidence, pid)

    def run(self, now_ms: int) -> list[int]:
        """Fuse and act at market time ``now_ms``; returns the ids of the predictions whose
        vote went into a trade (the store marks them executed)."""
        weights = dict(self.config.timeframe_weights)
        scores = {symbol: fuse(list(votes.values()), weights)[0] if votes else None
                  for symbol, votes in self.votes.items()}
        # No pull when the reference is not followed here (a symbol group without it).
        ref = self.reference if self.reference in self.votes else None
        ref_returns = self._returns(ref) if ref is not None else np.empty(0)
        executed: list[int] = []
        for symbol, score in scores.items():
            if score is None:
                continue
            corr = None if symbol == ref or ref is None else correlation(
                self._returns(symbol), ref_returns)
            signal = make_signal(symbol, now_ms, score, None if symbol == ref else scores.get(ref),
                                 corr, self.config.confidence_threshold, len(self.votes[symbol]))
            self.signals[symbol] = signal
            price = self.candles.last_price(symbol)
            if price and self.paper.act(signal, price) is not None:
                executed += [v.prediction_id for v in self.votes[symbol].values()
                             if v.prediction_id is not None and v.action == signal.action]
        self.last_signal_ms = now_ms
        return executed

    def _returns(self, symbol: str) -> np.ndarray:
        tf = "1m" if "1m" in self.candles.tf_ms else self.candles.timeframes[0]
        closes = self.candles.closed(symbol, tf, 61)[:, 4]
        return np.diff(np.log(closes)) if len(closes) > 2 else np.empty(0)
