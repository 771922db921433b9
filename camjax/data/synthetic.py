"""Procedural dynamic 4D scenes: the embedded default dataset (no download, CPU-fast, exact ground truth).

A scene is a room (textured ground and walls, sky above the walls) holding a few textured objects (boxes, spheres,
cylinders), some moving (linear, circular, bouncing, spinning). One or more cameras share their first pose and follow
geometry presets or random compositions of them, in metres. A NumPy ray caster renders, per camera and frame, RGB,
metric depth (camera z, metres; 0 where the ray sees the sky), and the surface hit; ground-truth 3D point tracks
(world xyz and depth-tested visibility) follow points sampled on the first frame.

World axes follow OpenCV: y points DOWN, the ground is the plane y = 0 (objects stand at y < 0).

    python -m camjax.data.synthetic --out DIR --num_scenes 64 --resolution 64 --frames 17 --cameras 2

writes a TFDS/ArrayRecord dataset (see camjax.data.records) that camjax.data.pipeline reads, with a provenance file
(its arguments): a re-run with the same arguments reuses it, one with other arguments refuses unless given
`--overwrite` (which replaces the dataset atomically).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from camjax import geometry as g
from camjax.geometry import se3

ROOM_HALF_WIDTH = 4.0  # walls at x = +-4 m
ROOM_Z = (-4.0, 8.0)  # walls at z = -4 m and z = 8 m
WALL_HEIGHT = 3.0  # metres; above it is sky
SKY = -1  # surface id of the sky
GROUND, WALL_LEFT, WALL_RIGHT, WALL_BACK, WALL_FRONT = range(5)
FIRST_OBJECT = 5

COLORS = {
    "red": (0.85, 0.2, 0.15), "green": (0.2, 0.7, 0.25), "blue": (0.2, 0.35, 0.85), "yellow": (0.9, 0.8, 0.2),
    "purple": (0.6, 0.3, 0.75), "orange": (0.95, 0.55, 0.15), "cyan": (0.2, 0.75, 0.8), "white": (0.9, 0.9, 0.88),
}
SHAPES = ("sphere", "box", "cylinder")
MOTIONS = ("static", "linear", "circular", "bouncing", "spinning")
_LIGHT = np.array([0.4, -1.0, -0.3]) / np.linalg.norm([0.4, -1.0, -0.3])  # towards the light (up, back, right)


# --------------------------------------------------------------------------------------------------- textures
def _hash3(ix, iy, iz, seed):
  """Deterministic pseudo-random floats in [0, 1) per integer lattice point."""
  h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (iz.astype(np.int64) * 83492791)
  h = (h ^ (seed * 2654435761)) & 0xFFFFFFFF
  h = (h ^ (h >> 13)) * 1274126177 & 0xFFFFFFFF
  h = h ^ (h >> 16)
  return (h & 0xFFFF).astype(np.float64) / 65536.0


def value_noise(points: np.ndarray, seed: int, frequency: float = 4.0, octaves: int = 4) -> np.ndarray:
  """Fractal 3D value noise in [0, 1] at `points [..., 3]` (metres): smooth blobs from coarse to fine."""
  total, amplitude, norm = 0.0, 1.0, 0.0
  for octave in range(octaves):
    p = points * frequency * (2.0**octave)
    i = np.floor(p)
    f = p - i
    f = f * f * (3 - 2 * f)  # smoothstep
    i = i.astype(np.int64)
    acc = 0.0
    for dx in (0, 1):
      for dy in (0, 1):
        for dz in (0, 1):
          w = (f[..., 0] if dx else 1 - f[..., 0]) * (f[..., 1] if dy else 1 - f[..., 1]) * \
              (f[..., 2] if dz else 1 - f[..., 2])
          acc = acc + w * _hash3(i[..., 0] + dx, i[..., 1] + dy, i[..., 2] + dz, seed + octave)
    total = total + amplitude * acc
    norm += amplitude
    amplitude *= 0.5
  return total / norm


# ----------------------------------------------------------------------------------------------------- scene
@dataclasses.dataclass(frozen=True)
class SceneObject:
  shape: str  # sphere | box | cylinder
  size: tuple[float, float, float]  # half extents (x, y, z) in metres; sphere: (r, r, r); cylinder: (r, h/2, r)
  color: str
  motion: str
  start: tuple[float, float]  # (x, z) on the ground, metres
  velocity: tuple[float, float]  # linear: m/s in (x, z); circular: (radius m, angular speed rad/s)
  bounce: float  # bouncing height, metres
  spin: float  # yaw rate, rad/s
  texture_seed: int

  def pose(self, time: float) -> tuple[np.ndarray, np.ndarray]:
    """(R [3, 3] object-to-world, centre [3]) at `time` seconds."""
    x, z = self.start
    y = -self.size[1]
    if self.motion == "linear":
      x, z = x + self.velocity[0] * time, z + self.velocity[1] * time
    elif self.motion == "circular":
      radius, omega = self.velocity
      x, z = x + radius * np.sin(omega * time), z + radius * (1 - np.cos(omega * time))
    elif self.motion == "bouncing":
      y = y - self.bounce * abs(np.sin(2.5 * time))
    yaw = self.spin * time
    return se3.so3_exp(np.array([0.0, yaw, 0.0])), np.array([x, y, z])

  def describe(self) -> str:
    what = {"static": "standing still", "linear": "sliding across the floor", "circular": "moving in a circle",
            "bouncing": "bouncing", "spinning": "spinning in place"}[self.motion]
    article = "an" if self.color[0] in "aeiou" else "a"
    return f"{article} {self.color} {self.shape} {what}"


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: tuple[SceneObject, ...]
  ground_color: str
  wall_color: str
  texture_seed: int

  def caption(self) -> str:
    things = [o.describe() for o in self.objects]
    listed = things[0] if len(things) == 1 else ", ".join(things[:-1]) + " and " + things[-1]
    return f"{listed}, on a {self.ground_color} tiled floor in a room with {self.wall_color} walls"


def random_scene(rng: np.random.Generator, num_objects: int | None = None) -> Scene:
  """Draws a scene: 2-4 objects in front of the start camera, at least one of them moving."""
  n = int(rng.integers(2, 5)) if num_objects is None else num_objects
  names = list(COLORS)
  objects = []
  for k in range(n):
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    r = float(rng.uniform(0.25, 0.5))
    size = {"sphere": (r, r, r), "box": (r, float(rng.uniform(0.2, 0.5)), float(rng.uniform(0.25, 0.5))),
            "cylinder": (r, float(rng.uniform(0.3, 0.6)), r)}[shape]
    motion = MOTIONS[int(rng.integers(1, len(MOTIONS)))] if k == 0 else MOTIONS[int(rng.integers(len(MOTIONS)))]
    speed = float(rng.uniform(0.3, 0.8))
    heading = float(rng.uniform(0, 2 * np.pi))
    velocity = ((speed * np.cos(heading), speed * np.sin(heading)) if motion == "linear" else
                (float(rng.uniform(0.3, 0.7)), float(rng.choice([-1, 1]) * rng.uniform(1.0, 2.0)))
                if motion == "circular" else (0.0, 0.0))
    objects.append(SceneObject(
        shape=shape, size=size, color=names[int(rng.integers(len(names)))], motion=motion,
        start=(float(rng.uniform(-1.6, 1.6)), float(rng.uniform(2.5, 5.0))), velocity=velocity,
        bounce=float(rng.uniform(0.3, 0.8)) if motion == "bouncing" else 0.0,
        spin=float(rng.uniform(0.8, 2.0)) if motion == "spinning" else float(rng.uniform(-0.3, 0.3)),
        texture_seed=int(rng.integers(1 << 30))))
  return Scene(objects=tuple(objects), ground_color=str(rng.choice(["grey", "sand", "slate"])),
               wall_color=str(rng.choice(["beige", "pale blue", "pale green"])), texture_seed=int(rng.integers(1 << 30)))


# --------------------------------------------------------------------------------------------------- cameras
def start_pose(height: float = 1.4, tilt_deg: float = 12.0) -> np.ndarray:
  """c2w of every camera's first frame: `height` metres above the ground at the room's origin, looking along +z
  and tilted down by `tilt_deg`."""
  c2w = np.eye(4)
  c2w[:3, :3] = se3.so3_exp(np.array([-np.radians(tilt_deg), 0.0, 0.0]))
  c2w[:3, 3] = [0.0, -height, 0.0]
  return c2w


def focal_for(height: int, width: int, fov_deg: float = 60.0) -> float:
  """Focal length in pixels for a horizontal field of view."""
  return 0.5 * width / np.tan(np.radians(fov_deg) / 2)


_MOVES = ("pan_left", "pan_right", "tilt_up", "tilt_down", "dolly_in", "dolly_out", "truck_left", "truck_right",
          "pedestal_up", "orbit_left", "orbit_right", "static")
_MAGNITUDE = {"pan": (10, 30), "tilt": (5, 12), "dolly": (0.4, 1.5), "truck": (0.3, 1.2), "pedestal": (0.2, 0.5),
              "orbit": (10, 30), "static": (0, 0)}


def random_trajectory_name(rng: np.random.Generator) -> str:
  """A random preset or composition of two presets, with magnitudes (e.g. "dolly_in:0.8+pan_left:14")."""
  parts = []
  for move in rng.choice(_MOVES, size=int(rng.integers(1, 3)), replace=False):
    lo, hi = _MAGNITUDE[move.split("_")[0]]
    parts.append(move if move == "static" else f"{move}:{rng.uniform(lo, hi):.2f}")
  return "+".join(parts)


# -------------------------------------------------------------------------------------------------- renderer
def _intersect_static(origins: np.ndarray, dirs: np.ndarray):
  """Nearest hit of the room (ground, 4 walls) per ray: (t [R], surface id [R]); inf / SKY where none."""
  best_t = np.full(dirs.shape[0], np.inf)
  best_id = np.full(dirs.shape[0], SKY)
  planes = [(1, 0.0, GROUND), (0, -ROOM_HALF_WIDTH, WALL_LEFT), (0, ROOM_HALF_WIDTH, WALL_RIGHT),
            (2, ROOM_Z[1], WALL_BACK), (2, ROOM_Z[0], WALL_FRONT)]
  with np.errstate(divide="ignore", invalid="ignore"):
    for axis, value, sid in planes:
      t = (value - origins[:, axis]) / dirs[:, axis]
      p = origins + t[:, None] * dirs
      ok = (t > 1e-6) & (p[:, 1] <= 1e-9) & (p[:, 1] >= -WALL_HEIGHT - (1e9 if axis == 1 else 0))
      ok &= (np.abs(p[:, 0]) <= ROOM_HALF_WIDTH + 1e-9) & (p[:, 2] >= ROOM_Z[0] - 1e-9) & (p[:, 2] <= ROOM_Z[1] + 1e-9)
      closer = ok & (t < best_t)
      best_t = np.where(closer, t, best_t)
      best_id = np.where(closer, sid, best_id)
  return best_t, best_id


def _intersect_object(obj: SceneObject, o: np.ndarray, d: np.ndarray):
  """Ray-object hit in the object's frame: (t [R], inf where none; local normal [R, 3])."""
  ex, ey, ez = obj.size
  t = np.full(d.shape[0], np.inf)
  normal = np.zeros_like(d)
  with np.errstate(divide="ignore", invalid="ignore"):
    if obj.shape == "sphere":
      b = np.einsum("ri,ri->r", o, d)
      c = np.einsum("ri,ri->r", o, o) - ex**2
      disc = b * b - c
      hit = disc >= 0
      t0 = -b - np.sqrt(np.where(hit, disc, 0))
      t = np.where(hit & (t0 > 1e-6), t0, np.inf)
      normal = (o + np.where(np.isfinite(t), t, 0)[:, None] * d) / ex
    elif obj.shape == "box":
      e = np.array([ex, ey, ez])
      t1, t2 = (-e - o) / d, (e - o) / d
      tmin, tmax = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
      t = np.where((tmax >= tmin) & (tmin > 1e-6), tmin, np.inf)
      p = (o + np.where(np.isfinite(t), t, 0)[:, None] * d) / e
      axis = np.argmax(np.abs(p), axis=-1)
      normal = np.eye(3)[axis] * np.sign(np.take_along_axis(p, axis[:, None], -1))
    elif obj.shape == "cylinder":
      a = d[:, 0] ** 2 + d[:, 2] ** 2
      b = o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2]
      c = o[:, 0] ** 2 + o[:, 2] ** 2 - ex**2
      disc = b * b - a * c
      ts = (-b - np.sqrt(np.where(disc >= 0, disc, 0))) / a
      y = o[:, 1] + ts * d[:, 1]
      side = (disc >= 0) & (ts > 1e-6) & (np.abs(y) <= ey)
      t = np.where(side, ts, np.inf)
      for cap in (-ey, ey):
        tc = (cap - o[:, 1]) / d[:, 1]
        pc = o + tc[:, None] * d
        capped = (tc > 1e-6) & (pc[:, 0] ** 2 + pc[:, 2] ** 2 <= ex**2) & (tc < t)
        t = np.where(capped, tc, t)
      p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
      on_cap = np.abs(np.abs(p[:, 1]) - ey) < 1e-6
      normal = np.where(on_cap[:, None], np.stack([0 * p[:, 0], np.sign(p[:, 1]), 0 * p[:, 0]], -1),
                        np.stack([p[:, 0], 0 * p[:, 0], p[:, 2]], -1) / ex)
  return t, normal


