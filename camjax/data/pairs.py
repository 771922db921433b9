"""Paired 3D point tracks for Track2View training, built the paper's way on the procedural multi-camera scenes
(Track2View sec. 3.3 "paired track extraction"; REFERENCE.md section 5).

Two synchronised cameras of one dynamic scene start at the same pose (`synthetic.render_scene` with two cameras):
camera A is the SOURCE view, camera B the TARGET view, both `T` frames at the same times. The paper reverses A,
appends B and runs a 3D point tracker on that one sequence, so every track crosses from the source half to the
target half through the shared first frame; re-reversing the A half gives, per query, its source and its target
track over the same `T` times, one-to-one by construction. Here the "tracker" is the renderer's ground truth: a query
is a surface point hit by the ray through a pixel centre, and `synthetic.track_points` moves it with its object.

The concatenated sequence (`concatenated_sequence`) has `2T - 1` frames:

    sequence frame  0      1     ...  T-2   T-1        T    ...  2T-2
    view / frame    A T-1  A T-2 ...  A 1   A 0 = B 0  B 1  ...  B T-1

The paper writes `2T` frames with the shared first frame twice (two identical images: the tracker needs the seam to
be seamless); with ground-truth geometry the duplicate adds nothing, so camjax keeps it once. Either way the middle
frame is the shared frame 0 (index `T - 1` here; `T - 1` or `T` of the paper's `2T`, the same image). Queries: the
first `N // 2` on sequence frame 0 (= source frame `T - 1`), the other `N - N // 2` on the middle frame (= source frame
0 = target frame 0); none beyond the middle, because at inference only the source video exists. Mid-sequence queries
cover content the first-frame ones miss (paper Tab. 4).

Training reads the pairs from disk (rendering them once), like the main job's clip datasets (`prepare.py`):

    folder = prepare_pairs(config, workdir)   # <workdir>/data/pairs_<n>x<T>f<size>px_q<N>_seed<s>_<digest>/
    it = iter(make_pair_pipeline(PairSource(folder), batch_size=8, seed=0))
    batch = next(it)                           # {"src_frames": uint8 [B, T, H, W, 3], ..., "caption": str [B]}
    state = it.get_state()                     # saved with the train state (`checkpoints.save`)

A pair dataset is a folder of `pair_<i>.npz` (the arrays of `paired_example(seed + i)`; strings as 0-d unicode
arrays, no pickles) and `pairs.json` (its provenance: every producing argument, the format version, the count).

Conventions:
  * `xy` are continuous pixel coordinates (x right, y down) of the image the intrinsics refer to, pixel (i, j)
    covering `[j, j + 1) x [i, i + 1)` with its centre at `(j + 0.5, i + 0.5)` (`camjax.geometry.cameras`; the
    renderer casts its rays through these centres, `kernels.bilinear` samples with the same convention).
    `normalized_xy` maps them to the `[-1, 1]` screen coordinates of REFERENCE.md 5 (image edges at +-1).
  * `depth` is the camera-space z in metres (OpenCV axes); `points_world` are metres in the scene's world frame
    (or in the source's first camera frame in `paired_example`, see `reference`).
  * Where a point is behind a camera (depth <= 0) there is no projection: its `xy` is 0 (kept finite so masked
    arithmetic downstream stays finite) and it is invalid.

Validity:
  * target (`tgt_valid`): depth > 0 and inside the image, NOT occlusion. At inference the target tracks are the
    source 3D tracks reprojected with the user's target cameras (`target_tracks_from_source`), which cannot know what
    occludes them in a video not generated yet; training with target occlusion would teach the model a signal it
    never gets. Occluded target points therefore stay valid (their depth, larger than the occluder's, tells the
    model they lie behind it: the disparity encoding of REFERENCE.md 5 step 3).
  * source (`src_valid`): depth > 0, inside the image AND visible in the source render (the renderer's depth test,
    `synthetic.visibility`, 3% relative tolerance). At inference the source tracks come from a 3D tracker run on the
    source video, which reports occlusion; the conditioner samples source features at `src_xy` (step 1, zero where
    invalid), and an occluded point would read its occluder's features.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

import grain
import jax
import numpy as np

from camjax import geometry as g
from camjax.data import shards, synthetic
from camjax.data.records import DataError, RecordError

log = logging.getLogger(__name__)

_TRAJECTORY_SALT = 0x7472616A  # seeds of the pair's two trajectories: default_rng([seed, salt])
_QUERY_SALT = 0x71756572  # seeds of the query pixels


# ------------------------------------------------------------------------------------------------ projection
def project(points: np.ndarray, cameras: g.Cameras) -> tuple[np.ndarray, np.ndarray]:
  """Projects per-frame world points into per-frame cameras.

  Args:
    points: world points `[N, T, 3]`, metres.
    cameras: `Cameras [T]`.

  Returns:
    `(xy [N, T, 2], depth [N, T])` in float64: pixel coordinates (pixel centres at +0.5; 0 where depth <= 0) and
    camera-space z in metres.
  """
  points = np.asarray(points, np.float64)
  w2c, K = np.asarray(cameras.w2c, np.float64), np.asarray(cameras.K, np.float64)
  cam = np.einsum("tij,ntj->nti", w2c[:, :3, :3], points) + w2c[None, :, :3, 3]
  pix = np.einsum("tij,ntj->nti", K, cam)
  depth = cam[..., 2]
  front = depth > 0
  xy = np.where(front[..., None], pix[..., :2] / np.where(front, depth, 1.0)[..., None], 0.0)
  return xy, depth


def in_image(xy: np.ndarray, depth: np.ndarray, height: int, width: int) -> np.ndarray:
  """`[...]` bool: in front of the camera (depth > 0) and inside the `height x width` image (0 <= x < W, 0 <= y < H)."""
  x, y = xy[..., 0], xy[..., 1]
  return (depth > 0) & (x >= 0) & (x < width) & (y >= 0) & (y < height)


def normalized_xy(xy: np.ndarray, height: int, width: int) -> np.ndarray:
  """Pixel coordinates `[..., 2]` -> `[-1, 1]` screen coordinates (image edges at -1 and +1, pixel centres inside)."""
  return 2.0 * np.asarray(xy) / np.array([width, height], np.float64) - 1.0


def target_tracks_from_source(points_world: np.ndarray, valid: np.ndarray, cameras_tgt: g.Cameras
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Target tracks at inference: the source 3D tracks reprojected with the target cameras (Track2View sec. 3.3).

  Args:
    points_world: source 3D tracks `[N, T, 3]`, metres, in the frame of the target cameras' `w2c`.
    valid: `[N, T]` bool, frames where the source track's 3D position is known (a 3D tracker's estimate; the
      renderer's ground truth is known at every frame, so `PairedTracks` passes all True).
    cameras_tgt: `Cameras [T]` of the target view.

  Returns:
    `(xy [N, T, 2] float32 pixels, depth [N, T] float32 metres, valid [N, T] bool)`, valid iff the source point was
    valid, its target depth > 0 and it lands inside the target image. Occlusion in the target view is unknown here
    and does not invalidate a track.

  Raises:
    DataError: shapes that do not match (`[N, T, 3]`, `[N, T]`, `T` target cameras).
  """
  points_world, valid = np.asarray(points_world), np.asarray(valid)
  if points_world.ndim != 3 or points_world.shape[-1] != 3:
    raise DataError(f"target_tracks_from_source: points_world must be [N, T, 3], got {points_world.shape}")
  if valid.shape != points_world.shape[:2]:
    raise DataError(f"target_tracks_from_source: valid must be [N, T] = {points_world.shape[:2]}, got {valid.shape}")
  if cameras_tgt.num_frames != points_world.shape[1] or cameras_tgt.w2c.ndim != 3:
    raise DataError(f"target_tracks_from_source: {points_world.shape[1]} track frames but target cameras of shape "
                    f"{tuple(cameras_tgt.w2c.shape)} (expected [T, 4, 4])")
  xy, depth = project(points_world, cameras_tgt)
  ok = valid.astype(bool) & in_image(xy, depth, cameras_tgt.height, cameras_tgt.width)
  return xy.astype(np.float32), depth.astype(np.float32), ok


