"""The preview renderer (RealCam-I2V sec. 3.3): unprojection, outlier removal, the z-buffer splat, the coverage and
latent masks, checked against the pinhole model written out in NumPy and against scipy.ndimage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from camjax.geometry import render as r
from camjax.geometry import se3

H, W = 24, 32
K = np.array([[30.0, 0.0, 15.5], [0.0, 26.0, 12.0], [0.0, 0.0, 1.0]])


def _pose(rotvec, t):
  return se3.make_pose(Rotation.from_rotvec(rotvec).as_matrix(), np.asarray(t, np.float64))


def _pinhole(points, K, w2c):
  """Pixel indices (floor of the projection, centres at +0.5) and depth, float64 NumPy."""
  cam = points @ w2c[:3, :3].T + w2c[:3, 3]
  uv = cam @ K.T
  return np.floor(uv[:, :2] / uv[:, 2:]).astype(int), cam[:, 2]


def test_unproject_lifts_pixel_centres_through_the_pinhole():
  c2w = _pose([0.1, -0.2, 0.05], [0.3, -0.1, 2.0])
  rng = np.random.default_rng(0)
  depth = 2.0 + rng.random((H, W))
  depth[3, 4] = 0.0  # no depth: skipped
  depth[5, 6] = np.nan
  image = rng.random((H, W, 3))
  points, colors = r.unproject(image, depth, K, c2w)
  assert points.shape == (H * W - 2, 3) and colors.dtype == np.float32
  # Pixel (x=7, y=2): its ray through (7.5, 2.5) at camera z = depth[2, 7].
  i = 2 * W + 7 - 0  # rows 0..2 hold no skipped pixel before (2, 7)
  cam = depth[2, 7] * np.array([(7.5 - K[0, 2]) / K[0, 0], (2.5 - K[1, 2]) / K[1, 1], 1.0])
  np.testing.assert_allclose(points[i], c2w[:3, :3] @ cam + c2w[:3, 3], rtol=1e-6)
  np.testing.assert_allclose(colors[i], image[2, 7], rtol=1e-6)
  # Every point projects back into its own pixel, at its depth.
  y, x = np.nonzero(depth > 0)
  pix, z = _pinhole(points.astype(np.float64), K, se3.invert(c2w))
  np.testing.assert_array_equal(pix, np.stack([x, y], -1))
  np.testing.assert_allclose(z, depth[y, x], rtol=1e-5)


def test_points_land_where_the_pinhole_says():
  rng = np.random.default_rng(1)
  w2c = _pose([0.05, 0.1, -0.03], [0.2, 0.1, 0.5])
  # Points on a coarse grid of rays, so no two share a pixel; a few behind the camera.
  c2w = se3.invert(w2c)
  xs, ys = np.meshgrid(np.arange(2, W - 2, 4) + 0.3, np.arange(2, H - 2, 4) + 0.7)
  rays = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], -1) @ np.linalg.inv(K).T
  z = 1.0 + 3.0 * rng.random(xs.size)
  z[:3] = -1.0
  points = (rays * z[:, None]) @ c2w[:3, :3].T + c2w[:3, 3]
  colors = rng.random((xs.size, 3))
  images, depth, covered = r.render_points(points, colors, K, w2c[None], H, W)
  images, depth, covered = np.asarray(images[0]), np.asarray(depth[0]), np.asarray(covered[0])
  pix, zz = _pinhole(points, K, w2c)
  front = zz > 0
  assert covered.sum() == front.sum() == xs.size - 3
  for (px, py), c, d in zip(pix[front], colors[front], zz[front]):
    assert covered[py, px]
    np.testing.assert_allclose(images[py, px], c, rtol=1e-6)
    np.testing.assert_allclose(depth[py, px], d, rtol=1e-5)
  assert (images[~covered] == 0).all() and (depth[~covered] == 0).all()


def test_the_nearest_point_wins_whatever_the_order():
  # A red plane at z = 2 in front of a larger blue plane at z = 4, both fronto-parallel, camera at the origin.
  def plane(z, half, color):
    g = np.linspace(-half, half, 80)
    x, y = np.meshgrid(g, g)
    pts = np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], -1)
    return pts, np.tile(color, (x.size, 1))

  front, red = plane(2.0, 0.3, [1.0, 0.0, 0.0])
  back, blue = plane(4.0, 3.0, [0.0, 0.0, 1.0])
  points, colors = np.concatenate([back, front]), np.concatenate([blue, red])
  w2c = np.eye(4)[None]
  images, depth, covered = (np.asarray(a[0]) for a in r.render_points(points, colors, K, w2c, H, W))
  pix_front, _ = _pinhole(front, K, np.eye(4))
  inside = np.zeros((H, W), bool)
  ok = (pix_front[:, 0] >= 0) & (pix_front[:, 0] < W) & (pix_front[:, 1] >= 0) & (pix_front[:, 1] < H)
  inside[pix_front[ok, 1], pix_front[ok, 0]] = True
  assert inside.sum() > 20
  np.testing.assert_array_equal(images[inside], np.tile([1.0, 0.0, 0.0], (inside.sum(), 1)))
  np.testing.assert_allclose(depth[inside], 2.0, rtol=1e-6)
  rest = covered & ~inside
  assert rest.sum() > 100
  np.testing.assert_array_equal(images[rest], np.tile([0.0, 0.0, 1.0], (rest.sum(), 1)))
  np.testing.assert_allclose(depth[rest], 4.0, rtol=1e-6)
  # Reversing the points changes nothing (every decision is a min).
  perm = np.random.default_rng(2).permutation(len(points))
  again = r.render_points(points[perm], colors[perm], K, w2c, H, W)
  np.testing.assert_array_equal(np.asarray(again[0][0]), images)
  # Exact duplicates (same place, same depth): the lower index wins.
  dup = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
  img = np.asarray(r.render_points(dup, np.array([[0.2, 0.2, 0.2], [0.9, 0.9, 0.9]]), K, w2c, H, W)[0][0])
  np.testing.assert_allclose(img[img.sum(-1) > 0], [[0.2, 0.2, 0.2]])


def _scene(seed=3):
  """A random image on a gently slanted, bumpy surface (relative depth change < 1% per pixel)."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:H, 0:W]
  depth = 3.0 + 0.01 * x + 0.05 * np.sin(y / 3.0)
  return rng.random((H, W, 3)), depth


