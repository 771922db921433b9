"""Plücker maps against an independent ray-plane computation, and their invariances."""

import jax
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from camjax import geometry as g
from camjax.geometry import Cameras, se3


def cameras(T=3, height=8, width=12, seed=0):
  R = Rotation.random(T, random_state=seed).as_matrix()
  w2c = se3.make_pose(R, np.random.default_rng(seed).normal(size=(T, 3)))
  return Cameras.create(w2c, g.intrinsics(10.0, 11.0, 6.3, 3.8), height=height, width=width)


def independent_rays(cams, height, width):
  """Ray of each cell by unprojecting its centre to the plane z = 2 in camera space, then moving to the world."""
  sx, sy = width / cams.width, height / cams.height
  out = np.zeros((cams.num_frames, height, width, 6))
  for t in range(cams.num_frames):
    K = np.diag([sx, sy, 1.0]) @ cams.K[t]
    c2w = np.linalg.inv(cams.w2c[t])
    origin = c2w[:3, 3]
    for y in range(height):
      for x in range(width):
        point_cam = 2.0 * np.linalg.solve(K, [x + 0.5, y + 0.5, 1.0])
        point_world = c2w[:3, :3] @ point_cam + origin
        d = (point_world - origin) / np.linalg.norm(point_world - origin)
        # Moment of the line through two world points: p x d for any point p on it.
        out[t, y, x] = np.concatenate([np.cross(point_world, d), d])
  return out


@pytest.mark.parametrize("grid", [(8, 12), (4, 6), (2, 3)])
def test_matches_independent_ray_plane_geometry(grid):
  cams = cameras()
  np.testing.assert_allclose(np.asarray(g.plucker(cams, *grid)), independent_rays(cams, *grid), atol=1e-5)


def test_invariances():
  cams = cameras(T=4)
  p = np.asarray(g.plucker(cams))
  moment, d = p[..., :3], p[..., 3:]
  np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.sum(moment * d, axis=-1), 0.0, atol=1e-5)
  rel = np.asarray(g.plucker(cams.relative(0)))
  np.testing.assert_allclose(rel[0, ..., :3], 0.0, atol=1e-6)  # identity camera: o = 0, no moment
  # The centre ray of an identity camera with a centred principal point looks straight down +z.
  centred = Cameras.create(np.eye(4)[None], g.intrinsics(5.0, 5.0, 3.0, 2.0), height=4, width=6)
  mean_dir = np.asarray(g.plucker(centred))[0, 1:3, 2:4, 3:].mean((0, 1))
  np.testing.assert_allclose(mean_dir / np.linalg.norm(mean_dir), [0, 0, 1], atol=1e-6)


def test_batched_jitted_and_unshuffled():
  cams = Cameras.stack([cameras(seed=0), cameras(seed=1)])
  out = jax.jit(lambda c: g.plucker(c, 4, 6))(jax.tree.map(jax.numpy.asarray, cams))
  assert out.shape == (2, 3, 4, 6, 6)
  np.testing.assert_allclose(np.asarray(out[1]), np.asarray(g.plucker(cameras(seed=1), 4, 6)), atol=1e-5)
  folded = g.plucker_unshuffled(cameras(height=16, width=24), factor=8)
  assert folded.shape == (3, 2, 3, 384)
  full = np.asarray(g.plucker(cameras(height=16, width=24)))
  # PixelUnshuffle channel order: channel-major, then row offset, then column offset inside the block.
  np.testing.assert_allclose(np.asarray(folded)[1, 1, 2, 5 * 64 + 3 * 8 + 7], full[1, 8 + 3, 16 + 7, 5], atol=1e-6)
  with pytest.raises(ValueError, match="divisible"):
    g.pixel_unshuffle(full, 5)
