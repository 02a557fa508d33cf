"""Write assets/returns.csv: eight years of simulated daily returns of a stock index and of one stock.

    python assets/make_points.py

The series are made up but follow what real daily returns do, the "stylised facts" of Cont (2001):
volatility comes in clusters (a GJR-GARCH(1,1) variance, which reacts more to falls than to rises),
the day-to-day shocks have heavy tails (Student-t with 5 degrees of freedom), and the stock moves
with the index (beta 1.3) plus news of its own. Seeded, so every run writes the same file.

Columns, in percent per day: `index` (the market) and `stock`. The CSV is what you would upload to
the explorer; the same rows are the "points" of the presets that use them (`presets/upload-returns.json`
and `presets/student-t-returns.json`), and this script refreshes those lists too, so the two never drift.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CSV = ROOT / "assets" / "returns.csv"
PRESETS = ("upload-returns.json", "student-t-returns.json")
DAYS = 2016  # eight years of trading days
SEED = 1987  # the year of Black Monday


def student_t(rng: np.random.Generator, df: float, n: int) -> np.ndarray:
    """Student-t shocks scaled to unit variance."""
    return rng.standard_t(df, n) * np.sqrt((df - 2) / df)


def simulate(days: int = DAYS, seed: int = SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # GJR-GARCH(1,1) for the index, in percent: long-run daily volatility about 0.9%.
    omega, alpha, gamma, beta = 0.05, 0.03, 0.09, 0.86
    variance = omega / (1 - alpha - gamma / 2 - beta)
    shocks = student_t(rng, 5.0, days)
    index = np.empty(days)
    for t in range(days):
        index[t] = 0.04 + np.sqrt(variance) * shocks[t]
        fall = index[t] < 0
        variance = omega + (alpha + gamma * fall) * index[t] ** 2 + beta * variance
    # The stock: beta 1.3 to the index, plus its own heavy-tailed news (Student-t, 3.5 degrees of freedom).
    own = 1.2 * student_t(rng, 3.5, days)
    stock = 0.02 + 1.3 * index + own
    return np.round(np.stack([index, stock], axis=1), 3)


def main() -> None:
    points = simulate()
    CSV.write_text("index,stock\n" + "".join(f"{x:.3f},{y:.3f}\n" for x, y in points))
    for name in PRESETS:
        path = ROOT / "presets" / name
        if path.exists():
            path.write_text(with_points(path.read_text(), points))
    print(f"wrote {CSV.relative_to(ROOT)}: {len(points)} rows; "
          f"kurtosis {kurtosis(points[:, 0]):.1f} (index), {kurtosis(points[:, 1]):.1f} (stock); "
          f"correlation {np.corrcoef(points.T)[0, 1]:.2f}")


def kurtosis(x: np.ndarray) -> float:
    z = (x - x.mean()) / x.std()
    return float((z**4).mean())


def with_points(text: str, points: np.ndarray) -> str:
    """The preset's text with its target's points list replaced, eight [x, y] pairs to a line."""
    start = text.index('"points": [')
    depth, end = 0, text.index("[", start)
    while True:  # to the bracket that closes the list
        depth += {"[": 1, "]": -1}.get(text[end], 0)
        end += 1
        if depth == 0:
            break
    rows = [", ".join(f"[{x:g}, {y:g}]" for x, y in points[i : i + 8]) for i in range(0, len(points), 8)]
    block = '"points": [\n      ' + ",\n      ".join(rows) + "\n  ]"
    new = text[:start] + block + text[end:]
    if json.loads(new)["target"]["points"] != points.tolist():
        raise ValueError("could not rewrite the points list")
    return new


if __name__ == "__main__":
    main()
