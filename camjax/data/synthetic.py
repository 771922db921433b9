"""Procedural dynamic 4D scenes: the embedded default dataset (no download, CPU-fast, exact ground truth).

A scene is a room (textured ground and walls, sky above the walls) holding a few textured objects (boxes, spheres,
cylinders), some moving (linear, circular, bouncing, spinning). One or more cameras share their first pose and follow
geometry presets or random compositions of them, in metres. A NumPy ray caster renders, per camera and frame, RGB,
metric depth (camera z, metres; 0 where the ray sees the sky), and the surface hit; ground-truth 3D point tracks
(world xyz and depth-tested visibility) follow points sampled on the first frame. It casts a few frames' rays per
NumPy batch and intersects each object only with the rays through its bounding sphere; every frame keeps the bits of
a one-frame render (`render_frames`).

World axes follow OpenCV: y points DOWN, the ground is the plane y = 0 (objects stand at y < 0).

    python -m camjax.data.synthetic --out DIR --num_scenes 64 --resolution 64 --frames 17 --cameras 2

writes a TFDS/ArrayRecord dataset (see camjax.data.records) that camjax.data.pipeline reads, with a provenance file
(its arguments): a re-run with the same arguments reuses it, one with other arguments refuses unless given
`--overwrite` (which replaces the dataset atomically). Scenes render in `--workers` processes (default: one per idle
core for 64 scenes or more; `render_records`); the records do not depend on it.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
from typing import Iterator, Sequence

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
_HASH_PRIMES = (73856093, 19349663, 83492791)  # per lattice axis (the spatial hash of Teschner et al. 2003)


def _hash3(ix, iy, iz, seed):
  """Deterministic pseudo-random floats in [0, 1) per integer lattice point."""
  h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (iz.astype(np.int64) * 83492791)
  h = (h ^ (seed * 2654435761)) & 0xFFFFFFFF
  h = (h ^ (h >> 13)) * 1274126177 & 0xFFFFFFFF
  h = h ^ (h >> 16)
  return (h & 0xFFFF).astype(np.float64) / 65536.0


def _mix(h: np.ndarray) -> np.ndarray:
  """The final mixing of `_hash3` on uint32 keys (in place), as floats in [0, 1).

  Every step of `_hash3` masks to 32 bits and its products fit in int64, so wrapping uint32 arithmetic gives the same
  bits at half the memory traffic.
  """
  h ^= h >> np.uint32(13)
  h *= np.uint32(1274126177)
  h ^= h >> np.uint32(16)
  h &= np.uint32(0xFFFF)
  out = h.astype(np.float64)
  out *= 1.0 / 65536.0  # a power of two: the same bits as dividing
  return out


def value_noise(points: np.ndarray, seed: int, frequency: float = 4.0, octaves: int = 4) -> np.ndarray:
  """Fractal 3D value noise in [0, 1] at `points [..., 3]` (metres): smooth blobs from coarse to fine.

  Trilinear interpolation (smoothstep weights) of `_hash3` lattice values, octaves halving in amplitude. The lattice
  keys are built per axis once per octave (`(i + 1) * P = i * P + P` modulo 2^32) and combined with XOR per corner;
  the floating-point operations and their order are those of the per-corner formula, so the values are bit-identical
  to it.
  """
  points = np.asarray(points)
  shape = points.shape[:-1]
  scaled = [np.ascontiguousarray(points[..., a]).reshape(-1) * frequency for a in range(3)]
  total, amplitude, norm = 0.0, 1.0, 0.0
  for octave in range(octaves):
    weights, keys = [], []
    for a, prime in enumerate(_HASH_PRIMES):
      p = scaled[a] * (2.0**octave)
      i = np.floor(p)
      f = p - i
      f = f * f * (3 - 2 * f)  # smoothstep
      key = i.astype(np.int64).astype(np.uint32)
      key *= np.uint32(prime)
      keys.append((key, key + np.uint32(prime)))
      weights.append((1 - f, f))
    salt = np.uint32(((seed + octave) * 2654435761) & 0xFFFFFFFF)
    keys_z = [k ^ salt for k in keys[2]]
    acc = None
    for dx in (0, 1):
      for dy in (0, 1):
        w_xy = weights[0][dx] * weights[1][dy]
        k_xy = keys[0][dx] ^ keys[1][dy]
        for dz in (0, 1):
          term = w_xy * weights[2][dz]
          term *= _mix(k_xy ^ keys_z[dz])
          acc = term if acc is None else np.add(acc, term, out=acc)
    total = total + amplitude * acc
    norm += amplitude
    amplitude *= 0.5
  return (total / norm).reshape(shape)


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
    R, centre = self.poses(np.array([time], dtype=np.float64))
    return R[0], centre[0]

  def poses(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`pose` at every one of `times [T]` seconds: (R [T, 3, 3] object-to-world, centre [T, 3]), one batched
    Rodrigues call (the same bits as `pose` per time)."""
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    x, z = np.full(times.shape, self.start[0]), np.full(times.shape, self.start[1])
    y = np.full(times.shape, -self.size[1])
    if self.motion == "linear":
      x, z = self.start[0] + self.velocity[0] * times, self.start[1] + self.velocity[1] * times
    elif self.motion == "circular":
      radius, omega = self.velocity
      x = self.start[0] + radius * np.sin(omega * times)
      z = self.start[1] + radius * (1 - np.cos(omega * times))
    elif self.motion == "bouncing":
      y = -self.size[1] - self.bounce * np.abs(np.sin(2.5 * times))
    zero = np.zeros_like(times)
    R = se3.so3_exp(np.stack([zero, self.spin * times, zero], -1))
    return R, np.stack([x, y, z], -1)

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
  o, d = [origins[:, a] for a in range(3)], [np.ascontiguousarray(dirs[:, a]) for a in range(3)]
  planes = [(1, 0.0, GROUND), (0, -ROOM_HALF_WIDTH, WALL_LEFT), (0, ROOM_HALF_WIDTH, WALL_RIGHT),
            (2, ROOM_Z[1], WALL_BACK), (2, ROOM_Z[0], WALL_FRONT)]
  with np.errstate(divide="ignore", invalid="ignore"):
    for axis, value, sid in planes:
      t = (value - o[axis]) / d[axis]
      x, y, z = (o[a] + t * d[a] for a in range(3))  # the hit point, per axis
      ok = (t > 1e-6) & (y <= 1e-9) & (y >= -WALL_HEIGHT - (1e9 if axis == 1 else 0))
      ok &= (np.abs(x) <= ROOM_HALF_WIDTH + 1e-9) & (z >= ROOM_Z[0] - 1e-9) & (z <= ROOM_Z[1] + 1e-9)
      ok &= t < best_t
      np.copyto(best_t, t, where=ok)
      best_id[ok] = sid
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
  """One rendered frame (`render_frame`), or `T` frames with a leading frame axis (`render_frames`)."""

  rgb: np.ndarray  # float [H, W, 3] in [0, 1]
  depth: np.ndarray  # [H, W] camera z, metres; 0 on sky
  surface: np.ndarray  # int [H, W] surface id (SKY, room ids, FIRST_OBJECT + k)
  local: np.ndarray  # [H, W, 3] hit point in the surface's own frame (world for the room)


