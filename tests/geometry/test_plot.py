"""Frustum figures."""

import numpy as np

from camjax import geometry as g


def test_frustum_corners_lie_on_the_image_corner_rays():
  cams = g.preset("orbit_left", 4, height=40, width=60)
  lines = g.plot.frustum_lines(cams, size=0.5)
  assert lines.shape == (4, 8, 2, 3)
  corner = lines[2, 0, 1]  # top-left image corner at depth 0.5
  cam = cams.w2c[2, :3, :3] @ corner + cams.w2c[2, :3, 3]
  assert np.isclose(cam[2], 0.5)
  pix = cams.K[2] @ cam
  np.testing.assert_allclose(pix[:2] / pix[2], [0, 0], atol=1e-9)


def test_plot_writes_a_png(tmp_path):
  path = tmp_path / "traj.png"
  g.plot_trajectories({"gt": g.preset("dolly_in", 10), "est": g.preset("dolly_in+pan_left", 10)}, path, every=3,
                      title="test")
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
  assert not list(tmp_path.glob(".*.tmp"))
