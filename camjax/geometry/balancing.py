"""Trajectory analysis and distribution balancing (CameraCtrl II sec. 3.2, REFERENCE.md section 3).

The paper describes the procedure in words; camjax implements it as follows (the numbers are the defaults):
  1. keypoints: at every frame, fit a line (principal axis) through the `n` preceding and the `n` following camera
     centres; the frame is a keypoint when the lines meet at an angle > `gamma` (non-maximum suppressed);
  2. segments between keypoints, each with its fitted direction and its path length;
  3. the longest segment's direction, in the FIRST camera's axes, is the primary direction, one of `DIRECTIONS`
     ("static" when the whole path is shorter than `min_translation`);
  4. view changes: rotation angle between the first and last camera of each segment, counted when > `view_angle`;
  5. turns: angles between adjacent segment directions (counted when > gamma); the turn right after the main
     segment is the main turn, classified as one of `TURNS` in the first camera's axes;
  6. importance = total view-change angle + total turn angle (radians) + 0.5 x (number of view changes + turns);
  7. categories: `DIRECTIONS x TURNS`; `balance` prunes the lowest-importance trajectories of categories above
     the target count (default: the mean count of the non-empty categories), making the distribution more uniform.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from camjax.geometry import se3
from camjax.geometry.cameras import Cameras
from camjax.geometry.errors import CameraError

DIRECTIONS = ("forward", "backward", "left", "right", "up", "down", "static")
TURNS = ("none", "left", "right", "up", "down", "reverse")


@dataclasses.dataclass(frozen=True)
class TrajectoryAnalysis:
  """Result of `analyze`; angles in degrees, lengths in the trajectory's units."""

  keypoints: tuple[int, ...]
  segments: tuple[tuple[int, int], ...]  # (start frame, end frame) pairs
  segment_directions: np.ndarray  # [S, 3] unit vectors, first-camera axes
  segment_lengths: np.ndarray  # [S]
  primary_direction: str
  view_changes: tuple[float, ...]  # degrees, one per significant change
  turns: tuple[float, ...]  # degrees, between adjacent segments
  main_turn: str
  importance: float

  @property
  def category(self) -> tuple[str, str]:
    return (self.primary_direction, self.main_turn)

  @property
  def category_index(self) -> int:
    return DIRECTIONS.index(self.primary_direction) * len(TURNS) + TURNS.index(self.main_turn)


def _fit_direction(points: np.ndarray) -> np.ndarray:
  """Principal direction of `[n, 3]` points, oriented from the first towards the last point."""
  centred = points - points.mean(0)
  _, _, Vt = np.linalg.svd(centred, full_matrices=False)
  d = Vt[0]
  if np.dot(points[-1] - points[0], d) < 0:
    d = -d
  return d


def _angle(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.degrees(np.arccos(np.clip(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1))))


def _direction_name(d: np.ndarray) -> str:
  axis = int(np.argmax(np.abs(d)))
  positive = d[axis] > 0
  return {0: ("right", "left"), 1: ("down", "up"), 2: ("forward", "backward")}[axis][0 if positive else 1]


def _turn_name(d_from: np.ndarray, d_to: np.ndarray, angle: float) -> str:
  if angle > 135.0:
    return "reverse"
  change = d_to - np.dot(d_to, d_from) * d_from  # the component the path turns towards
  axis = int(np.argmax(np.abs(change[:2])))  # left/right or up/down
  return {0: ("right", "left"), 1: ("down", "up")}[axis][0 if change[axis] > 0 else 1]


