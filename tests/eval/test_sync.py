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


def test_the_scores_of_a_frame_pair_share_its_matches_and_nothing_stale(video):
  """The three scores of a frame pair compute its SIFT matches once (cached by the frames' bytes and the options);
  a frame changed in one pixel, or other options, is a new entry, and a cached result cannot be modified."""
  a, b = video[0], video[2]
  first = sync._ratio_matches(a, b, 0.75, 256)  # pylint: disable=protected-access
  assert sync._ratio_matches(a.copy(), b.copy(), 0.75, 256) is first  # pylint: disable=protected-access
  fresh = sync._compute_ratio_matches(a, b, 0.75, 256)  # pylint: disable=protected-access
  np.testing.assert_array_equal(first[0], fresh[0])
  np.testing.assert_array_equal(first[1], fresh[1])
  assert len(first[0]) > 10
  with pytest.raises(ValueError, match="read-only"):
    first[0][0, 0] = 0
  changed = a.copy()
  changed[10, 10, 0] ^= 0xFF
  assert sync._ratio_matches(changed, b, 0.75, 256) is not first  # pylint: disable=protected-access
  assert sync._ratio_matches(a, b, 0.6, 256) is not first  # pylint: disable=protected-access


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
