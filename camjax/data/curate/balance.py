"""Stage 5, trajectory balancing (CameraCtrl II sec. 3.2) through `camjax.geometry.balancing`: every clip's
trajectory is categorised (primary direction x main turn) and weighted (view changes and turns); the lowest-importance
trajectories of over-represented categories are pruned toward a uniform distribution; a before/after histogram of
the categories is written as a PNG.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from camjax.data.curate.errors import CurationError
from camjax.geometry import balancing


@dataclasses.dataclass
class BalanceResult:
  """`keep` (sorted indices of the kept trajectories), the analyses, and category counts `[D, M]` before / after."""

  keep: np.ndarray
  analyses: list
  before: np.ndarray
  after: np.ndarray

  def category_names(self) -> list[str]:
    return [f"{d}/{t}" for d in balancing.DIRECTIONS for t in balancing.TURNS]


def uniformity(counts: np.ndarray) -> float:
  """Normalised entropy of the non-empty categories' distribution: 1.0 = uniform over the categories that occur."""
  c = np.asarray(counts, np.float64).ravel()
  c = c[c > 0]
  if len(c) <= 1:
    return 1.0
  p = c / c.sum()
  return float(-(p * np.log(p)).sum() / np.log(len(c)))


def balance_trajectories(trajectories: Sequence, target: int | None = None, **analyze_kwargs) -> BalanceResult:
  """Categorises, weights and prunes trajectories.

  Args:
    trajectories: `Cameras` or c2w `[T, 4, 4]` per clip (metric after scale calibration).
    target: per-category cap (default: `balancing.balance`'s, the mean count of the non-empty categories).
    **analyze_kwargs: passed to `camjax.geometry.balancing.analyze` (n, gamma, view_angle, min_translation).

  Returns:
    `BalanceResult`.

  Raises:
    CurationError: a trajectory cannot be analysed.
  """
  analyses = []
  for i, t in enumerate(trajectories):
    try:
      analyses.append(balancing.analyze(t, **analyze_kwargs))
    except Exception as e:
      raise CurationError(f"trajectory {i} cannot be analysed: {e}") from None
  before = balancing.category_counts(analyses)
  keep = balancing.balance(analyses, target) if analyses else np.zeros(0, np.int64)
  after = balancing.category_counts([analyses[i] for i in keep])
  return BalanceResult(keep=keep, analyses=analyses, before=before, after=after)


def plot_histogram(before: np.ndarray, after: np.ndarray, path) -> Path:
  """Writes a bar chart of the non-empty categories before and after balancing as a PNG (atomically)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from camjax.io import atomic_write

  names = [f"{d}/{t}" for d in balancing.DIRECTIONS for t in balancing.TURNS]
  b, a = np.asarray(before).ravel(), np.asarray(after).ravel()
  used = np.flatnonzero((b > 0) | (a > 0))
  fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(used) + 2), 3.5))
  x = np.arange(len(used))
  ax.bar(x - 0.2, b[used], 0.4, label=f"before ({int(b.sum())})")
  ax.bar(x + 0.2, a[used], 0.4, label=f"after ({int(a.sum())})")
  ax.set_xticks(x, [names[i] for i in used], rotation=60, ha="right", fontsize=7)
  ax.set_ylabel("clips")
  ax.set_title("trajectory categories (primary direction / main turn)")
  ax.legend()
  fig.tight_layout()
  path = Path(path)
  with atomic_write(path, "wb") as f:
    fig.savefig(f, format="png", dpi=100)
  plt.close(fig)
  return path
