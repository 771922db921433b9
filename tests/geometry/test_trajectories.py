"""Trajectory presets, SE(3) interpolation and chaining clips in one global frame."""

import numpy as np
import pytest

from camjax import geometry as g
from camjax.geometry import CameraError, se3


@pytest.mark.parametrize("name", g.PRESETS)
def test_every_preset_starts_at_identity(name):
  cams = g.preset(name, 9)
  np.testing.assert_allclose(cams.w2c[0], np.eye(4), atol=1e-12)
  cams.validate()


@pytest.mark.parametrize("name, axis, sign", [("dolly_in", 2, 1), ("dolly_out", 2, -1), ("truck_right", 0, 1),
                                              ("truck_left", 0, -1), ("pedestal_up", 1, -1)])
def test_translations_are_metric_along_opencv_axes(name, axis, sign):
  cams = g.preset(name, 11, magnitude=2.0)
  expected = np.zeros(3)
  expected[axis] = 2.0 * sign
  np.testing.assert_allclose(cams.centers[-1], expected, atol=1e-12)


@pytest.mark.parametrize("name, direction", [("pan_right", [1, 0, 0]), ("pan_left", [-1, 0, 0]),
                                             ("tilt_up", [0, -1, 0]), ("tilt_down", [0, 1, 0])])
def test_rotations_turn_the_view_the_named_way(name, direction):
  cams = g.preset(name, 5, magnitude=40.0)
  forward = cams.c2w[-1, :3, 2]
  assert np.degrees(se3.geodesic_angle(np.eye(3), cams.c2w[-1, :3, :3])) == pytest.approx(40.0)
  assert np.dot(forward, direction) == pytest.approx(np.sin(np.radians(40.0)))


def test_orbit_keeps_looking_at_the_target_and_zoom_changes_focal():
  cams = g.preset("orbit_right", 7, magnitude=60.0, radius=3.0)
  target = np.array([0, 0, 3.0])
  for c2w in cams.c2w:
    to_target = target - c2w[:3, 3]
    np.testing.assert_allclose(c2w[:3, 2], to_target / np.linalg.norm(to_target), atol=1e-12)
    assert np.linalg.norm(to_target) == pytest.approx(3.0)
  assert cams.centers[-1, 0] > 0  # orbit_right moves right
  zoom = g.preset("zoom_in", 5, magnitude=2.0)
  assert zoom.K[-1, 0, 0] == pytest.approx(2 * zoom.K[0, 0, 0])
  np.testing.assert_allclose(zoom.w2c, np.broadcast_to(np.eye(4), zoom.w2c.shape))


def test_composition_and_errors():
  cams = g.preset("pan_right:90+dolly_in:1", 3)
  np.testing.assert_allclose(cams.centers[-1], [1, 0, 0], atol=1e-12)  # moved along the turned view axis
  with pytest.raises(CameraError, match="unknown trajectory preset"):
    g.preset("spin", 5)
  with pytest.raises(CameraError, match="bad magnitude"):
    g.preset("pan_left:lots", 5)


def test_interpolation_and_resample():
  cams = g.preset("pan_right:60+dolly_in", 4)
  fine = g.resample(cams, 10)
  np.testing.assert_allclose(fine.w2c[0], cams.w2c[0], atol=1e-12)
  np.testing.assert_allclose(fine.w2c[-1], cams.w2c[-1], atol=1e-12)
  # A linear-in-time preset resampled equals the preset built with more frames.
  np.testing.assert_allclose(g.resample(g.preset("pan_left", 4), 10).w2c, g.preset("pan_left", 10).w2c, atol=1e-12)
  with pytest.raises(CameraError, match="increasing"):
    g.interpolate_poses(cams.c2w[:2], [1.0, 1.0], [1.0])


def test_chain_puts_every_clip_in_the_first_clips_frame():
  a = g.preset("dolly_in:1", 5)
  b = g.preset("truck_right:2", 5)
  joined = g.chain([a, b], drop_anchor=True)
  assert joined.num_frames == 9
  np.testing.assert_allclose(joined.w2c[0], np.eye(4), atol=1e-12)
  np.testing.assert_allclose(joined.centers[-1], [2, 0, 1], atol=1e-12)
  turned = g.chain([g.preset("pan_right:90", 3), g.preset("dolly_in:1", 3)])
  np.testing.assert_allclose(turned.centers[-1], [1, 0, 0], atol=1e-12)  # the second clip moves along the new view