# --------------------------------------------------------------------------------------------- the sequence
def concatenated_sequence(num_frames: int) -> tuple[np.ndarray, np.ndarray]:
  """The reversed-source + target sequence of `2T - 1` frames (module docstring).

  Returns:
    `(view [2T - 1], frame [2T - 1])` int: view 0 = source camera A, 1 = target camera B, and the frame of that view
    (the shared frame, index `T - 1`, is listed as A's frame 0).
  """
  T = num_frames
  view = np.concatenate([np.zeros(T, np.int64), np.ones(T - 1, np.int64)])
  frame = np.concatenate([np.arange(T - 1, -1, -1), np.arange(1, T)])
  return view, frame


def query_frames(num_frames: int) -> tuple[int, int]:
  """The two query frames of the concatenated sequence: its first frame and its middle (the shared frame 0)."""
  return 0, num_frames - 1


@dataclasses.dataclass(frozen=True)
class PairedTracks:
  """One-to-one source/target tracks of `N` scene points over the `T` synchronised frames of a camera pair.

  Attributes:
    src_xy, tgt_xy: float32 `[N, T, 2]` pixel coordinates in the source / target view (pixel centres at +0.5).
    src_depth, tgt_depth: float32 `[N, T]` camera-space z, metres.
    src_valid: bool `[N, T]`: depth > 0, inside the source image and visible in the source render.
    tgt_valid: bool `[N, T]`: depth > 0 and inside the target image (target occlusion deliberately not used).
    points_world: float32 `[N, T, 3]` the tracked points, metres, world frame of the cameras they were projected with.
    query_frame: int32 `[N]` frame of the concatenated sequence the query was placed on: 0 (source frame `T - 1`)
      for the first `N // 2`, `T - 1` (the shared frame 0) for the others.
  """

  src_xy: np.ndarray
  tgt_xy: np.ndarray
  src_depth: np.ndarray
  tgt_depth: np.ndarray
  src_valid: np.ndarray
  tgt_valid: np.ndarray
  points_world: np.ndarray
  query_frame: np.ndarray

  @property
  def num_queries(self) -> int:
    return int(self.src_xy.shape[0])

  @property
  def num_frames(self) -> int:
    return int(self.src_xy.shape[1])

  @property
  def query_source_frame(self) -> np.ndarray:
    """`[N]` the source (camera A) frame each query was placed on: `T - 1 - query_frame`."""
    return (self.num_frames - 1 - self.query_frame).astype(np.int32)

  def arrays(self) -> dict[str, np.ndarray]:
    """The fields as a dict (the track keys of `paired_example`)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# ------------------------------------------------------------------------------------------------ rendering
@dataclasses.dataclass
class RenderedPair:
  """A scene rendered by two synchronised cameras sharing frame 0: `src` (camera A) and `tgt` (camera B)."""

  seed: int
  scene: synthetic.Scene
  src: synthetic.SyntheticClip
  tgt: synthetic.SyntheticClip

  @property
  def times(self) -> np.ndarray:
    """`[T]` seconds of each frame (the same for both cameras)."""
    return np.arange(self.src.cameras.num_frames) / self.src.fps


def _moves(trajectory: str) -> set[str]:
  return {part.split(":")[0] for part in trajectory.split("+")}


def pair_trajectories(seed: int) -> tuple[str, str]:
  """The trajectories of scene `seed`'s pair: A a random preset composition that moves (as the renderer draws its
  first camera), B one sharing no move with A (the renderer's own multi-camera draw may repeat A's moves)."""
  rng = np.random.default_rng([seed, _TRAJECTORY_SALT])
  a = synthetic.random_trajectory_name(rng)
  while a == "static":
    a = synthetic.random_trajectory_name(rng)
  b = synthetic.random_trajectory_name(rng)
  while _moves(b) & _moves(a):
    b = synthetic.random_trajectory_name(rng)
  return a, b


def render_pair(seed: int, *, num_frames: int = 17, height: int = 64, width: int = 64, fps: float = 8.0,
                trajectories: Sequence[str] | None = None) -> RenderedPair:
  """Renders scene `seed` with two synchronised cameras sharing frame 0 (`synthetic.render_scene`).

  Args:
    seed: scene seed (the scene is `render_scene(seed)`'s).
    num_frames, height, width, fps: clip size and frame rate.
    trajectories: `(A, B)` preset names; default `pair_trajectories(seed)`.
    depth_maps: also return the rendered depth of both views, `src_depth_map`, `tgt_depth_map` float32
      `[T, H, W]` (camera-space z, metres, 0 where no surface is hit; for evaluation, not part of the training
      records).
  """
  names = list(trajectories) if trajectories is not None else list(pair_trajectories(seed))
  if len(names) != 2:
    raise DataError(f"render_pair: trajectories must name 2 cameras (source, target), got {names}")
  src, tgt = synthetic.render_scene(seed, num_frames=num_frames, height=height, width=width, num_cameras=2,
                                    num_tracks=0, fps=fps, trajectories=names)
  # render_scene draws its scene first from default_rng(seed); the query renders below check that it is this one.
  scene = synthetic.random_scene(np.random.default_rng(seed))
  return RenderedPair(seed=seed, scene=scene, src=src, tgt=tgt)


def _render_source_frame(pair: RenderedPair, frame: int) -> synthetic.Frame:
  """Re-renders source frame `frame` with its surface ids and local hit points (what queries are placed on)."""
  cams = pair.src.cameras
  out = synthetic.render_frame(pair.scene, float(pair.times[frame]), cams.K[frame], cams.w2c[frame], cams.height,
                               cams.width)
  if not np.array_equal(out.depth.astype(np.float32), pair.src.depth[frame]):
    raise DataError(f"scene {pair.seed}: re-rendering source frame {frame} does not reproduce render_scene's depth "
                    "(did render_scene change how it draws its scene?)")
  return out


def _sample_queries(frame: synthetic.Frame, count: int, rng: np.random.Generator, where: str):
  """`count` pixels of a rendered frame that see a surface (not sky): `(surface [count], local [count, 3])`.
  Without replacement while the frame has enough such pixels, then with replacement (duplicates are harmless)."""
  candidates = np.flatnonzero(frame.surface.ravel() != synthetic.SKY)
  if candidates.size == 0:
    raise DataError(f"{where} shows only sky: no surface point to place a query on")
  pick = rng.choice(candidates, size=count, replace=count > candidates.size)
  return frame.surface.ravel()[pick], frame.local.reshape(-1, 3)[pick]


def paired_tracks(pair: RenderedPair, num_queries: int, rng: np.random.Generator) -> PairedTracks:
  """Paired tracks of a rendered pair, the paper's way (module docstring): queries on the first and middle frames of
  the reversed-A + B sequence, followed through it with the ground-truth surface motion, the A half re-reversed.

  Args:
    pair: `render_pair(...)`.
    num_queries: N (>= 2): `N // 2` on the sequence's first frame, the rest on its middle frame.
    rng: draws the query pixels.
  """
  if num_queries < 2:
    raise DataError(f"paired_tracks: num_queries must be >= 2 (half on each query frame), got {num_queries}")
  T = pair.src.cameras.num_frames
  view, frame = concatenated_sequence(T)
  first, middle = query_frames(T)
  counts = {first: num_queries // 2, middle: num_queries - num_queries // 2}
  surface, local, query_frame = [], [], []
  for s, count in counts.items():
    rendered = _render_source_frame(pair, int(frame[s]))
    sid, loc = _sample_queries(rendered, count, rng, f"scene {pair.seed}, source frame {frame[s]}")
    surface.append(sid)
    local.append(loc)
    query_frame.append(np.full(count, s, np.int32))
  surface, local, query_frame = np.concatenate(surface), np.concatenate(local), np.concatenate(query_frame)

  # Follow every query through the whole sequence ("the tracker"): world positions at each sequence frame's time,
  # projected with that frame's camera, depth-tested against that frame's render.
  clips = (pair.src, pair.tgt)
  seq_cams = g.Cameras.concatenate([clips[v].cameras.take(np.array([f])) for v, f in zip(view, frame)])
  seq_depth_maps = np.stack([clips[v].depth[f] for v, f in zip(view, frame)])
  seq_points = synthetic.track_points(pair.scene, surface, local, pair.times[frame])
  seq_xy, seq_depth = project(seq_points, seq_cams)
  seq_visible = synthetic.visibility(seq_points, seq_cams, seq_depth_maps)

  # Split: the A half re-reversed is the source, the B half (from the shared frame on) the target.
  src, tgt = slice(T - 1, None, -1), slice(T - 1, None)
  height, width = seq_cams.height, seq_cams.width
  src_xy, src_depth = seq_xy[:, src], seq_depth[:, src]
  tgt_xy, tgt_depth = seq_xy[:, tgt], seq_depth[:, tgt]
  return PairedTracks(
      src_xy=src_xy.astype(np.float32), tgt_xy=tgt_xy.astype(np.float32),
      src_depth=src_depth.astype(np.float32), tgt_depth=tgt_depth.astype(np.float32),
      src_valid=in_image(src_xy, src_depth, height, width) & seq_visible[:, src],
      tgt_valid=in_image(tgt_xy, tgt_depth, height, width),
      points_world=seq_points[:, tgt].astype(np.float32), query_frame=query_frame)


# ------------------------------------------------------------------------------------------- training examples
def _check_sizes(num_frames: int, height: int, width: int, num_queries: int) -> None:
  for name, value, lowest in (("num_frames", num_frames, 2), ("height", height, 1), ("width", width, 1),
                              ("num_queries", num_queries, 2)):
    if int(value) != value or value < lowest:
      raise DataError(f"paired examples: {name} must be an integer >= {lowest}, got {value}")


def paired_example(seed: int, *, num_frames: int = 17, height: int = 64, width: int = 64, num_queries: int = 64,
                   fps: float = 8.0, reference: str = "first", trajectories: Sequence[str] | None = None,
                   depth_maps: bool = False) -> dict[str, Any]:
  """One Track2View training example of procedural scene `seed` (deterministic in its arguments).

  Args:
    seed: scene seed.
    num_frames, height, width, fps: clip size (rendered at this size: no resize or crop) and frame rate.
    num_queries: N paired tracks (the paper uses 1152).
    reference: "first" poses both views and `points_world` relative to the source's first camera (which is also
      the target's: they share frame 0), as `pipeline.make_pipeline(paired=True)` does; "none" keeps the scene's
      world frame.
    trajectories: `(A, B)` preset names; default `pair_trajectories(seed)`.

  Returns:
    `src_frames`, `tgt_frames` uint8 `[T, H, W, 3]`; `src_K`, `tgt_K` float32 `[T, 3, 3]` pixels; `src_w2c`,
    `tgt_w2c` float32 `[T, 4, 4]` (OpenCV, metres); the `PairedTracks` arrays `src_xy`, `tgt_xy` `[N, T, 2]`,
    `src_depth`, `tgt_depth` `[N, T]`, `src_valid`, `tgt_valid` `[N, T]`, `points_world` `[N, T, 3]`,
    `query_frame` `[N]`; `caption`, `clip_id` (str); `fps` float32.

  Raises:
    DataError: a size out of range, an unknown `reference`, a frame with no surface to place queries on.
  """
  _check_sizes(num_frames, height, width, num_queries)
  if reference not in ("first", "none"):
    raise DataError(f"paired_example: reference must be 'first' or 'none', got {reference!r}")
  pair = render_pair(seed, num_frames=num_frames, height=height, width=width, fps=fps, trajectories=trajectories)
  tracks = paired_tracks(pair, num_queries, np.random.default_rng([seed, _QUERY_SALT]))
  src_cams, tgt_cams, points = pair.src.cameras, pair.tgt.cameras, tracks.points_world.astype(np.float64)
  if reference == "first":
    ref = src_cams.w2c[0]
    src_cams, tgt_cams = src_cams.relative(ref), tgt_cams.relative(ref)
    points = points @ ref[:3, :3].T + ref[:3, 3]
  out = {"src_frames": pair.src.frames, "tgt_frames": pair.tgt.frames,
         "src_K": np.asarray(src_cams.K, np.float32), "src_w2c": np.asarray(src_cams.w2c, np.float32),
         "tgt_K": np.asarray(tgt_cams.K, np.float32), "tgt_w2c": np.asarray(tgt_cams.w2c, np.float32)}
  out.update(tracks.arrays())
  out.update(points_world=points.astype(np.float32), caption=np.str_(pair.src.caption),
             clip_id=np.str_(f"synthetic-pair-{seed:06d}"), fps=np.float32(fps))
  if depth_maps:
    out.update(src_depth_map=np.asarray(pair.src.depth, np.float32), tgt_depth_map=np.asarray(pair.tgt.depth, np.float32))
  return out


class PairedSyntheticSource:
  """Grain random-access source of paired examples rendered on the fly: index `i` is `paired_example(seed + i,
  ...)`, so an element depends only on `(seed, i)` and Grain checkpoints of an iterator over it resume exactly.

      ds = grain.MapDataset.source(PairedSyntheticSource(1000, seed=0, height=32, width=32)).shuffle(seed=0).batch(2)
  """

  def __init__(self, num_scenes: int, *, seed: int = 0, num_frames: int = 17, height: int = 64, width: int = 64,
               num_queries: int = 64, fps: float = 8.0, reference: str = "first"):
    if int(num_scenes) != num_scenes or num_scenes < 1:
      raise DataError(f"PairedSyntheticSource: num_scenes must be an integer >= 1, got {num_scenes}")
    _check_sizes(num_frames, height, width, num_queries)
    self.num_scenes, self.seed = int(num_scenes), int(seed)
    self.kwargs = dict(num_frames=num_frames, height=height, width=width, num_queries=num_queries, fps=fps,
                       reference=reference)

  def __len__(self) -> int:
    return self.num_scenes

  def __getitem__(self, index: int) -> dict[str, Any]:
    if not 0 <= index < self.num_scenes:
      raise IndexError(f"PairedSyntheticSource index {index} out of range for {self.num_scenes} scenes")
    return paired_example(self.seed + int(index), **self.kwargs)


# ------------------------------------------------------------------------------------------ written datasets
PAIRS_FILE = "pairs.json"
PAIRS_FORMAT = 1  # bump when the folder layout or the arrays of a pair file change
PAIRS_PRODUCER = "camjax.data.pairs"
_PAIR_FILE = re.compile(r"pair_\d+\.npz")


def pair_file(index: int) -> str:
  """The file name of pair `index` in a pair dataset folder."""
  return f"pair_{index:06d}.npz"


def pair_shapes(num_frames: int, height: int, width: int, num_queries: int) -> dict[str, tuple[tuple[int, ...], str]]:
  """`{key: (shape, dtype)}` of one pair (`paired_example`'s arrays; dtype "str" for 0-d unicode strings)."""
  T, H, W, N = num_frames, height, width, num_queries
  out = {}
  for view in ("src", "tgt"):
    out.update({f"{view}_frames": ((T, H, W, 3), "uint8"), f"{view}_K": ((T, 3, 3), "float32"),
                f"{view}_w2c": ((T, 4, 4), "float32"), f"{view}_xy": ((N, T, 2), "float32"),
                f"{view}_depth": ((N, T), "float32"), f"{view}_valid": ((N, T), "bool")})
  out.update(points_world=((N, T, 3), "float32"), query_frame=((N,), "int32"), caption=((), "str"),
             clip_id=((), "str"), fps=((), "float32"))
  return out


def pair_provenance(num_pairs: int, *, seed: int, num_frames: int, height: int, width: int, num_queries: int,
                    fps: float = 8.0, reference: str = "first") -> dict:
  """The provenance of a pair dataset: every argument of `write_pair_dataset` that changes its files, and the
  renderer version (`synthetic.RENDERER_VERSION`). `shards.provenance_digest` of it names the cache folder."""
  return {"format": PAIRS_FORMAT, "producer": PAIRS_PRODUCER, "arguments": dict(
      num_pairs=int(num_pairs), seed=int(seed), num_frames=int(num_frames), height=int(height), width=int(width),
      num_queries=int(num_queries), fps=float(fps), reference=str(reference),
      renderer_version=synthetic.RENDERER_VERSION)}


def read_pair_provenance(folder) -> dict | None:
  """The `pairs.json` of a pair dataset folder; None when it is absent or unreadable."""
  try:
    out = json.loads((Path(folder) / PAIRS_FILE).read_text())
  except (OSError, ValueError):
    return None
  return out if isinstance(out, dict) else None


def pair_dataset_problems(folder, provenance: dict) -> list[str]:
  """Why the folder is not a complete pair dataset of `provenance`, one line each (empty: reuse it)."""
  folder = Path(folder)
  if not folder.is_dir():
    return [f"{folder} does not exist"]
  old = read_pair_provenance(folder)
  if old is None:
    return [f"{folder} has no readable {PAIRS_FILE} (written by hand, by an older camjax, or damaged)"]
  problems = shards.provenance_differences({k: old.get(k) for k in ("format", "producer", "arguments")}, provenance)
  if problems:
    return problems
  count = provenance["arguments"]["num_pairs"]
  if old.get("count") != count:
    return [f"{PAIRS_FILE} counts {old.get('count')!r} pairs, expected {count}"]
  missing = [pair_file(i) for i in range(count) if not (folder / pair_file(i)).is_file()]
  if missing:
    return [f"{len(missing)} pair file(s) missing: {', '.join(missing[:3])}"]
  return []


def _check_replaceable(out_dir: Path) -> None:
  """Refuses to replace a file or a folder holding anything but a pair dataset's own files."""
  if out_dir.exists() and not out_dir.is_dir():
    raise DataError(f"{out_dir} is a file, not a pair dataset folder")
  if out_dir.is_dir():
    others = sorted(p.name for p in out_dir.iterdir() if p.name != PAIRS_FILE and not _PAIR_FILE.fullmatch(p.name))
    if others:
      raise DataError(f"{out_dir} holds files that are not a pair dataset ({', '.join(others[:3])}): not replacing "
                      "it; choose a new or empty output folder")


def write_pair_dataset(out_dir, num_pairs: int, *, seed: int, num_frames: int, height: int, width: int,
                       num_queries: int, fps: float = 8.0, reference: str = "first", progress: bool = False) -> Path:
  """Renders `paired_example(seed + i, ...)` for `i < num_pairs` into a pair dataset folder (module docstring).

  The folder is written beside `out_dir` (`.camjax-tmp-<name>-<random>`) and renamed into place when complete,
  replacing what was there: an error or an interrupt leaves `out_dir` as it was and no temporary folder behind.

  Args:
    out_dir: the dataset folder (absent, empty, or a pair dataset to replace).
    num_pairs: pairs to render (>= 1).
    seed, num_frames, height, width, num_queries, fps, reference: `paired_example`'s arguments (pixels, frames).
    progress: show a progress bar.

  Returns:
    `out_dir`.

  Raises:
    DataError: an argument out of range; `out_dir` is a file or holds other files (never replaced); a scene with no
      surface to place queries on.
  """
  if int(num_pairs) != num_pairs or num_pairs < 1:
    raise DataError(f"write_pair_dataset: num_pairs must be an integer >= 1, got {num_pairs}")
  _check_sizes(num_frames, height, width, num_queries)
  provenance = pair_provenance(num_pairs, seed=seed, num_frames=num_frames, height=height, width=width,
                               num_queries=num_queries, fps=fps, reference=reference)
  out_dir = Path(out_dir)
  _check_replaceable(out_dir)
  out_dir.parent.mkdir(parents=True, exist_ok=True)
  prefix = shards._TMP_PREFIX  # pylint: disable=protected-access  # skipped by shards.input_listing
  tmp = out_dir.parent / f"{prefix}{out_dir.name}-{uuid.uuid4().hex[:8]}"
  indices = range(int(num_pairs))
  if progress:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    indices = tqdm(indices, desc=f"rendering pairs into {out_dir.name}", unit="pair")
  try:
    tmp.mkdir()
    for i in indices:
      example = paired_example(int(seed) + i, num_frames=num_frames, height=height, width=width,
                               num_queries=num_queries, fps=fps, reference=reference)
      np.savez_compressed(tmp / pair_file(i), **example)
    written = dict(provenance, count=int(num_pairs),
                   written_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    (tmp / PAIRS_FILE).write_text(json.dumps(written, indent=1) + "\n")
    shards._replace_folder(tmp, out_dir)  # pylint: disable=protected-access
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out_dir


def prepare_pairs(config, workdir) -> Path:
  """The pair dataset a Track2View config trains on, rendered on first use (as `prepare.prepare_dataset`).

  Args:
    config: an ml_collections config with `seed` and `data.num_scenes` (pairs), `data.num_frames`,
      `data.render_size` (pixels: height = width, rendered at this size) and `data.num_queries`.
    workdir: the run's folder; the dataset goes to
      `<workdir>/data/pairs_<num_scenes>x<frames>f<size>px_q<queries>_seed<seed>_<digest>/`, the digest of its
      `pair_provenance` (`shards.provenance_digest`).

  Returns:
    The dataset folder (what `PairSource` opens), the same on every process. A folder there of the same provenance
    with all its pair files is reused; anything else there (no `pairs.json`, other arguments, missing files) is
    replaced. Process 0 writes, the others wait at a barrier.

  Raises:
    DataError: `data.num_queries` unset or a size out of range; the folder holds files that are not a pair dataset;
      the dataset is not there after process 0 wrote it (the processes disagree on the folder: a filesystem that is
      not shared).
  """
  from camjax.data.prepare import on_process_zero  # pylint: disable=import-outside-toplevel  # imports no pairs

  d = config.data
  if d.get("num_queries") is None:
    raise DataError("config.data.num_queries is not set: the pair dataset needs the number of paired tracks")
  kwargs = dict(seed=int(config.seed), num_frames=int(d.num_frames), height=int(d.render_size),
                width=int(d.render_size), num_queries=int(d.num_queries))
  num_pairs = int(d.num_scenes)
  provenance = pair_provenance(num_pairs, **kwargs)
  name = f"pairs_{num_pairs}x{kwargs['num_frames']}f{d.render_size}px_q{kwargs['num_queries']}_seed{config.seed}"
  out = Path(workdir) / "data" / f"{name}_{shards.provenance_digest(provenance)}"

  def write():
    problems = pair_dataset_problems(out, provenance)
    if not problems:
      log.info("reusing pair dataset %s", out)
      return
    if out.exists():
      log.warning("replacing the pair dataset cache %s: %s", out, "; ".join(problems))
    write_pair_dataset(out, num_pairs, progress=True, **kwargs)
    log.info("wrote pair dataset %s", out)

  on_process_zero(write, f"camjax pairs {out.name}")
  if not (out / PAIRS_FILE).is_file():
    raise DataError(f"process {jax.process_index()}: no pair dataset at {out} after process 0 wrote it: the "
                    "processes must see the same workdir (a shared filesystem)")
  return out


# ------------------------------------------------------------------------------------------------- reading
class PairSource:
  """Grain random-access source over a pair dataset folder: `source[i]` is the dict of numpy arrays of pair `i`
  (`paired_example(seed + i, ...)`'s keys; `caption`, `clip_id` 0-d unicode arrays).

  Attributes:
    folder: the dataset folder.
    arguments: the producing arguments (`pair_provenance`'s), from its `pairs.json`.

  Raises:
    DataError: (at construction) no readable `pairs.json`, another format version, or a count that is not >= 1.
    RecordError: (from `source[i]`, a DataError) a missing, corrupt or mis-shaped pair file, naming it.
  """

  def __init__(self, folder):
    self.folder = Path(folder)
    prov = read_pair_provenance(self.folder)
    if prov is None:
      raise DataError(f"{self.folder} has no readable {PAIRS_FILE}: not a pair dataset (write it with "
                      "write_pair_dataset / prepare_pairs; an interrupted write leaves no folder)")
    if prov.get("format") != PAIRS_FORMAT or prov.get("producer") != PAIRS_PRODUCER:
      raise DataError(f"{self.folder / PAIRS_FILE}: format {prov.get('format')!r} of {prov.get('producer')!r}, this "
                      f"camjax reads format {PAIRS_FORMAT} of {PAIRS_PRODUCER!r}: re-render it")
    count, self.arguments = prov.get("count"), prov.get("arguments", {})
    if not isinstance(count, int) or count < 1:
      raise DataError(f"{self.folder / PAIRS_FILE}: count must be an integer >= 1, got {count!r}")
    self.count = count
    a = self.arguments
    self.shapes = pair_shapes(a["num_frames"], a["height"], a["width"], a["num_queries"])

  def __len__(self) -> int:
    return self.count

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < self.count:
      raise IndexError(f"PairSource index {index} out of range for {self.count} pairs in {self.folder}")
    path = self.folder / pair_file(int(index))
    try:
      with np.load(path, allow_pickle=False) as z:
        example = {k: z[k] for k in z.files}
    except FileNotFoundError:
      raise RecordError(path.name, f"pair file {path} is missing ({self.folder / PAIRS_FILE} lists "
                        f"{self.count} pairs)") from None
    except Exception as e:  # pylint: disable=broad-except  # zipfile / zlib / numpy raise many kinds
      raise RecordError(path.name, f"cannot read pair file {path} ({type(e).__name__}: {e})") from None
    self._check(example, path)
    return example

  def _check(self, example: dict[str, np.ndarray], path: Path) -> None:
    missing = sorted(set(self.shapes) - set(example))
    if missing:
      raise RecordError(path.name, f"pair file {path} lacks {', '.join(missing)}")
    for key, (shape, dtype) in self.shapes.items():
      value = example[key]
      ok_dtype = value.dtype.kind == "U" if dtype == "str" else value.dtype == np.dtype(dtype)
      if value.shape != shape or not ok_dtype:
        raise RecordError(path.name, f"pair file {path}: {key} is {value.dtype} {value.shape}, expected {dtype} "
                          f"{shape} ({PAIRS_FILE} arguments)")


_PER_QUERY = ("src_xy", "tgt_xy", "src_depth", "tgt_depth", "src_valid", "tgt_valid", "points_world", "query_frame")


class SelectQueries(grain.transforms.RandomMap):
  """Keeps `num_queries` of a pair's stored tracks, drawn without replacement and kept in stored order: half
  (`num_queries // 2`) of those placed on the sequence's first frame, the rest of those on its middle frame, so the
  paper's query split holds (module docstring). A module-level class so Grain workers can pickle it."""

  def __init__(self, num_queries: int):
    if int(num_queries) != num_queries or num_queries < 2:
      raise DataError(f"num_queries must be an integer >= 2 (half on each query frame), got {num_queries}")
    self.num_queries = int(num_queries)

  def random_map(self, element: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    query_frame = element["query_frame"]
    picks = []
    for group, count in ((query_frame == 0, self.num_queries // 2),
                         (query_frame != 0, self.num_queries - self.num_queries // 2)):
      candidates = np.flatnonzero(group)
      if candidates.size < count:
        raise RecordError(str(element["clip_id"]), f"{candidates.size} stored tracks on a query frame, "
                          f"{count} asked (num_queries {self.num_queries})")
      picks.append(np.sort(rng.choice(candidates, size=count, replace=False)))
    keep = np.concatenate(picks)
    return {k: (v[keep] if k in _PER_QUERY else v) for k, v in element.items()}


def make_pair_pipeline(source: Sequence[dict[str, np.ndarray]], *, batch_size: int, seed: int = 0,
                       shuffle: bool = True, num_epochs: int | None = None, start_index: int = 0,
                       process_index: int | None = None, process_count: int | None = None,
                       num_queries: int | None = None, drop_remainder: bool = True) -> grain.IterDataset:
  """The Track2View training pipeline over paired examples, with `pipeline.make_pipeline`'s conventions.

  Args:
    source: a `PairSource` (or any random-access sequence of `paired_example` dicts, e.g. `PairedSyntheticSource`).
    batch_size: per-process batch size (the global batch is `batch_size * process_count`).
    seed: shuffling (and query-subset) seed; shuffle: reshuffle the pairs every epoch (deterministic in `seed`).
    num_epochs: None repeats forever.
    start_index: skip the first `start_index` ELEMENTS of the global stream (before sharding by process), as
      `make_pipeline`: `step * global_batch` resumes at global batch `step`, whatever the process count.
    process_index, process_count: shard by process (default: `jax.process_index()` / `jax.process_count()`):
      element `i` of the global stream goes to process `i % process_count`, so the processes' batches are disjoint
      parts of the global batch of one process with batch `batch_size * process_count`.
    num_queries: keep this many of each pair's stored tracks (`SelectQueries`: a fresh draw per element and epoch);
      None keeps all.
    drop_remainder: drop a last partial batch (with `num_epochs`).

  Returns:
    A Grain `IterDataset` of batches; `iter()` of it has `get_state()` / `set_state()` (what
    `grain.checkpoint.CheckpointSave` / `CheckpointRestore` save and restore). A batch holds: `src_frames`,
    `tgt_frames` uint8 `[B, T, H, W, 3]`; `src_K`, `tgt_K` float32 `[B, T, 3, 3]` pixels; `src_w2c`, `tgt_w2c`
    float32 `[B, T, 4, 4]` (OpenCV, metres, relative to the source's first camera); `src_xy`, `tgt_xy` float32
    `[B, N, T, 2]` pixels; `src_depth`, `tgt_depth` float32 `[B, N, T]` metres; `src_valid`, `tgt_valid` bool
    `[B, N, T]`; `points_world` float32 `[B, N, T, 3]` metres; `query_frame` int32 `[B, N]`; `caption`, `clip_id`
    str `[B]`; `fps` float32 `[B]`.

  Raises:
    DataError: a batch size, start index or process index out of range; more `num_queries` than stored.
  """
  process_index = jax.process_index() if process_index is None else int(process_index)
  process_count = jax.process_count() if process_count is None else int(process_count)
  if int(batch_size) != batch_size or batch_size < 1:
    raise DataError(f"make_pair_pipeline: batch_size must be an integer >= 1, got {batch_size}")
  if not 0 <= process_index < process_count:
    raise DataError(f"make_pair_pipeline: process_index {process_index} out of range for {process_count} processes")
  if int(start_index) != start_index or start_index < 0:
    raise DataError(f"make_pair_pipeline: start_index must be an integer >= 0, got {start_index}")
  stored = getattr(source, "arguments", {}).get("num_queries")
  if num_queries is not None and stored is not None and num_queries > stored:
    raise DataError(f"make_pair_pipeline: num_queries {num_queries} but the dataset stores {stored} tracks per pair")
  ds = grain.MapDataset.source(source).seed(seed)
  if shuffle:
    ds = ds.shuffle()
  ds = ds.repeat(num_epochs)
  if num_queries is not None:
    ds = ds.random_map(SelectQueries(num_queries))
  # Shard by process last (MapDatasets are lazy: each process reads only its own elements).
  ds = ds[int(start_index):][process_index::process_count]
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
  return it_ds.batch(int(batch_size), drop_remainder=drop_remainder)
