"""camjax.geometry.warp: backward reprojection through a disparity map and a relative pose."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax.geometry import se3
from camjax.geometry.warp import WarpError, reproject, reproject_coords, sample_bilinear


def _psnr(a, b):
  return float(10 * np.log10(4.0 / np.mean((a - b) ** 2)))  # values in [-1, 1]


def test_sample_bilinear_reads_pixel_centres_interpolates_and_clamps_at_the_edges():
  rng = np.random.default_rng(0)
  frames = rng.uniform(-1, 1, (2, 3, 5, 7, 4)).astype(np.float32)
  xs, ys = np.meshgrid(np.arange(7) + 0.5, np.arange(5) + 0.5)
  grid = lambda a: np.broadcast_to(a, (2, 3, 5, 7)).astype(np.float32)
  np.testing.assert_allclose(sample_bilinear(frames, grid(xs), grid(ys)), frames, atol=1e-6)
  # Half-way between two centres: their mean; beyond the border: the border pixel.
  mid = np.asarray(sample_bilinear(frames, grid(xs + 0.5), grid(ys)))
  np.testing.assert_allclose(mid[..., :-1, :], 0.5 * (frames[..., :-1, :] + frames[..., 1:, :]), atol=1e-6)
  np.testing.assert_allclose(mid[..., -1, :], frames[..., -1, :], atol=1e-6)
  far = np.asarray(sample_bilinear(frames, grid(xs - 30.0), grid(ys + 30.0)))
  np.testing.assert_allclose(far, np.broadcast_to(frames[:, :, -1:, :1], far.shape), atol=1e-6)
  with pytest.raises(WarpError, match=r"x \(2, 3, 5\) and y"):
    sample_bilinear(frames, grid(xs)[..., 0], grid(ys)[..., 0])


def test_identity_pose_returns_the_frames_and_a_truck_shifts_by_focal_times_baseline_times_disparity():
  rng = np.random.default_rng(1)
  frames = rng.uniform(-1, 1, (1, 2, 16, 24, 3)).astype(np.float32)
  disparity = rng.uniform(0.0, 1.0, (1, 2, 16, 24)).astype(np.float32)
  K = np.broadcast_to(np.array([[20.0, 0, 12], [0, 20, 8], [0, 0, 1]], np.float32), (1, 2, 3, 3))
  eye = np.broadcast_to(np.eye(4, dtype=np.float32), (1, 2, 4, 4))
  np.testing.assert_allclose(reproject(frames, disparity, eye, K, K), frames, atol=1e-5)
  # The source camera sits 0.1 m to the right of the destination: a point at disparity d appears 20 * 0.1 * d pixels
  # further left in the source (x' = x - f b d).
  rel = np.array(eye)
  rel[..., 0, 3] = -0.1  # X_src = X_dst - (0.1, 0, 0)
  x, y, front = reproject_coords(jnp.asarray(disparity), jnp.asarray(rel), jnp.asarray(K), jnp.asarray(K))
  xs, ys = np.meshgrid(np.arange(24) + 0.5, np.arange(16) + 0.5)
  np.testing.assert_allclose(x, xs - 2.0 * disparity, atol=1e-4)
  np.testing.assert_allclose(y, np.broadcast_to(ys, y.shape), atol=1e-4)
  assert bool(np.all(front))
  # A point behind the source camera keeps its own pixel.
  back = np.array(eye)
  back[..., 2, 3] = -5.0  # the source camera 5 m in front: points at 1 m are behind it
  x, y, front = reproject_coords(jnp.ones((1, 2, 16, 24)), jnp.asarray(back), jnp.asarray(K), jnp.asarray(K))
  assert not bool(np.any(front))
  np.testing.assert_allclose(x, np.broadcast_to(xs, x.shape), atol=1e-6)
  with pytest.raises(WarpError, match=r"K_src must be \[B, F, 3, 3\]"):
    reproject(frames, disparity, eye, K, K[:, :1])


def test_true_depth_reproduces_the_target_view_of_a_rendered_pair_from_the_source():
  """A procedural pair (two synchronised cameras of one dynamic scene, sharing frame 0): the source frame t warped at
  the target's true depth through `w2c_src_t @ c2w_tgt_t` matches target frame t far better than copying the source
  (only disocclusions and the image border differ), and better than one plane at the median depth."""
  from camjax.data.pairs import pair_trajectories
  from camjax.data.synthetic import render_scene
  seed = 3_000_000
  src, tgt = render_scene(seed, num_frames=9, height=48, width=48, num_cameras=2, num_tracks=0,
                          trajectories=pair_trajectories(seed))
  s = src.frames.astype(np.float32)[None] / 127.5 - 1
  gt = tgt.frames.astype(np.float32) / 127.5 - 1
  disparity = np.where(tgt.depth > 0, 1.0 / np.maximum(tgt.depth, 1e-6), 0.0)[None].astype(np.float32)  # sky: 0
  rel = (np.asarray(src.cameras.w2c) @ se3.invert(np.asarray(tgt.cameras.w2c)))[None].astype(np.float32)
  K_dst, K_src = np.asarray(tgt.cameras.K, np.float32)[None], np.asarray(src.cameras.K, np.float32)[None]
  warp = jax.jit(reproject)
  out = np.asarray(warp(s, disparity, rel, K_dst, K_src))[0]
  np.testing.assert_allclose(out[0], gt[0], atol=1e-5)  # frame 0 is shared: identity
  warped = np.mean([_psnr(out[i], gt[i]) for i in range(1, 9)])
  copy = np.mean([_psnr(s[0, i], gt[i]) for i in range(1, 9)])
  assert warped > copy + 5.0, (warped, copy)  # 24.8 vs 17.9 dB
  plane = np.full_like(disparity, 1.0 / np.median(tgt.depth[tgt.depth > 0]))
  flat = np.asarray(warp(s, plane, rel, K_dst, K_src))[0]
  assert np.mean([_psnr(flat[i], gt[i]) for i in range(1, 9)]) < warped - 2.0  # 21.2 dB
  # The gradient of a photometric loss w.r.t. the disparity is finite and not zero.
  loss = lambda d: jnp.mean((warp(s, d, rel, K_dst, K_src)[0] - gt) ** 2)
  grad = np.asarray(jax.grad(loss)(jnp.asarray(plane)))
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
