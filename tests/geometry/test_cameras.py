"""Cameras: validation, relative poses, image-size changes (checked by projecting points), frames, pytree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from camjax.geometry import CameraError, Cameras, intrinsics, se3


def random_cameras(T=5, height=90, width=160, seed=0):
  rng = np.random.default_rng(seed)
  R = Rotation.random(T, random_state=seed).as_matrix()
  w2c = se3.make_pose(R, rng.normal(size=(T, 3)))
  K = intrinsics(rng.uniform(80, 120, T), rng.uniform(80, 120, T), width / 2 + rng.normal(size=T),
                 height / 2 + rng.normal(size=T))
  return Cameras(K=K, w2c=w2c, height=height, width=width)


def project(cams, points):
  """Continuous pixel coordinates `[T, N, 2]` of world points `[N, 3]`."""
  cam = np.einsum("tij,nj->tni", cams.w2c[:, :3, :3], points) + cams.w2c[:, None, :3, 3]
  pix = np.einsum("tij,tnj->tni", cams.K, cam)
  return pix[..., :2] / pix[..., 2:]


@pytest.mark.parametrize("bad, message", [
    ("nan", "non-finite"),
    ("reflection", "det"),
    ("scaled", "not orthonormal"),
    ("focal", "focal"),
    ("bottom", "last row"),
])
def test_validation_names_the_frame(bad, message):
  cams = random_cameras()
  w2c, K = cams.w2c.copy(), cams.K.copy()
  if bad == "nan":
    w2c[3, 0, 3] = np.nan
  elif bad == "reflection":
    w2c[3, :3, 0] *= -1
  elif bad == "scaled":
    w2c[3, :3, :3] *= 1.01
  elif bad == "focal":
    K[3, 0, 0] = -5
  elif bad == "bottom":
    w2c[3, 3, 0] = 1
  with pytest.raises(CameraError, match=message) as info:
    Cameras(K=K, w2c=w2c, height=90, width=160).validate(source="clip.txt", lines=[10, 11, 12, 13, 14])
  assert info.value.frame == 3 and info.value.line == 13 and "clip.txt:13" in str(info.value)


def test_relative_makes_reference_identity_and_keeps_geometry():
  cams = random_cameras(T=6)
  rel = cams.relative(2)
  np.testing.assert_allclose(rel.w2c[2], np.eye(4), atol=1e-12)
  # Relative motion between any two frames is unchanged.
  a = cams.w2c[4] @ cams.c2w[1]
  b = rel.w2c[4] @ rel.c2w[1]
  np.testing.assert_allclose(a, b, atol=1e-12)
  # rel_c2w_i = w2c_ref @ c2w_i (REFERENCE.md section 1).
  np.testing.assert_allclose(rel.c2w, cams.w2c[2][None] @ cams.c2w, atol=1e-12)


def test_relative_to_an_explicit_global_reference():
  cams = random_cameras(T=6)
  clip1, clip2 = cams.take([0, 1, 2]), cams.take([3, 4, 5])
  global_ref = clip1.w2c[0]
  joined = Cameras.concatenate([clip1.relative(global_ref), clip2.relative(global_ref)])
  np.testing.assert_allclose(joined.w2c, cams.relative(0).w2c, atol=1e-12)
  # Per-clip references differ (the ablation of CameraCtrl II Table 5).
  assert not np.allclose(clip2.relative(0).w2c, cams.relative(0).w2c[3:])
  with pytest.raises(CameraError, match="out of range"):
    cams.relative(6)


def test_resize_and_crop_move_projections_like_the_image():
  cams = random_cameras()
  points = np.random.default_rng(1).normal(size=(20, 3)) + np.array([0, 0, 6])
  points = (cams.c2w[0, :3, :3] @ points.T).T + cams.c2w[0, :3, 3]
  px = project(cams, points)
  resized = cams.resize(45, 320)
  np.testing.assert_allclose(project(resized, points), px * np.array([2.0, 0.5]), atol=1e-9)
  cropped = cams.crop(10, 20, 50, 100)
  np.testing.assert_allclose(project(cropped, points), px - np.array([20, 10]), atol=1e-9)
  assert cropped.image_size == (50, 100)


def test_resize_center_crop_follows_cameractrl_re10k_formula():
  fx, fy, cx, cy = 0.47, 0.84, 0.5, 0.5
  cams = Cameras(K=intrinsics(fx * 1280, fy * 720, cx * 1280, cy * 720)[None], w2c=np.eye(4)[None], height=720,
                 width=1280)
  out = cams.resize_center_crop(320, 576)
  np.testing.assert_allclose(out.K[0], intrinsics(fx * 576, fy * 324, cx * 576, cy * 324 - 2), atol=1e-9)
  with pytest.raises(CameraError, match="larger"):
    cams.center_crop(800, 100)


def test_subsample_take_and_errors():
  cams = random_cameras(T=10)
  sub = cams.subsample(stride=3, start=1)
  np.testing.assert_array_equal(sub.w2c, cams.w2c[[1, 4, 7]])
  assert cams.subsample(2, num_frames=3).num_frames == 3
  with pytest.raises(CameraError, match="only 5"):
    cams.subsample(2, num_frames=6)


def test_scale_translation_scales_centres():
  cams = random_cameras()
  np.testing.assert_allclose(cams.scale_translation(2.5).centers, 2.5 * cams.centers, atol=1e-12)


def test_cameras_are_a_jittable_batched_pytree():
  cams = Cameras.stack([random_cameras(seed=0), random_cameras(seed=1)])
  assert cams.batch_shape == (2,) and cams[1].num_frames == 5
  jcams = jax.tree.map(jnp.asarray, cams)
  leaves = jax.tree.leaves(jcams)
  assert len(leaves) == 2  # K and w2c; image size is static metadata
  out = jax.jit(lambda c: c.relative(0).w2c)(jcams)
  np.testing.assert_allclose(np.asarray(out), cams.relative(0).w2c, atol=1e-5)
  vm = jax.vmap(lambda c: c.centers)(jcams)
  np.testing.assert_allclose(np.asarray(vm), cams.centers, atol=1e-5)