@dataclasses.dataclass
class Frame:
  rgb: np.ndarray  # float [H, W, 3] in [0, 1]
  depth: np.ndarray  # [H, W] camera z, metres; 0 on sky
  surface: np.ndarray  # int [H, W] surface id (SKY, room ids, FIRST_OBJECT + k)
  local: np.ndarray  # [H, W, 3] hit point in the surface's own frame (world for the room)


def surface_color(scene: Scene, surface: np.ndarray, local: np.ndarray, normal_world: np.ndarray) -> np.ndarray:
  """Albedo x (ambient + Lambert) of hits, `[R]` ids, `[R, 3]` local points and world normals -> `[R, 3]`."""
  rgb = np.zeros(local.shape)
  ground_base = {"grey": (0.55, 0.55, 0.55), "sand": (0.75, 0.65, 0.45), "slate": (0.4, 0.45, 0.5)}
  wall_base = {"beige": (0.85, 0.78, 0.65), "pale blue": (0.65, 0.75, 0.85), "pale green": (0.7, 0.82, 0.68)}
  room = (surface >= 0) & (surface < FIRST_OBJECT)
  if room.any():
    p = local[room]
    noise = value_noise(p, scene.texture_seed, frequency=1.5)
    is_ground = surface[room] == GROUND
    tiles = ((np.floor(p[:, 0] / 0.5) + np.floor(p[:, 2] / 0.5)) % 2)[:, None]
    base = np.where(is_ground[:, None], np.asarray(ground_base[scene.ground_color]) * (0.75 + 0.25 * tiles),
                    np.asarray(wall_base[scene.wall_color]))
    rgb[room] = base * (0.35 + 0.9 * noise[:, None])
  for k, obj in enumerate(scene.objects):
    mask = surface == FIRST_OBJECT + k
    if mask.any():
      noise = value_noise(local[mask], obj.texture_seed, frequency=3.0)
      stripes = 0.5 + 0.5 * np.sign(np.sin(local[mask][:, 1] * 18.0))
      rgb[mask] = np.asarray(COLORS[obj.color]) * (0.35 + 0.8 * noise[:, None]) * (0.8 + 0.2 * stripes[:, None])
  shade = 0.55 + 0.45 * np.clip(normal_world @ _LIGHT, 0, 1)
  return np.clip(rgb * shade[:, None], 0, 1)


