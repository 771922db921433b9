"""The RealEstate10K cameras agree with the real video frames they annotate (OpenCV two-view geometry and pycolmap
SfM on the frames), which checks the reader's w2c convention and the 576x320 aspect/crop intrinsics end to end."""

import numpy as np
import pytest

from camjax import geometry as g
from camjax import media
from camjax.geometry import se3

cv2 = pytest.importorskip("cv2")


def clips(shared_data):
  d = shared_data / "re10k_clips"
  for video in sorted((d / "videos").glob("*_svdxt.mp4")):
    frames = media.read_video(video)
    yield video.stem, frames, g.read_re10k(d / "pose_files" / f"{video.stem}.txt", image_size=frames.shape[1:3])


def test_two_view_rotations_match_the_pose_files(shared_data):
  sift = cv2.SIFT_create(4000)
  seen = 0
  for name, frames, cams in clips(shared_data):
    assert len(frames) == cams.num_frames == 25
    feats = [sift.detectAndCompute(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), None) for f in frames]
    errors, wrong_convention, magnitudes = [], [], []
    for i in range(0, 21, 2):
      j = i + 4
      (ka, da), (kb, db) = feats[i], feats[j]
      good = [m for m, n in cv2.BFMatcher().knnMatch(da, db, k=2) if m.distance < 0.8 * n.distance]
      # OpenCV keypoints put the centre of pixel 0 at 0; camjax's K puts it at 0.5.
      pa = np.float64([ka[m.queryIdx].pt for m in good]) + 0.5
      pb = np.float64([kb[m.trainIdx].pt for m in good]) + 0.5
      E, mask = cv2.findEssentialMat(pa, pb, cams.K[i], cv2.RANSAC, 0.999, 1.0)
      _, R, _, _ = cv2.recoverPose(E, pa, pb, cams.K[i], mask=mask)
      rel = cams.w2c[j] @ cams.c2w[i]  # camera i -> camera j
      errors.append(np.degrees(se3.geodesic_angle(R, rel[:3, :3])))
      wrong_convention.append(np.degrees(se3.geodesic_angle(R, rel[:3, :3].T)))
      magnitudes.append(np.degrees(se3.geodesic_angle(np.eye(3), rel[:3, :3])))
    assert np.median(errors) < 2.5, (name, errors)
    if np.median(magnitudes) > 3:  # enough rotation to tell the conventions apart
      assert np.median(wrong_convention) > 2 * np.median(errors), name
      seen += 1
  assert seen >= 2


def test_pycolmap_global_sfm_agrees_with_the_pose_file(shared_data):
  pytest.importorskip("pycolmap")
  name, frames, cams = next(clips(shared_data))
  result = g.sfm.estimate_cameras(frames, cams.K[0], mapper="global", seed=0)
  assert result.success_ratio == 1.0 and result.mean_reprojection_error < 1.0
  gt = cams.take(result.frame_indices)
  np.testing.assert_allclose(result.cameras.K, gt.K, atol=1e-6)  # intrinsics held fixed
  rel_est, rel_gt = result.cameras.relative(0), gt.relative(0)
  rot = np.degrees(se3.geodesic_angle(rel_est.w2c[:, :3, :3], rel_gt.w2c[:, :3, :3]))
  assert rot.max() < 2.0, (name, rot)
  errors = g.metrics.cameractrl2_errors(result.cameras, gt)
  assert errors["rot_err"] < 1.0
  # The same video against ANOTHER clip's cameras is clearly worse: the check discriminates.
  other = list(clips(shared_data))[1][2].take(result.frame_indices)
  assert g.metrics.cameractrl2_errors(result.cameras, other)["rot_err"] > 3 * errors["rot_err"]