def analyze(trajectory, n: int = 4, gamma: float = 30.0, view_angle: float = 15.0,
            min_translation: float = 0.05) -> TrajectoryAnalysis:
  """Analyses one trajectory (CameraCtrl II sec. 3.2; the steps are in the module docstring).

  Args:
    trajectory: `Cameras [T]` or camera-to-world `[T, 4, 4]`.
    n: frames on each side used to fit the local lines.
    gamma: keypoint / turn angle threshold, degrees.
    view_angle: significant view change threshold, degrees.
    min_translation: a path shorter than this (trajectory units; metres after scale calibration) is "static".

  Raises:
    CameraError: fewer than 2 frames or non-finite poses.
  """
  c2w = np.asarray(trajectory.c2w if isinstance(trajectory, Cameras) else trajectory, dtype=np.float64)
  if c2w.ndim != 3 or len(c2w) < 2 or not np.isfinite(c2w).all():
    raise CameraError(f"analyze needs a finite [T >= 2, 4, 4] trajectory, got shape {c2w.shape}")
  c2w = se3.invert(c2w[0])[None] @ c2w  # first-camera axes
  p, R = c2w[:, :3, 3], c2w[:, :3, :3]
  T = len(p)
  steps = np.linalg.norm(np.diff(p, axis=0), axis=-1)
  path = float(steps.sum())

  # 1. keypoints
  angles = np.zeros(T)
  for t in range(n, T - n):
    before, after = p[t - n:t + 1], p[t:t + n + 1]
    if np.linalg.norm(before[-1] - before[0]) < 1e-3 * max(path, 1e-12) or \
       np.linalg.norm(after[-1] - after[0]) < 1e-3 * max(path, 1e-12):
      continue
    angles[t] = _angle(_fit_direction(before), _fit_direction(after))
  keypoints = []
  for t in range(T):
    if angles[t] > gamma and angles[t] == angles[max(0, t - n):t + n + 1].max():
      if not keypoints or t - keypoints[-1] > n:
        keypoints.append(t)

  # 2. segments
  bounds = [0, *keypoints, T - 1]
  segments = [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
  lengths = np.array([steps[a:b].sum() for a, b in segments])
  dirs = np.stack([_fit_direction(p[a:b + 1]) if lengths[i] > 1e-12 else np.zeros(3)
                   for i, (a, b) in enumerate(segments)])

  # 3. primary direction
  main = int(np.argmax(lengths))
  primary = "static" if path < min_translation else _direction_name(dirs[main])

  # 4. view changes
  views = [float(np.degrees(se3.geodesic_angle(R[a], R[b]))) for a, b in segments]
  view_changes = tuple(v for v in views if v > view_angle)

  # 5. turns
  turns = tuple(_angle(dirs[i], dirs[i + 1]) for i in range(len(segments) - 1)
                if lengths[i] > 1e-12 and lengths[i + 1] > 1e-12)
  main_turn = "none"
  if primary != "static" and main + 1 < len(segments) and lengths[main + 1] > 1e-12:
    a = _angle(dirs[main], dirs[main + 1])
    if a > gamma:
      main_turn = _turn_name(dirs[main], dirs[main + 1], a)
  significant_turns = [t for t in turns if t > gamma]

  # 6. importance
  importance = float(np.radians(sum(view_changes)) + np.radians(sum(significant_turns))
                     + 0.5 * (len(view_changes) + len(significant_turns)))
  return TrajectoryAnalysis(keypoints=tuple(keypoints), segments=tuple(segments), segment_directions=dirs,
                            segment_lengths=lengths, primary_direction=primary, view_changes=view_changes,
                            turns=turns, main_turn=main_turn, importance=importance)


def category_counts(analyses: Sequence[TrajectoryAnalysis]) -> np.ndarray:
  """Counts per category as a `[len(DIRECTIONS), len(TURNS)]` int array."""
  counts = np.zeros((len(DIRECTIONS), len(TURNS)), dtype=np.int64)
  for a in analyses:
    counts[DIRECTIONS.index(a.primary_direction), TURNS.index(a.main_turn)] += 1
  return counts


def balance(analyses: Sequence[TrajectoryAnalysis], target: int | None = None) -> np.ndarray:
  """Indices of the trajectories to keep: in every category holding more than `target` trajectories, only the
  `target` of highest importance stay (ties keep the earlier index).

  Args:
    analyses: one `TrajectoryAnalysis` per trajectory.
    target: per-category cap (default: the mean count over non-empty categories, rounded up).

  Returns:
    Sorted int array of kept indices.
  """
  if not analyses:
    return np.zeros(0, dtype=np.int64)
  counts = category_counts(analyses)
  if target is None:
    target = int(np.ceil(counts[counts > 0].mean()))
  if target < 1:
    raise CameraError(f"balance target must be >= 1, got {target}")
  by_cat: dict[int, list[int]] = {}
  for i, a in enumerate(analyses):
    by_cat.setdefault(a.category_index, []).append(i)
  keep = []
  for members in by_cat.values():
    ranked = sorted(members, key=lambda i: (-analyses[i].importance, i))
    keep.extend(ranked[:target])
  return np.asarray(sorted(keep), dtype=np.int64)
