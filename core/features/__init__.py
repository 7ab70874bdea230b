"""Feature engineering for Tickwise, by concept:

* ``indicators``: returns, RSI, MACD, Bollinger bands, ATR, volume ratio (per-bar series)
* ``structure``: Williams market-structure pivots and a coarse market-regime label
* ``windows``: the normalised candle window the models read

Conventions: every series is a 1-D float array, oldest value first, one value per bar;
series outputs have the input's length, NaN where history is still too short. All functions
are pure: no I/O, no Dash, no module state.

The order-book features the models read are computed in one place only, the compiled
``core.observations.book_vector``/``consolidated_vector`` (layout ``nn.contract.BOOK_NAMES``).
"""

from core.features.indicators import (
    atr,
    bollinger,
    log_returns,
    macd,
    returns,
    rsi,
    volume_ratio,
)
from core.features.structure import (
    Pivot,
    Regime,
    RegimeLabel,
    market_regime,
    strict_peaks,
    swing_points,
    williams_pivots,
)
from core.features.windows import (
    multi_timeframe_windows,
    normalised_window,
    window_mask,
    window_tensor,
)

__all__ = [
    "Pivot", "Regime", "RegimeLabel", "atr", "bollinger", "log_returns", "macd",
    "market_regime", "multi_timeframe_windows", "normalised_window", "returns", "rsi",
    "strict_peaks", "swing_points", "volume_ratio", "williams_pivots", "window_mask",
    "window_tensor",
]
