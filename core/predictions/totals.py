"""The store's running totals (the ``totals`` and ``hits`` tables): per model, symbol and status
the rows, per model, symbol and timeframe the resolved and correct calls. Retention never lowers
them; per symbol, so each writer of a shared database keeps its own symbols' (postgres.py).
Read per model (and timeframe), the symbols added up. Not thread-safe: the store's lock."""

from __future__ import annotations

from core.predictions import schema
from core.predictions.status import STATUSES


class Totals:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], dict[str, int]] = {}  # (model, symbol) -> status -> n
        self.hits: dict[tuple[str, str, str], list[int]] = {}  # (model, symbol, tf) -> [n, k]

    def load(self, conn, where: str, params: tuple) -> None:
        for model, symbol, status, n in conn.execute(
                f"SELECT model, symbol, status, n FROM totals{where}", params):
            self.of(model, symbol)[status] = n
        for model, symbol, tf, n, k in conn.execute(
                f"SELECT model, symbol, timeframe, resolved, correct FROM hits{where}", params):
            self.hits[(model, symbol, tf)] = [n, k]

    def of(self, model: str, symbol: str) -> dict[str, int]:
        """The counts by status of one model's predictions of one symbol (created at 0)."""
        counts = self.counts.get((model, symbol))
        if counts is None:
            counts = self.counts[(model, symbol)] = dict.fromkeys(STATUSES, 0)
        return counts

    def moved(self, model: str, symbol: str, status: str) -> None:
        """A pending prediction became ``status``."""
        counts = self.counts[(model, symbol)]
        counts["pending"] -= 1
        counts[status] += 1

    def called(self, model: str, symbol: str, timeframe: str, correct: int) -> None:
        """A prediction resolved, ``correct`` (0 or 1)."""
        hits = self.hits.get((model, symbol, timeframe))
        if hits is None:
            hits = self.hits[(model, symbol, timeframe)] = [0, 0]
        hits[0] += 1
        hits[1] += correct

    def rows(self) -> list[tuple[str, list[tuple]]]:
        """(statement, rows) that write them all as they are now."""
        return [(schema.SET_TOTAL, [(*key, status, n) for key, c in self.counts.items()
                                    for status, n in c.items()]),
                (schema.SET_HITS, [(*key, n, k) for key, (n, k) in self.hits.items()])]

    def tallies(self) -> dict[str, dict[str, int]]:
        """{model: {"pending": n, "resolved": n, "expired": n}}, by model."""
        out: dict[str, dict[str, int]] = {}
        for (model, _), c in sorted(self.counts.items()):
            total = out.setdefault(model, dict.fromkeys(STATUSES, 0))
            for status, n in c.items():
                total[status] += n
        return out

    def models(self) -> list[str]:
        """Every model with a prediction counted."""
        return sorted({model for model, _ in self.counts})

    def accuracy(self) -> dict[tuple[str, str], dict[str, float]]:
        """{(model, timeframe): {"resolved": n, "correct": k, "accuracy": k / n}}."""
        summed: dict[tuple[str, str], list[int]] = {}
        for (model, _, tf), (n, k) in self.hits.items():
            total = summed.setdefault((model, tf), [0, 0])
            total[0] += n
            total[1] += k
        return {key: {"resolved": n, "correct": k, "accuracy": k / n}
                for key, (n, k) in sorted(summed.items()) if n}
