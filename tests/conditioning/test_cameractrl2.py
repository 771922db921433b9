"""CameraCtrl II conditioning helpers: one pose per latent frame, Plücker at the latent grid, masks, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax.conditioning.cameractrl2 import (ConditioningError, camera_plucker, drop_cameras, extension_mask,
                                              latent_frame_indices, sample_extension_frames)
from camjax.geometry import trajectories
from camjax.geometry.plucker import plucker


def _cameras(n=17):
  K = np.array([[200.0, 0, 128], [0, 200.0, 96], [0, 0, 1]])
  return trajectories.preset("pan_left:30+dolly_in:1", n, height=192, width=256, K=K)


def test_latent_frame_indices():
  np.testing.assert_array_equal(latent_frame_indices(17, 4), [0, 4, 8, 12, 16])
  np.testing.assert_array_equal(latent_frame_indices(5, 1), [0, 1, 2, 3, 4])
  with pytest.raises(ConditioningError, match="1 \\+ 4k"):
    latent_frame_indices(16, 4)


def test_camera_plucker_uses_every_fourth_pose_at_the_latent_grid():
  cams = _cameras()
  got = camera_plucker(cams, (5, 12, 16), temporal_factor=4)
  assert got.shape == (5, 12, 16, 6)
  expected = plucker(cams.take(np.arange(0, 17, 4)).relative(0), 12, 16)
  np.testing.assert_allclose(got, expected, atol=1e-6)
  # The first latent frame's camera is the identity: its moments vanish (o = 0).
  np.testing.assert_allclose(got[0, ..., :3], 0, atol=1e-6)
  assert float(jnp.abs(got[-1, ..., :3]).max()) > 1e-2
  with pytest.raises(ConditioningError, match="latents have 4"):
    camera_plucker(cams, (4, 12, 16), temporal_factor=4)


def test_extension_mask_and_sampling():
  m = extension_mask(2, (4, 2, 3), jnp.array([0, 2]))
  assert m.shape == (2, 4, 2, 3, 1)
  np.testing.assert_array_equal(m[:, :, 0, 0, 0], [[0, 0, 0, 0], [1, 1, 0, 0]])
  n = sample_extension_frames(jax.random.key(0), 1000, 8, min_frames=1, max_fraction=0.5, extension_prob=0.5)
  assert int(n.min()) == 0 and int(n.max()) == 4
  assert 0.4 < float(jnp.mean(n > 0)) < 0.6


def test_drop_cameras():
  cam = jnp.ones((4, 2, 2, 2, 6))
  out = drop_cameras(jax.random.key(0), cam, jnp.array([True, False, True, True]), drop_prob=0.0)
  np.testing.assert_array_equal(out[:, 0, 0, 0, 0], [1, 0, 1, 1])  # unlabeled clip -> null camera
  assert float(drop_cameras(jax.random.key(0), cam, None, drop_prob=1.0).max()) == 0