def surface_color(scene: Scene, surface: np.ndarray, local: np.ndarray, normal_world: np.ndarray,
                  rows: int | None = None) -> np.ndarray:
  """Albedo x (ambient + Lambert) of hits, `[R]` ids, `[R, 3]` local points and world normals -> `[R, 3]`.

  `rows`: the rays per frame when `R` spans several frames (the Lambert product then has each frame's bits).
  """
  rgb = np.zeros(local.shape)
  ground = np.asarray({"grey": (0.55, 0.55, 0.55), "sand": (0.75, 0.65, 0.45), "slate": (0.4, 0.45, 0.5)}[
      scene.ground_color])
  wall = np.asarray({"beige": (0.85, 0.78, 0.65), "pale blue": (0.65, 0.75, 0.85), "pale green": (0.7, 0.82, 0.68)}[
      scene.wall_color])
  room = np.flatnonzero((surface >= 0) & (surface < FIRST_OBJECT))
  if room.size:
    p = local[room]
    noise = value_noise(p, scene.texture_seed, frequency=1.5)
    tiles = (np.floor(p[:, 0] / 0.5) + np.floor(p[:, 2] / 0.5)) % 2  # 0 or 1: alternate tiles 25% darker
    palette = np.stack([wall, ground * (0.75 + 0.25 * 0.0), ground * (0.75 + 0.25 * 1.0)])
    base = palette[np.where(surface[room] == GROUND, 1 + tiles.astype(np.int64), 0)]
    rgb[room] = base * (0.35 + 0.9 * noise[:, None])
  for k, obj in enumerate(scene.objects):
    mask = np.flatnonzero(surface == FIRST_OBJECT + k)
    if mask.size:
      p = local[mask]
      noise = value_noise(p, obj.texture_seed, frequency=3.0)
      stripes = 0.5 + 0.5 * np.sign(np.sin(p[:, 1] * 18.0))
      rgb[mask] = np.asarray(COLORS[obj.color]) * (0.35 + 0.8 * noise[:, None]) * (0.8 + 0.2 * stripes[:, None])
  rows = len(normal_world) if rows is None else rows
  lambert = _matmul(normal_world, _LIGHT, 1) if rows == 1 else _dot_rows(normal_world, _LIGHT)
  shade = 0.55 + 0.45 * np.clip(lambert, 0, 1)
  rgb *= shade[:, None]
  return np.clip(rgb, 0, 1, out=rgb)


