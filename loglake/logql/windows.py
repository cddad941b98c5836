"""Range windows over step times: which samples fall in `(t - range, t]` for each step, vectorised."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StepGrid:
    """Evaluation times of a query: `first`, `first + step`, … up to `last` (all ns)."""

    first: int
    last: int
    step: int

    @property
    def count(self) -> int:
        """Return the number of evaluation times."""
        if self.step <= 0:
            return 1
        return (self.last - self.first) // self.step + 1

    def times(self) -> np.ndarray:
        """Return the evaluation times as an int64 array."""
        return self.first + np.arange(self.count, dtype=np.int64) * max(self.step, 1)


def step_span(ts: np.ndarray, grid: StepGrid, range_ns: int, offset_ns: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For each sample, return the first and last step index whose window `(t-range, t]` holds it (lo > hi: none)."""
    step = max(grid.step, 1)
    shifted = ts.astype(np.int64) + offset_ns - grid.first
    # t_j >= ts  ⇔  j >= ceil(shifted / step);  t_j - range < ts  ⇔  j <= floor((shifted + range - 1) / step)
    lo = -((-shifted) // step)
    hi = (shifted + range_ns - 1) // step
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, grid.count - 1)
    return lo, hi


def window_sums(
    series: np.ndarray,
    ts: np.ndarray,
    values: np.ndarray,
    n_series: int,
    grid: StepGrid,
    range_ns: int,
    offset_ns: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum `values` of each series over each step window; return (sums, counts) as (n_series, steps) arrays.

    A sample that falls in k windows adds to all k, by a difference array and a cumulative sum.
    """
    steps = grid.count
    lo, hi = step_span(ts, grid, range_ns, offset_ns)
    ok = lo <= hi
    series, lo, hi, values = series[ok], lo[ok], hi[ok], values[ok]
    width = steps + 1
    sums = np.zeros(n_series * width, dtype=np.float64)
    counts = np.zeros(n_series * width, dtype=np.int64)
    base = series.astype(np.int64) * width
    np.add.at(sums, base + lo, values)
    np.add.at(sums, base + hi + 1, -values)
    np.add.at(counts, base + lo, 1)
    np.add.at(counts, base + hi + 1, -1)
    sums = np.cumsum(sums.reshape(n_series, width), axis=1)[:, :steps]
    counts = np.cumsum(counts.reshape(n_series, width), axis=1)[:, :steps]
    return sums, counts
