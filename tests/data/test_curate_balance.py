"""Stage 5 (trajectory balancing) on a synthetic bank with a known skew."""

import numpy as np

from camjax import geometry as g
from camjax.data.curate import balance
from camjax.geometry import balancing


def _bank():
  """60 dolly-in (forward) trajectories, 6 truck-left, 6 pedestal-up, 6 orbit: heavily skewed toward forward."""
  rng = np.random.default_rng(0)
  names = ["dolly_in"] * 60 + ["truck_left"] * 6 + ["pedestal_up"] * 6 + ["truck_right"] * 6
  out = []
  for name in names:
    mag = {"dolly_in": rng.uniform(0.5, 1.5), "truck_left": rng.uniform(0.3, 1.0), "pedestal_up": rng.uniform(0.2, 0.5),
           "truck_right": rng.uniform(0.3, 1.0)}[name]
    extra = f"+pan_left:{rng.uniform(0, 30):.1f}" if name == "dolly_in" else ""
    out.append(g.preset(f"{name}:{mag:.2f}{extra}", 25))
  return out


def test_balancing_moves_the_histogram_toward_uniform(tmp_path):
  bank = _bank()
  result = balance.balance_trajectories(bank)
  forward = balancing.DIRECTIONS.index("forward")
  assert result.before[forward].sum() == 60
  assert result.after[forward].sum() < 30  # the dominant category is pruned
  others = [balancing.DIRECTIONS.index(d) for d in ("left", "right", "up")]
  np.testing.assert_array_equal(result.after[others], result.before[others])  # rare categories untouched
  assert result.after.max() <= int(np.ceil(result.before[result.before > 0].mean()))
  assert balance.uniformity(result.after) > balance.uniformity(result.before) + 0.1
  # the kept forward trajectories are the most important ones (the largest view changes)
  kept_forward = [i for i in result.keep if result.analyses[i].primary_direction == "forward"]
  dropped_forward = [i for i in range(60) if i not in set(result.keep)]
  assert min(result.analyses[i].importance for i in kept_forward) >= \
      max(result.analyses[i].importance for i in dropped_forward)
  png = balance.plot_histogram(result.before, result.after, tmp_path / "h.png")
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
