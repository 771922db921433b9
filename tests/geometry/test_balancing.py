"""Trajectory analysis and balancing (CameraCtrl II sec. 3.2)."""

import numpy as np
import pytest

from camjax import geometry as g


@pytest.mark.parametrize("name, direction", [("dolly_in", "forward"), ("dolly_out", "backward"),
                                             ("truck_left", "left"), ("truck_right", "right"),
                                             ("pedestal_up", "up"), ("pedestal_down", "down"), ("pan_left", "static")])
def test_primary_direction(name, direction):
  a = g.analyze(g.preset(name, 25))
  assert a.primary_direction == direction and a.main_turn == "none" and a.keypoints == ()


def test_turn_is_a_keypoint_with_its_direction_and_view_change():
  turn_left = g.chain([g.preset("dolly_in:2", 25), g.preset("pan_left:90", 3), g.preset("dolly_in:1", 25)])
  a = g.analyze(turn_left)
  assert a.primary_direction == "forward" and a.main_turn == "left"
  assert len(a.keypoints) == 1 and abs(a.keypoints[0] - 25) <= 2
  assert a.turns[0] == pytest.approx(90, abs=1)
  assert sum(a.view_changes) == pytest.approx(90, abs=1)
  right = g.analyze(g.chain([g.preset("dolly_in:2", 25), g.preset("pan_right:90", 3), g.preset("dolly_in:1", 25)]))
  assert right.main_turn == "right"
  back = g.analyze(g.chain([g.preset("truck_right:2", 25), g.preset("truck_left:1", 25)]))
  assert back.primary_direction == "right" and back.main_turn == "reverse"
  assert a.importance > g.analyze(g.preset("dolly_in", 25)).importance


def test_balance_prunes_over_represented_categories_by_importance():
  rng = np.random.default_rng(0)
  trajectories = []
  for i in range(12):  # forward motions dominate, as in real video
    wobble = g.preset(f"dolly_in:1+pan_left:{rng.uniform(0, 40):.1f}", 25)
    trajectories.append(wobble)
  trajectories += [g.preset("truck_left", 25), g.preset("truck_right", 25), g.preset("pedestal_up", 25)]
  analyses = [g.analyze(t) for t in trajectories]
  counts = g.category_counts(analyses)
  assert counts[g.DIRECTIONS.index("forward"), g.TURNS.index("none")] == 12
  keep = g.balance(analyses, target=3)
  kept_forward = [i for i in keep if i < 12]
  assert len(kept_forward) == 3 and set(range(12, 15)) <= set(keep)
  importance = np.array([a.importance for a in analyses[:12]])
  assert set(kept_forward) == set(np.argsort(-importance)[:3].tolist())
  default = g.balance(analyses)  # mean count of the non-empty categories: (12 + 1 + 1 + 1) / 4 -> 4
  assert len(default) == 4 + 3


def test_real_re10k_trajectories(shared_data):
  files = sorted((shared_data / "re10k_poses_49f" / "re10k_poses").glob("*.txt"))
  analyses = [g.analyze(g.read_re10k(f), min_translation=0.0) for f in files]
  assert sum(g.category_counts(analyses).ravel()) == len(files)
  assert {a.primary_direction for a in analyses} - {"static"}  # real walkthroughs move