def render_frame(scene: Scene, time: float, K: np.ndarray, w2c: np.ndarray, height: int, width: int) -> Frame:
  """Ray-casts one frame (one ray through each pixel centre): `render_frames` with one time."""
  frames = render_frames(scene, np.array([time], dtype=np.float64), np.asarray(K)[None], np.asarray(w2c)[None],
                         height, width)
  return Frame(rgb=frames.rgb[0], depth=frames.depth[0], surface=frames.surface[0], local=frames.local[0])


_MAX_RAYS = 1 << 15  # rays cast together (8 frames of 64x64): more costs page faults, fewer costs call overhead


def render_frames(scene: Scene, times: np.ndarray, K: np.ndarray, w2c: np.ndarray, height: int, width: int,
                  poses: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> Frame:
  """Ray-casts `T` frames of `scene` (one ray through each pixel centre), a few frames per NumPy batch.

  Every frame gets exactly the bits a one-frame render gives it: the arithmetic is per pixel, and the 3x3 products
  run per frame through BLAS (whose per-row result does not depend on the number of rows, except for numpy's 1-row
  path, which `_matmul` avoids where a frame has more than one pixel).

  Args:
    scene: the scene.
    times: `[T]` seconds.
    K: `[T, 3, 3]` intrinsics, pixels.
    w2c: `[T, 4, 4]` world-to-camera (OpenCV), metres.
    height, width: image size in pixels.
    poses: `scene.objects[k].poses(times)` per object, if already computed.

  Returns:
    A `Frame` whose arrays have a leading frame axis: rgb `[T, H, W, 3]`, depth `[T, H, W]`, surface `[T, H, W]`,
    local `[T, H, W, 3]`.
  """
  times = np.asarray(times, dtype=np.float64).reshape(-1)
  if poses is None:
    poses = [obj.poses(times) for obj in scene.objects]
  per_batch = max(1, _MAX_RAYS // (height * width))
  rays: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
  parts = []
  for s in range(0, len(times), per_batch):
    frames = slice(s, s + per_batch)
    parts.append(_render_batch(scene, K[frames], w2c[frames], [(R[frames], c[frames]) for R, c in poses], height,
                               width, rays))
  T = len(times)
  return Frame(rgb=np.concatenate([p[0] for p in parts]).reshape(T, height, width, 3),
               depth=np.concatenate([p[1] for p in parts]).reshape(T, height, width),
               surface=np.concatenate([p[2] for p in parts]).reshape(T, height, width),
               local=np.concatenate([p[3] for p in parts]).reshape(T, height, width, 3))


def _matmul(a: np.ndarray, b: np.ndarray, rows: int) -> np.ndarray:
  """`a [M, 3] @ b` with the bits numpy gives the same rows inside an `rows`-row product: numpy's product of a
  one-row matrix takes another path than BLAS' many-row one (its last bit can differ), so a one-row `a` is padded
  when `rows > 1`, and a many-row `a` is split into rows when `rows == 1`."""
  if len(a) == 1 and rows > 1:
    return (np.concatenate([a, a]) @ b)[:1]
  if len(a) > 1 and rows == 1:
    return np.concatenate([a[i:i + 1] @ b for i in range(len(a))])
  return a @ b


_GEMV_ROWS = 2048  # OpenBLAS runs a matrix-vector product over 2304 * 4 entries on every core: slower for these sizes


def _dot_rows(a: np.ndarray, v: np.ndarray) -> np.ndarray:
  """`a [M, 3] @ v [3]` in single-threaded slices (a row's bits do not depend on the slicing: slices of one row are
  padded, and `a` of one row keeps numpy's one-row path)."""
  if len(a) <= _GEMV_ROWS:
    return a @ v
  out = np.empty(len(a))
  for s in range(0, len(a), _GEMV_ROWS):
    out[s:s + _GEMV_ROWS] = _matmul(a[s:s + _GEMV_ROWS], v, 2)
  return out


def _pixel_rays(K: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Camera-frame rays through the pixel centres `[H*W, 3]` (z = 1) and each pixel's row centre `[H*W]`."""
  v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
  pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], -1)
  return pix @ np.linalg.inv(K).T, v.ravel()


_ROOM_NORMALS = np.array([(0, 0, 0), (0, -1, 0), (1, 0, 0), (-1, 0, 0), (0, 0, -1), (0, 0, 1)], dtype=np.float64)
# ^ world normals of SKY, GROUND, WALL_LEFT, WALL_RIGHT, WALL_BACK, WALL_FRONT (index: surface id + 1)


def _render_batch(scene: Scene, K: np.ndarray, w2c: np.ndarray, poses, height: int, width: int, rays: dict):
  """`render_frames` of a few frames: flat (rgb [T*H*W, 3], depth, surface, local [T*H*W, 3])."""
  T, HW = len(K), height * width
  c2w = [se3.invert(w) for w in w2c]
  dirs, origins, forward = np.empty((T * HW, 3)), np.empty((T * HW, 3)), np.empty(T * HW)
  for i in range(T):
    key = K[i].tobytes()
    if key not in rays:
      rays[key] = _pixel_rays(K[i], height, width)
    frame = slice(i * HW, (i + 1) * HW)
    dirs[frame] = rays[key][0] @ c2w[i][:3, :3].T
    origins[frame] = c2w[i][:3, 3]
  dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
  for i in range(T):
    frame = slice(i * HW, (i + 1) * HW)
    forward[frame] = _dot_rows(dirs[frame], c2w[i][:3, 2])  # the optical axis: camera z = t * (d . axis)
  t, surface = _intersect_static(origins, dirs)
  local = origins + np.where(np.isfinite(t), t, 0)[:, None] * dirs
  normals = _ROOM_NORMALS[surface + 1]  # SKY (-1) gets 0
  for k, obj in enumerate(scene.objects):
    _place_object(k, obj, poses[k], c2w, dirs, HW, t, surface, local, normals)
  rgb = surface_color(scene, surface, local, normals, rows=HW)
  sky = surface == SKY
  v = np.tile(rays[K[0].tobytes()][1], T)
  rgb[sky] = np.array([0.55, 0.7, 0.95]) * (0.8 + 0.2 * (v[sky] / height))[:, None]
  depth = np.where(sky, 0.0, t * forward)
  return rgb, depth, surface, local


def _place_object(k: int, obj: SceneObject, pose, c2w, dirs, HW: int, t, surface, local, normals) -> None:
  """Intersects object `k` with the rays of a batch of frames (in place: nearest `t`, `surface`, `local`,
  `normals`), only for rays that pass through its bounding sphere."""
  R, centre = pose
  T = len(R)
  eye = np.stack([c[:3, 3] for c in c2w])
  offset = eye - centre  # [T, 3] camera centre relative to the object
  reach = np.linalg.norm(obj.size) * 1.01 + 1e-3  # bounding-sphere radius, padded far beyond rounding
  b = np.stack([_dot_rows(d, o) for d, o in zip(dirs.reshape(T, HW, 3), offset)])  # d . (eye - centre) per ray
  c = (offset * offset).sum(-1)[:, None] - reach**2
  candidates = np.flatnonzero((b * b >= c) & ((b < 0) | (c <= 0)))  # the line meets the sphere, not behind
  if candidates.size == 0:
    return
  bounds = np.searchsorted(candidates, np.arange(T + 1) * HW)
  o_local, d_local = np.empty((candidates.size, 3)), np.empty((candidates.size, 3))
  for i in range(T):
    rows = slice(bounds[i], bounds[i + 1])
    if bounds[i] < bounds[i + 1]:
      o_local[rows] = _matmul(np.repeat(offset[i][None], min(HW, 2), 0), R[i], HW)[0]  # R^T (o - c)
      d_local[rows] = _matmul(dirs[candidates[rows]], R[i], HW)
  t_obj, n_local = _intersect_object(obj, o_local, d_local)
  closer = t_obj < t[candidates]
  hit = candidates[closer]
  t[hit] = t_obj[closer]
  surface[hit] = FIRST_OBJECT + k
  local[hit] = o_local[closer] + t_obj[closer][:, None] * d_local[closer]
  bounds = np.searchsorted(hit, np.arange(T + 1) * HW)
  n_local = n_local[closer]
  for i in range(T):
    if bounds[i] < bounds[i + 1]:
      normals[hit[bounds[i]:bounds[i + 1]]] = _matmul(n_local[bounds[i]:bounds[i + 1]], R[i].T, HW)


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


def track_points(scene: Scene, surface: np.ndarray, local: np.ndarray, times: Sequence[float],
                 poses: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
  """World positions `[N, T, 3]` over `times` of surface points given by their id `[N]` and local coords `[N, 3]`.

  `poses`: `scene.objects[k].poses(times)` per object, if already computed.
  """
  out = np.repeat(local[:, None, :], len(times), axis=1).astype(np.float64)
  for k, obj in enumerate(scene.objects):
    mask = surface == FIRST_OBJECT + k
    if mask.any():
      R, centre = obj.poses(times) if poses is None else poses[k]
      points = local[mask]
      for i in range(len(times)):
        out[mask, i] = points @ R[i].T + centre[i]
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
  poses = [obj.poses(times) for obj in scene.objects]
  clips = []
  for name in names[:num_cameras]:
    rel = g.preset(name, num_frames, height=height, width=width, K=K, radius=3.5)
    c2w = start[None] @ rel.c2w
    cams = g.Cameras(K=rel.K, w2c=se3.invert(c2w), height=height, width=width)
    rendered = render_frames(scene, times, cams.K, cams.w2c, height, width, poses=poses)
    depth = rendered.depth
    candidates = np.flatnonzero(rendered.surface[0].ravel() != SKY)
    pick = rng.choice(candidates, size=min(num_tracks, candidates.size), replace=False)
    xyz = track_points(scene, rendered.surface[0].ravel()[pick], rendered.local[0].reshape(-1, 3)[pick], times,
                       poses=poses)
    frames = np.round(rendered.rgb * 255).astype(np.uint8)
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


def default_workers(num_scenes: int) -> int:
  """Processes `render_records` uses when not told: one per idle core (cores minus the 1-minute load average, this
  process counted as idle; at most 8), and only with enough scenes (32 per process) to repay starting them (a couple
  of seconds each: they import camjax). On busy cores more processes only add start-up time."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
  idle = int(cores - os.getloadavg()[0] + 1) if hasattr(os, "getloadavg") else cores
  return max(1, min(cores, idle, 8, num_scenes // 32))


def render_records(seeds: Sequence[int], *, workers: int = 1, **render_kwargs) -> Iterator:
  """`scene_records` of every seed, in order, rendered by `workers` processes (`spawn`ed: safe beside JAX threads).

  The records are bit-identical whatever `workers` is (each scene depends only on its seed). At most `2 * workers`
  scenes are in flight; closing the iterator early cancels the scenes not yet started.

  Args:
    seeds: scene seeds.
    workers: rendering processes; 1 renders here, in this process.
    **render_kwargs: `render_scene` arguments.

  Yields:
    `ClipRecord`s, camera by camera, scene by scene.

  Raises:
    DataError: `workers` is not an integer >= 1.
  """
  from camjax.data.records import DataError

  if int(workers) != workers or workers < 1:
    raise DataError(f"render_records: workers must be an integer >= 1, got {workers}")
  if workers == 1:
    for seed in seeds:
      yield from scene_records(seed, **render_kwargs)
    return
  import concurrent.futures
  import multiprocessing

  todo = iter(seeds)
  with concurrent.futures.ProcessPoolExecutor(int(workers), mp_context=multiprocessing.get_context("spawn")) as pool:
    pending = collections.deque(pool.submit(scene_records, seed, **render_kwargs)
                                for seed in itertools.islice(todo, 2 * int(workers)))
    try:
      while pending:
        records = pending.popleft().result()
        for seed in itertools.islice(todo, 1):
          pending.append(pool.submit(scene_records, seed, **render_kwargs))
        yield from records
    finally:
      for future in pending:
        future.cancel()


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
                  progress: bool = True, workers: int | None = None):
  """Renders `num_scenes` scenes into a TFDS/ArrayRecord dataset with its provenance, or reuses the dataset at
  `out_dir` when it was rendered with the same arguments (`shards.build_dataset`).

  `workers`: rendering processes (`render_records`; default `default_workers(num_scenes)`). The records do not depend
  on it, so it is not part of the provenance.

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

  workers = default_workers(num_scenes) if workers is None else workers
  if int(workers) != workers or workers < 1:
    raise DataError(f"workers must be an integer >= 1, got {workers}")

  def records():
    rendered = render_records(range(seed, seed + num_scenes), workers=workers, num_frames=frames, height=resolution,
                              width=resolution, num_cameras=cameras, num_tracks=tracks, fps=fps)
    with tqdm(total=num_scenes * cameras, desc="rendering scenes", unit="clip", disable=not progress) as bar:
      for record in rendered:
        bar.update()
        yield record

  provenance = dataset_provenance(num_scenes, seed=seed, resolution=resolution, frames=frames, cameras=cameras,
                                  tracks=tracks, fps=fps)
  return build(records, out_dir, provenance, overwrite=overwrite, description=(
      f"camjax procedural scenes: {num_scenes} scenes x {cameras} cameras, {frames} frames at "
      f"{resolution}x{resolution}, seed {seed}"))


def write_dataset(out_dir, num_scenes: int, *, seed: int = 0, resolution: int = 64, frames: int = 17,
                  cameras: int = 1, tracks: int = 256, fps: float = 8.0, progress: bool = True,
                  overwrite: bool = False, workers: int | None = None):
  """`build_dataset` returning only the dataset folder (reused when rendered with the same arguments).

  Raises:
    As `build_dataset`.
  """
  return build_dataset(out_dir, num_scenes, seed=seed, resolution=resolution, frames=frames, cameras=cameras,
                       tracks=tracks, fps=fps, overwrite=overwrite, progress=progress, workers=workers)[0]


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
  parser.add_argument("--workers", type=int, default=None,
                      help="rendering processes (default: one per core when there are >= 32 scenes per process)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace a dataset at --out rendered with other arguments (atomically)")
  args = parser.parse_args(argv)
  problems = _argument_problems(args.num_scenes, args.resolution, args.frames, args.cameras, args.tracks, args.fps)
  if args.workers is not None and args.workers < 1:
    problems.append(("workers", f"must be an integer >= 1, got {args.workers}"))
  if problems:
    parser.error("; ".join(f"argument --{flag}: {problem}" for flag, problem in problems))
  try:
    path, reused = build_dataset(args.out, args.num_scenes, seed=args.seed, resolution=args.resolution,
                                 frames=args.frames, cameras=args.cameras, tracks=args.tracks, fps=args.fps,
                                 overwrite=args.overwrite, workers=args.workers)
  except DataError as e:
    parser.exit(1, f"{parser.prog}: error: {e}\n")
  clips = args.num_scenes * args.cameras
  print(f"reusing {path}: {clips} clips rendered with the same arguments" if reused else
        f"wrote {clips} clips to {path}")


if __name__ == "__main__":
  main()