def render_frame(scene: Scene, time: float, K: np.ndarray, w2c: np.ndarray, height: int, width: int) -> Frame:
  """Ray-casts one frame (one ray through each pixel centre)."""
  c2w = se3.invert(w2c)
  v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
  pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], -1)
  d_cam = pix @ np.linalg.inv(K).T
  dirs = d_cam @ c2w[:3, :3].T
  dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
  origins = np.broadcast_to(c2w[:3, 3], dirs.shape)
  t, surface = _intersect_static(origins, dirs)
  hit_world = origins + np.where(np.isfinite(t), t, 0)[:, None] * dirs
  local = hit_world.copy()
  normals = np.zeros_like(dirs)
  room_normals = {GROUND: (0, -1, 0), WALL_LEFT: (1, 0, 0), WALL_RIGHT: (-1, 0, 0), WALL_BACK: (0, 0, -1),
                  WALL_FRONT: (0, 0, 1)}
  for sid, n in room_normals.items():
    normals[surface == sid] = n
  for k, obj in enumerate(scene.objects):
    R, centre = obj.pose(time)
    o_local = (origins - centre) @ R  # R^T (o - c)
    d_local = dirs @ R
    t_obj, n_local = _intersect_object(obj, o_local, d_local)
    closer = t_obj < t
    t = np.where(closer, t_obj, t)
    surface = np.where(closer, FIRST_OBJECT + k, surface)
    local = np.where(closer[:, None], o_local + np.where(np.isfinite(t_obj), t_obj, 0)[:, None] * d_local, local)
    normals = np.where(closer[:, None], n_local @ R.T, normals)
  rgb = surface_color(scene, surface, local, normals)
  sky = surface == SKY
  rgb[sky] = np.array([0.55, 0.7, 0.95]) * (0.8 + 0.2 * (v.ravel()[sky] / height))[:, None]
  depth = np.where(sky, 0.0, t * (dirs @ c2w[:3, 2]))  # camera z = t * (d . optical axis)
  return Frame(rgb=rgb.reshape(height, width, 3), depth=depth.reshape(height, width),
               surface=surface.reshape(height, width), local=local.reshape(height, width, 3))