@pytest.mark.parametrize("radius", [0, 1])
def test_rerendering_the_reference_view_reproduces_the_image(radius):
  image, depth = _scene()
  c2w = _pose([0.2, 0.1, -0.1], [1.0, -0.5, 0.3])
  points, colors = r.unproject(image, depth, K, c2w)
  images, rendered, covered = r.render_points(points, colors, K, se3.invert(c2w)[None], H, W, radius=radius)
  assert np.asarray(covered).all()
  np.testing.assert_array_equal(np.asarray(images[0]), image.astype(np.float32))
  np.testing.assert_allclose(np.asarray(rendered[0]), depth, rtol=1e-5)


def test_a_splat_closes_the_cracks_of_a_closer_camera():
  image, depth = _scene()
  points, colors = r.unproject(image, depth, K, np.eye(4))
  closer = se3.make_pose(np.eye(3), [0.0, 0.0, -1.0])[None]  # 1 m closer to a 3 m surface: 1.5x magnification
  _, _, bare = r.render_points(points, colors, K, closer, H, W, radius=0)
  _, _, splat = r.render_points(points, colors, K, closer, H, W, radius=1)
  assert not np.asarray(bare).all()  # cracks between the magnified pixels
  assert np.asarray(splat).all()


def test_render_jits_vmaps_and_batches_frames():
  image, depth = _scene()
  points, colors = r.unproject(image, depth, K, np.eye(4))
  w2c = np.stack([_pose([0, 0.02 * i, 0], [0.05 * i, 0, 0]) for i in range(4)])
  ref = r.render_points(points, colors, K, w2c, H, W, radius=1)
  fn = jax.jit(lambda p, c, w: r.render_points(p, c, np.broadcast_to(K, (4, 3, 3)), w, H, W, radius=1,
                                               batch_frames=2))
  out = fn(jnp.asarray(points), jnp.asarray(colors), jnp.asarray(w2c, jnp.float32))
  # The same pixels win and are covered; depth and colour agree to float32 rounding (the eager and the jitted,
  # frame-batched programs fuse the projection differently: 1-ulp differences seen with jaxlib 0.10.2, numpy 2.4).
  np.testing.assert_array_equal(np.asarray(ref[2]), np.asarray(out[2]))
  for a, b in zip(ref[:2], out[:2]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
  assert ref[0].shape == (4, H, W, 3) and ref[2].dtype == bool


def test_render_rejects_bad_shapes():
  pts, cols = np.zeros((5, 3)), np.zeros((5, 3))
  with pytest.raises(r.RenderError, match="w2c"):
    r.render_points(pts, cols, K, np.eye(4), H, W)
  with pytest.raises(r.RenderError, match="K"):
    r.render_points(pts, cols, np.stack([K] * 2), np.stack([np.eye(4)] * 3), H, W)
  with pytest.raises(r.RenderError, match="colors"):
    r.render_points(pts, cols[:4], K, np.eye(4)[None], H, W)
  with pytest.raises(r.RenderError, match="radius"):
    r.render_points(pts, cols, K, np.eye(4)[None], H, W, radius=-1)
  with pytest.raises(r.RenderError, match="depth"):
    r.unproject(np.zeros((H, W, 3)), np.zeros((H, W + 1)), K, np.eye(4))
  with pytest.raises(r.RenderError, match="c2w"):
    r.unproject(np.zeros((H, W, 3)), np.zeros((H, W)), K, np.eye(3))


def test_coverage_mask_grows_every_hole_by_half_the_window():
  covered = np.ones((2, H, W), bool)
  covered[0, 10, 12] = False
  covered[1, 0:3, 20:25] = False  # a hole on the border
  out = np.asarray(r.coverage_mask(covered, k=5))
  expected = np.ones((H, W), bool)
  expected[8:13, 10:15] = False
  np.testing.assert_array_equal(out[0], expected)
  expected = np.ones((H, W), bool)
  expected[0:5, 18:27] = False
  np.testing.assert_array_equal(out[1], expected)
  assert np.asarray(r.coverage_mask(np.ones((H, W), bool))).all()  # the image border is not a hole
  # A random mask against scipy's minimum filter ("mirror" = numpy / PyTorch "reflect").
  rand = np.random.default_rng(4).random((H, W)) > 0.05
  for k in (1, 3, 5):
    np.testing.assert_array_equal(np.asarray(r.coverage_mask(rand, k=k)),
                                  ndimage.minimum_filter(rand, size=k, mode="mirror"))
  with pytest.raises(r.RenderError, match="odd"):
    r.coverage_mask(covered, k=4)


def test_latent_mask_groups_frames_like_a_causal_vae_and_thresholds():
  mask = np.ones((9, 16, 16), bool)  # 9 frames -> 3 latent frames (stride 4), 8x8 cells -> 2x2
  mask[0, 0:6, 0:1] = False  # latent 0, cell (0, 0): 58/64 = 0.906 covered -> kept
  mask[0, 8:15, 0:1] = False  # latent 0, cell (1, 0): 57/64 = 0.891 -> dropped
  mask[2, 0:8, 8:16] = False  # latent 1 (frames 1-4), cell (0, 1): 3/4 of its frames covered -> dropped
  mask[5, 8:9, 8:16] = False  # latent 2 (frames 5-8), cell (1, 1): 1 - 8/256 covered -> kept
  mask[8, 0:4, 0:8] = False  # latent 2, cell (0, 0): 1 - 32/256 = 0.875 -> dropped
  out = np.asarray(r.latent_mask(mask, (3, 2, 2)))
  expected = np.ones((3, 2, 2), bool)
  expected[0, 1, 0] = expected[1, 0, 1] = expected[2, 0, 0] = False
  np.testing.assert_array_equal(out, expected)
  assert out.dtype == bool
  # Exactly 9/10 of a cell reaches the threshold; T == t maps frame to frame; fractional cells keep rows at 1.
  tenth = np.ones((1, 10, 1), bool)
  tenth[0, 0, 0] = False
  assert np.asarray(r.latent_mask(tenth, (1, 1, 1))).all()
  assert not np.asarray(r.latent_mask(tenth, (1, 1, 1), threshold=0.95)).any()
  assert np.asarray(r.latent_mask(np.ones((2, 4, 12, 20)), (4, 8, 6))).all()
  with pytest.raises(r.RenderError, match="causal VAE"):
    r.latent_mask(np.ones((8, 16, 16)), (3, 2, 2))


def test_remove_outliers_drops_far_points_and_keeps_a_plane():
  rng = np.random.default_rng(5)
  g = np.linspace(-1.0, 1.0, 64)
  x, y = np.meshgrid(g, g)
  plane = np.stack([x.ravel(), y.ravel(), 3.0 + 0.002 * rng.standard_normal(x.size)], -1)
  far = rng.standard_normal((20, 3))
  far = 3.0 * far / np.linalg.norm(far, axis=1, keepdims=True) + [0.0, 0.0, 3.0]  # 3 m off the plane's centre
  keep = r.remove_outliers(np.concatenate([plane, far]))
  assert not keep[-20:].any()
  assert keep[:-20].mean() > 0.99
  assert r.remove_outliers(plane[:5], k=11).all()  # too few points for the statistic
  with pytest.raises(r.RenderError, match="points"):
    r.remove_outliers(plane[:, :2])


def test_preview_end_to_end():
  image, depth = _scene()
  depth[0, 0] = 50.0  # a flying pixel: a statistical outlier
  w2c = np.stack([_pose([0, 0, 0], [0.3 * i, 0, 0]) for i in range(5)])  # 5 frames -> 2 latents
  out = r.preview(image, depth, K, np.eye(4), w2c, latent_shape=(2, 3, 4))
  assert out.num_outliers >= 1 and out.num_points + out.num_outliers == H * W
  assert out.video.shape == (5, H, W, 3) and out.latent_mask.shape == (2, 3, 4)
  mask, covered = np.asarray(out.mask), np.asarray(out.covered)
  assert not (mask & ~covered).any()
  assert mask[0].mean() > 0.8 and mask[-1].mean() < mask[0].mean()  # the camera pans away from the scene
  m0 = mask[0].copy()
  m0[0, 0] = False  # the outlier's pixel shows a neighbour's splat
  np.testing.assert_array_equal(np.asarray(out.video[0])[m0], image.astype(np.float32)[m0])
  np.testing.assert_array_equal(np.asarray(out.latent_mask), np.asarray(r.latent_mask(mask, (2, 3, 4))))
