"""View synchronisation by matched keypoints (camjax.eval.sync)."""

import numpy as np
import pytest

from camjax.data.synthetic import render_scene
from camjax.eval import sync


@pytest.fixture(scope="module")
def video():
  return np.asarray(render_scene(7, num_frames=5, height=64, width=64)[0].frames)


def test_a_video_matches_itself_and_not_a_flat_or_shuffled_one(video):
  same = sync.sync_scores(video, video)
  assert same["matches"] >= 20 and len(same["matches_per_frame"]) == 4
  flat = np.full_like(video, 128)
  assert sync.sync_scores(video, flat)["matches"] == 0
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 256, video.shape, dtype=np.uint8)
  assert sync.sync_scores(video, noise)["matches"] < 0.25 * same["matches"]


def test_bad_inputs_raise_named_errors(video):
  with pytest.raises(sync.SyncError, match="frame count"):
    sync.sync_scores(video, video[:3])
  with pytest.raises(sync.SyncError, match="uint8"):
    sync.matched_keypoints(video[0].astype(np.float32), video[0])
  with pytest.raises(sync.SyncError, match="skip_frames"):
    sync.sync_scores(video, video, skip_frames=5)