# ---------------------------------------------------------------------------------------------------- clips
@dataclasses.dataclass
class SyntheticClip:
  """One camera of a rendered scene."""

  frames: np.ndarray  # uint8 [T, H, W, 3]
  depth: np.ndarray  # float32 [T, H, W], metres (0 = sky)
  cameras: g.Cameras  # K [T, 3, 3], w2c [T, 4, 4] (world frame of the scene, metres)
  tracks_xyz: np.ndarray  # float32 [N, T, 3] world, metres
  tracks_visible: np.ndarray  # bool [N, T]
  caption: str
  trajectory: str  # the preset composition the camera followed
  fps: float


def track_points(scene: Scene, surface: np.ndarray, local: np.ndarray, times: Sequence[float]) -> np.ndarray:
  """World positions `[N, T, 3]` over `times` of surface points given by their id `[N]` and local coords `[N, 3]`."""
  out = np.repeat(local[:, None, :], len(times), axis=1).astype(np.float64)
  for k, obj in enumerate(scene.objects):
    mask = surface == FIRST_OBJECT + k
    if mask.any():
      for i, time in enumerate(times):
        R, centre = obj.pose(time)
        out[mask, i] = local[mask] @ R.T + centre
  return out


def visibility(points: np.ndarray, cameras: g.Cameras, depth: np.ndarray, rel_tol: float = 0.03) -> np.ndarray:
  """Depth-test visibility `[N, T]` of world points `[N, T, 3]` against rendered depth maps `[T, H, W]`."""
  T, H, W = depth.shape
  cam = np.einsum("tij,ntj->nti", cameras.w2c[:, :3, :3], points) + cameras.w2c[None, :, :3, 3]
  pix = np.einsum("tij,ntj->nti", cameras.K, cam)
  z = cam[..., 2]
  with np.errstate(divide="ignore", invalid="ignore"):
    u, v = pix[..., 0] / z, pix[..., 1] / z
  inside = (z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
  ui = np.clip(np.floor(np.nan_to_num(u)).astype(int), 0, W - 1)
  vi = np.clip(np.floor(np.nan_to_num(v)).astype(int), 0, H - 1)
  rendered = depth[np.arange(T)[None, :], vi, ui]
  return inside & (rendered > 0) & (np.abs(rendered - z) <= rel_tol * z)


def render_scene(seed: int, *, num_frames: int = 17, height: int = 64, width: int = 64, num_cameras: int = 1,
                 num_tracks: int = 256, fps: float = 8.0, trajectories: Sequence[str] | None = None
                 ) -> list[SyntheticClip]:
  """Renders one scene from `num_cameras` synchronised cameras sharing the first pose.

  Args:
    seed: scene seed; the same seed gives the same scene, trajectories and pixels.
    num_frames, height, width: clip size.
    num_cameras: synchronised cameras (camera 0 and the others start at the same pose; Track2View/ReCamMaster pairs).
    num_tracks: ground-truth point tracks per camera, sampled on the first frame's visible surfaces.
    fps: frame rate (object motion is in metres per second).
    trajectories: preset names per camera (default: random compositions; the first camera never stays static).

  Returns:
    One `SyntheticClip` per camera.
  """
  rng = np.random.default_rng(seed)
  scene = random_scene(rng)
  times = np.arange(num_frames) / fps
  K = g.intrinsics(focal_for(height, width), focal_for(height, width), width / 2, height / 2)
  start = start_pose()
  names = list(trajectories) if trajectories is not None else []
  while len(names) < num_cameras:
    name = random_trajectory_name(rng)
    if not names and name == "static":
      continue
    names.append(name)
  clips = []
  for name in names[:num_cameras]:
    rel = g.preset(name, num_frames, height=height, width=width, K=K, radius=3.5)
    c2w = start[None] @ rel.c2w
    cams = g.Cameras(K=rel.K, w2c=se3.invert(c2w), height=height, width=width)
    rendered = [render_frame(scene, time, cams.K[i], cams.w2c[i], height, width) for i, time in enumerate(times)]
    depth = np.stack([f.depth for f in rendered])
    first = rendered[0]
    candidates = np.flatnonzero(first.surface.ravel() != SKY)
    pick = rng.choice(candidates, size=min(num_tracks, candidates.size), replace=False)
    xyz = track_points(scene, first.surface.ravel()[pick], first.local.reshape(-1, 3)[pick], times)
    frames = np.stack([np.round(f.rgb * 255) for f in rendered]).astype(np.uint8)
    clips.append(SyntheticClip(frames=frames, depth=depth.astype(np.float32), cameras=cams,
                               tracks_xyz=xyz.astype(np.float32), tracks_visible=visibility(xyz, cams, depth),
                               caption=scene.caption(), trajectory=name, fps=fps))
  return clips


# ------------------------------------------------------------------------------------------ records and CLI
def scene_records(seed: int, **render_kwargs):
  """Renders scene `seed` and returns one `ClipRecord` per camera (grouped by `scene_id`)."""
  from camjax.data.records import ClipRecord

  records = []
  for k, clip in enumerate(render_scene(seed, **render_kwargs)):
    records.append(ClipRecord(
        clip_id=f"synthetic-{seed:06d}-cam{k}", source="synthetic", scene_id=f"synthetic-{seed:06d}", camera_index=k,
        frames=clip.frames, K=clip.cameras.K, w2c=clip.cameras.w2c, height=clip.cameras.height,
        width=clip.cameras.width, fps=clip.fps, caption=clip.caption, has_camera=True, depth=clip.depth,
        tracks_xyz=clip.tracks_xyz, tracks_visible=clip.tracks_visible, metric_scale=1.0))
  return records


class SyntheticSource:
  """Random-access source rendering records on the fly (no files): index `i` is camera `i % num_cameras` of scene
  `seed + i // num_cameras`. Deterministic, so Grain checkpoints of an iterator over it resume exactly."""

  def __init__(self, num_scenes: int, *, seed: int = 0, num_cameras: int = 1, **render_kwargs):
    self.num_scenes, self.seed, self.num_cameras = num_scenes, seed, num_cameras
    self.render_kwargs = render_kwargs
    self._cache: tuple[int, list] | None = None

  def __len__(self) -> int:
    return self.num_scenes * self.num_cameras

  def scene_index(self) -> list[tuple[str, int]]:
    """`(scene_id, camera_index)` of every index, without rendering (used by `pipeline.PairedSource`)."""
    return [(f"synthetic-{self.seed + i // self.num_cameras:06d}", i % self.num_cameras) for i in range(len(self))]

  def __getitem__(self, index: int):
    scene = self.seed + index // self.num_cameras
    if self._cache is None or self._cache[0] != scene:
      self._cache = (scene, scene_records(scene, num_cameras=self.num_cameras, **self.render_kwargs))
    return self._cache[1][index % self.num_cameras]


RENDERER_VERSION = 1  # bump when the renderer's pixels, cameras or tracks change: datasets record it


def _argument_problems(num_scenes: int, resolution: int, frames: int, cameras: int, tracks: int,
                       fps: float) -> list[tuple[str, str]]:
  """`(flag, problem)` for every argument of `write_dataset` out of range (empty when all are valid)."""
  out = []
  for flag, value, lowest in (("num_scenes", num_scenes, 1), ("resolution", resolution, 1), ("frames", frames, 1),
                              ("cameras", cameras, 1), ("tracks", tracks, 0)):
    if int(value) != value or value < lowest:
      out.append((flag, f"must be an integer >= {lowest}, got {value}"))
  if not np.isfinite(fps) or fps <= 0:
    out.append(("fps", f"must be positive (frames per second), got {fps}"))
  return out


def dataset_provenance(num_scenes: int, *, seed: int = 0, resolution: int = 64, frames: int = 17, cameras: int = 1,
                       tracks: int = 256, fps: float = 8.0) -> dict:
  """The provenance of a procedural dataset (`shards.make_provenance`): every argument of `write_dataset` that
  changes the records, and the renderer version."""
  from camjax.data.shards import make_provenance

  return make_provenance("camjax.data.synthetic", dict(
      num_scenes=num_scenes, seed=seed, resolution=resolution, frames=frames, cameras=cameras, tracks=tracks,
      fps=float(fps), renderer_version=RENDERER_VERSION))


def build_dataset(out_dir, num_scenes: int, *, seed: int = 0, resolution: int = 64, frames: int = 17,
                  cameras: int = 1, tracks: int = 256, fps: float = 8.0, overwrite: bool = False,
                  progress: bool = True):
  """Renders `num_scenes` scenes into a TFDS/ArrayRecord dataset with its provenance, or reuses the dataset at
  `out_dir` when it was rendered with the same arguments (`shards.build_dataset`).

  Returns:
    `(versioned dataset folder, reused)`.

  Raises:
    DataError: an argument out of range (names it), or `out_dir` holds files that are not a camjax dataset.
    StaleDatasetError: `out_dir` holds a dataset rendered with other arguments and `overwrite` is False.
  """
  from tqdm import tqdm

  from camjax.data.records import DataError
  from camjax.data.shards import build_dataset as build

  problems = _argument_problems(num_scenes, resolution, frames, cameras, tracks, fps)
  if problems:
    raise DataError("; ".join(f"{flag} {problem}" for flag, problem in problems))

  def records():
    for scene in tqdm(range(seed, seed + num_scenes), desc="rendering scenes", unit="scene", disable=not progress):
      yield from scene_records(scene, num_frames=frames, height=resolution, width=resolution, num_cameras=cameras,
                               num_tracks=tracks, fps=fps)

  provenance = dataset_provenance(num_scenes, seed=seed, resolution=resolution, frames=frames, cameras=cameras,
                                  tracks=tracks, fps=fps)
  return build(records, out_dir, provenance, overwrite=overwrite, description=(
      f"camjax procedural scenes: {num_scenes} scenes x {cameras} cameras, {frames} frames at "
      f"{resolution}x{resolution}, seed {seed}"))


def write_dataset(out_dir, num_scenes: int, *, seed: int = 0, resolution: int = 64, frames: int = 17,
                  cameras: int = 1, tracks: int = 256, fps: float = 8.0, progress: bool = True,
                  overwrite: bool = False):
  """`build_dataset` returning only the dataset folder (reused when rendered with the same arguments).

  Raises:
    As `build_dataset`.
  """
  return build_dataset(out_dir, num_scenes, seed=seed, resolution=resolution, frames=frames, cameras=cameras,
                       tracks=tracks, fps=fps, overwrite=overwrite, progress=progress)[0]


def main(argv=None) -> None:
  """The CLI (see the module docstring). Exits with status 2 and the flag named on an out-of-range argument, with
  status 1 and what differs when `--out` holds a dataset rendered with other arguments (without `--overwrite`)."""
  import argparse

  from camjax.data.records import DataError

  parser = argparse.ArgumentParser(prog="python -m camjax.data.synthetic", description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="dataset root folder (TFDS data_dir)")
  parser.add_argument("--num_scenes", type=int, default=64)
  parser.add_argument("--resolution", type=int, default=64, help="square frame size in pixels")
  parser.add_argument("--frames", type=int, default=17)
  parser.add_argument("--cameras", type=int, default=1, help="synchronised cameras per scene")
  parser.add_argument("--tracks", type=int, default=256, help="ground-truth point tracks per clip")
  parser.add_argument("--fps", type=float, default=8.0)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--overwrite", action="store_true",
                      help="replace a dataset at --out rendered with other arguments (atomically)")
  args = parser.parse_args(argv)
  problems = _argument_problems(args.num_scenes, args.resolution, args.frames, args.cameras, args.tracks, args.fps)
  if problems:
    parser.error("; ".join(f"argument --{flag}: {problem}" for flag, problem in problems))
  try:
    path, reused = build_dataset(args.out, args.num_scenes, seed=args.seed, resolution=args.resolution,
                                 frames=args.frames, cameras=args.cameras, tracks=args.tracks, fps=args.fps,
                                 overwrite=args.overwrite)
  except DataError as e:
    parser.exit(1, f"{parser.prog}: error: {e}\n")
  clips = args.num_scenes * args.cameras
  print(f"reusing {path}: {clips} clips rendered with the same arguments" if reused else
        f"wrote {clips} clips to {path}")


if __name__ == "__main__":
  main()
