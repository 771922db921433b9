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


def test_clip_v_is_one_for_the_same_frames_and_lower_for_others(video):
  """CLIP-V with a stand-in encoder (per-channel means, L2-normalised; the TorchScript CLIP of
  `camjax.eval.learned` has the same call convention)."""
  def encoder(frames):
    f = np.asarray(frames, np.float64).mean(axis=(1, 2)) + 1.0
    return f / np.linalg.norm(f, axis=-1, keepdims=True)

  assert sync.clip_v(video, video, encoder) == pytest.approx(1.0)
  tinted = video.copy()
  tinted[..., 0] = 255
  assert sync.clip_v(video, tinted, encoder) < 0.99
  with pytest.raises(sync.SyncError, match="same frame count"):
    sync.clip_v(video, video[:-1], encoder)
