"""SE(3)/SO(3) helpers: NumPy and JAX paths, against scipy's independent implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from camjax.geometry import se3


@pytest.fixture
def rotations():
  return Rotation.random(64, random_state=0)


def test_quaternion_matches_scipy(rotations):
  q = rotations.as_quat()  # x, y, z, w
  np.testing.assert_allclose(se3.quaternion_to_matrix(q), rotations.as_matrix(), atol=1e-12)
  back = se3.matrix_to_quaternion(rotations.as_matrix())
  q_pos = q * np.sign(q[:, 3:4])
  np.testing.assert_allclose(back, q_pos, atol=1e-12)


def test_quaternion_near_pi_is_stable():
  R = Rotation.from_rotvec([[np.pi - 1e-9, 0, 0], [0, 0, np.pi]]).as_matrix()
  np.testing.assert_allclose(se3.quaternion_to_matrix(se3.matrix_to_quaternion(R)), R, atol=1e-9)


def test_exp_log_round_trip(rotations):
  rotvec = rotations.as_rotvec()
  np.testing.assert_allclose(se3.so3_exp(rotvec), rotations.as_matrix(), atol=1e-12)
  np.testing.assert_allclose(se3.so3_log(rotations.as_matrix()), rotvec, atol=1e-9)
  np.testing.assert_allclose(se3.so3_exp(np.zeros(3)), np.eye(3))


def test_invert_and_geodesic(rotations):
  T = se3.make_pose(rotations.as_matrix(), np.random.default_rng(0).normal(size=(64, 3)))
  np.testing.assert_allclose(se3.invert(T) @ T, np.broadcast_to(np.eye(4), T.shape), atol=1e-12)
  other = Rotation.random(64, random_state=1)
  expected = (rotations.inv() * other).magnitude()
  np.testing.assert_allclose(se3.geodesic_angle(rotations.as_matrix(), other.as_matrix()), expected, atol=1e-6)


def test_slerp_matches_scipy(rotations):
  from scipy.spatial.transform import Slerp
  R0, R1 = rotations[0], rotations[1]
  alphas = np.linspace(0, 1, 7)
  ref = Slerp([0, 1], Rotation.concatenate([R0, R1]))(alphas).as_matrix()
  out = se3.slerp(np.broadcast_to(R0.as_matrix(), (7, 3, 3)), np.broadcast_to(R1.as_matrix(), (7, 3, 3)), alphas)
  np.testing.assert_allclose(out, ref, atol=1e-9)


def test_project_to_so3_fixes_reflections():
  M = np.diag([1.0, 1.0, -1.0]) + 1e-3
  R = se3.project_to_so3(M)
  np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
  assert np.linalg.det(R) == pytest.approx(1.0)


def test_numpy_stays_numpy_and_jax_jits(rotations):
  T = se3.make_pose(rotations.as_matrix(), np.zeros((64, 3)))
  assert isinstance(se3.invert(T), np.ndarray)
  out = jax.jit(se3.invert)(jnp.asarray(T, jnp.float32))
  assert isinstance(out, jax.Array)
  np.testing.assert_allclose(np.asarray(out), se3.invert(T), atol=1e-6)
