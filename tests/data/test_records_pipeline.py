"""Records, shards and the Grain pipeline: validation, round trips, resume, sharding, mixing, corrupt records."""

import dataclasses
import tempfile
import threading

import numpy as np
import pytest

from camjax import geometry as g
from camjax.data import ClipRecord, DataError, RecordError, from_example, to_example
from camjax.data import synthetic
from camjax.data.pipeline import ClipTooShortError, NoWindowError, make_pipeline
from camjax.errors import CamjaxError
from camjax.data.shards import ShardSource, write_shards


def record(i=0, T=12, H=24, W=32, **overrides):
  cams = g.preset("orbit_left+dolly_in", T, height=H, width=W)
  frames = np.random.default_rng(i).integers(0, 255, (T, H, W, 3), dtype=np.uint8)
  base = dict(clip_id=f"clip-{i}", K=cams.K, w2c=cams.w2c, height=H, width=W, frames=frames, caption=f"clip {i}",
              depth=np.full((T, H, W), 2.0, np.float32), source="test")
  base.update(overrides)
  return ClipRecord(**base)


# ------------------------------------------------------------------------------------------------- records
@pytest.mark.parametrize("change, message", [
    (lambda r: dataclasses.replace(r, frames=r.frames[:-1]), "11 frames but 12 cameras"),
    (lambda r: dataclasses.replace(r, w2c=np.where(np.arange(16).reshape(4, 4) == 3, np.nan, r.w2c)), "non-finite"),
    (lambda r: dataclasses.replace(r, frames=r.frames.astype(np.float32)), "uint8"),
    (lambda r: dataclasses.replace(r, depth=r.depth[:, :5]), "depth has shape"),
    (lambda r: dataclasses.replace(r, K=r.K[:3]), "3 intrinsics"),
    (lambda r: dataclasses.replace(r, frames=None), "neither frames nor latents"),
    (lambda r: dataclasses.replace(r, tracks_xyz=np.zeros((4, 12, 3))), "go together"),
])
def test_invalid_records_name_the_clip(change, message):
  with pytest.raises(RecordError, match=message) as info:
    change(record(3)).validate()
  assert info.value.clip_id == "clip-3"


def test_unlabeled_records_skip_camera_checks_and_examples_round_trip():
  r = record(1, has_camera=False, w2c=np.zeros((12, 4, 4)))
  r.validate()
  back = from_example(to_example(record(2)))
  np.testing.assert_array_equal(back.frames, record(2).frames)
  assert back.latents is None and back.tracks_xyz is None and back.caption == "clip 2"
  bad = to_example(record(2))
  bad["schema_version"] = np.int32(99)
  with pytest.raises(RecordError, match="schema version 99"):
    from_example(bad)


def test_shards_round_trip_and_leave_nothing_on_failure(tmp_path, monkeypatch):
  temp = tmp_path / "temp"  # the process's temporary folder while writing: nothing may be left in it
  temp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(temp))
  write_shards([record(i) for i in range(3)], tmp_path / "ok")
  assert not list(temp.iterdir())  # TFDS's GCS-metadata lookup used to leave an empty tmp*tfds folder per dataset
  source = ShardSource(tmp_path / "ok")
  got = {source[i].clip_id: source[i] for i in range(len(source))}
  np.testing.assert_array_equal(got["clip-1"].frames, record(1).frames)
  np.testing.assert_allclose(got["clip-1"].w2c, record(1).w2c)
  with pytest.raises(RecordError, match="11 frames"):
    write_shards([record(0), dataclasses.replace(record(1), frames=record(1).frames[:-1])], tmp_path / "bad")
  assert not list((tmp_path / "bad").rglob("dataset_info.json"))
  with pytest.raises(RecordError, match="no camjax dataset"):
    ShardSource(tmp_path / "bad")


# ------------------------------------------------------------------------------------------------ pipeline
def batches(ds, n):
  it = iter(ds)
  return [next(it) for _ in range(n)]


def test_windows_resize_crop_and_relative_poses():
  source = [record(i, T=20, H=30, W=60) for i in range(4)]
  batch = batches(make_pipeline(source, num_frames=5, height=16, width=16, batch_size=2, stride=(2, 3)), 1)[0]
  assert batch["frames"].shape == (2, 5, 16, 16, 3) and batch["frames"].dtype == np.uint8
  np.testing.assert_allclose(batch["w2c"][:, 0], np.broadcast_to(np.eye(4), (2, 4, 4)), atol=1e-5)
  assert set(batch["stride"]) <= {2, 3}
  # 30x60 -> resize by 16/30 to 16x32 -> crop 8 columns on the left: cx = 30 * 16/30 - 8 = 8.
  np.testing.assert_allclose(batch["K"][0, 0, 0, 2], 8.0, atol=1e-4)
  np.testing.assert_allclose(batch["K"][0, 0, 1, 2], 8.0, atol=1e-4)


def test_pipeline_keeps_tracks_and_cameras_consistent_after_crop():
  clip = synthetic.scene_records(5, num_frames=6, height=48, width=96, num_tracks=64)[0]
  from camjax.data.pipeline import resize_center_crop_window
  out = resize_center_crop_window(clip, np.arange(6), 32, 32)
  out.update(K=out["cameras"].K, w2c=out["cameras"].w2c)
  t = 0
  xyz = clip.tracks_xyz[clip.tracks_visible[:, t], t]
  # The same surface point lands on the same colour before and after the resize + crop.
  cam = xyz @ out["w2c"][t, :3, :3].T + out["w2c"][t, :3, 3]
  uv = (cam @ out["K"][t].T)[:, :2] / cam[:, 2:]
  inside = (uv >= 1).all(1) & (uv < 31).all(1)
  cam0 = xyz @ clip.w2c[t, :3, :3].T + clip.w2c[t, :3, 3]
  uv0 = (cam0 @ clip.K[t].T)[:, :2] / cam0[:, 2:]
  a = out["frames"][t][uv[inside, 1].astype(int), uv[inside, 0].astype(int)].astype(float)
  b = clip.frames[t][uv0[inside, 1].astype(int), uv0[inside, 0].astype(int)].astype(float)
  assert np.median(np.abs(a - b)) < 20


def test_resume_from_iterator_state_is_bit_exact():
  source = [record(i) for i in range(7)]
  ds = make_pipeline(source, num_frames=4, height=16, width=16, batch_size=3, stride=(1, 3), seed=5)
  it = iter(ds)
  for _ in range(4):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(5)]
  resumed = iter(make_pipeline(source, num_frames=4, height=16, width=16, batch_size=3, stride=(1, 3), seed=5))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


def test_sharding_by_process_is_disjoint_and_complete():
  source = [record(i, T=4) for i in range(10)]
  seen = []
  for p in range(2):
    ds = make_pipeline(source, num_frames=2, height=8, width=8, batch_size=1, num_epochs=1, process_index=p,
                       process_count=2, drop_remainder=False)
    seen.append([str(b["clip_id"][0]) for b in ds])
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == sorted(f"clip-{i}" for i in range(10))


def test_labeled_unlabeled_mixing_ratio():
  labeled = [record(i, T=4) for i in range(6)]
  unlabeled = [record(100 + i, T=4) for i in range(6)]
  ds = make_pipeline(labeled, unlabeled_source=unlabeled, unlabeled_ratio=(4, 1), num_frames=2, height=8, width=8,
                     batch_size=10)
  flags = np.concatenate([b["has_camera"] for b in batches(ds, 10)])
  assert flags.sum() == 80 and (~flags).sum() == 20
  ids = np.concatenate([b["clip_id"] for b in batches(ds, 10)])
  assert all(i.startswith("clip-1") and int(i[5:]) >= 100 for i in ids[~flags])


def test_corrupt_records_are_skipped_and_counted_or_raised():
  bad = dataclasses.replace(record(99), w2c=record(99).w2c * np.array([1, 1, 1, 1.0]) * 2)
  source = [record(0), bad, record(1)]
  ds = make_pipeline(source, num_frames=4, height=8, width=8, batch_size=1, num_epochs=1, drop_remainder=False)
  ids = [str(b["clip_id"][0]) for b in ds]
  assert sorted(ids) == ["clip-0", "clip-1"] and ds.pipeline_stats.skipped == ["clip-99"]
  strict = make_pipeline(source, num_frames=4, height=8, width=8, batch_size=1, num_epochs=1, on_error="raise",
                         shuffle=False)
  with pytest.raises(RecordError, match="clip-99"):
    list(strict)
  short = make_pipeline([record(0, T=3)], num_frames=4, height=8, width=8, batch_size=1, num_epochs=1,
                        on_error="raise")
  with pytest.raises(RecordError, match="cannot give a window of 4"):
    list(short)


def first_batch(ds, timeout: float = 60.0):
  """`next(iter(ds))` in a thread, so a pipeline that searches for a window forever fails the test instead of hanging
  it."""
  result = {}

  def run():
    try:
      result["batch"] = next(iter(ds))
    except BaseException as e:  # pylint: disable=broad-except  # re-raised below
      result["error"] = e

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(timeout)
  assert not thread.is_alive(), f"no batch and no error after {timeout} s: the pipeline searches for a window forever"
  if "error" in result:
    raise result["error"]
  return result["batch"]


@pytest.mark.parametrize("clip_frames, num_frames, stride", [
    (1, 4, (1, 1)),  # 1-frame clips
    (14, 17, (1, 2)),  # RE10K `_svd` clips (14 frames) with data.num_frames=17
    (14, 33, (1, 2)),
])
def test_clips_too_short_for_the_window_raise_a_named_error_instead_of_hanging(clip_frames, num_frames, stride):
  source = [record(i, T=clip_frames, H=8, W=8) for i in range(3)]
  ds = make_pipeline(source, num_frames=num_frames, height=8, width=8, batch_size=2, stride=stride, worker_count=0)
  with pytest.raises(NoWindowError) as info:
    first_batch(ds)
  message = str(info.value)
  assert isinstance(info.value, DataError) and isinstance(info.value, CamjaxError)
  assert f"window of {num_frames} frames" in message and "Too short: 3 clips" in message
  assert f"longest seen has {clip_frames}" in message and "Corrupt or unusable: 0 clips" in message
  assert "data.num_frames" in message and f"at least {num_frames} frames" in message  # what to do
  assert sorted(ds.pipeline_stats.too_short) == ["clip-0", "clip-1", "clip-2"] and ds.pipeline_stats.skipped == []


def test_all_corrupt_records_raise_a_named_error_instead_of_hanging():
  bad = [dataclasses.replace(record(i), frames=record(i).frames[:-1]) for i in range(2)]
  ds = make_pipeline(bad, num_frames=4, height=8, width=8, batch_size=1, worker_count=0)
  with pytest.raises(NoWindowError, match=r"Too short: 0 clips .* Corrupt or unusable: 2 clips \(clip-"):
    first_batch(ds)
  assert sorted(ds.pipeline_stats.skipped) == ["clip-0", "clip-1"] and ds.pipeline_stats.too_short == []


def test_a_few_short_clips_are_counted_apart_and_training_continues():
  long_ids, short_ids = [f"clip-{i}" for i in range(6)], ["clip-10", "clip-11"]
  source = [record(i, T=12) for i in range(6)] + [record(10 + i, T=2) for i in range(2)]
  ds = make_pipeline(source, num_frames=4, height=8, width=8, batch_size=2, stride=(1, 2), worker_count=0)
  it = iter(ds)
  ids = np.concatenate([next(it)["clip_id"] for _ in range(8)])  # two passes over the source
  assert set(ids) <= set(long_ids) and len(ids) == 16
  stats = ds.pipeline_stats
  assert sorted(stats.too_short) == short_ids and stats.too_short_draws >= 2  # counted apart from corrupt records
  assert stats.skipped == [] and stats.skipped_draws == 0 and stats.windows >= 16
  one_epoch = make_pipeline(source, num_frames=4, height=8, width=8, batch_size=1, num_epochs=1, worker_count=0)
  assert sorted(str(b["clip_id"][0]) for b in one_epoch) == long_ids
  assert sorted(one_epoch.pipeline_stats.too_short) == short_ids
  strict = make_pipeline([record(0, T=2)], num_frames=4, height=8, width=8, batch_size=1, on_error="raise")
  with pytest.raises(ClipTooShortError, match="2 frames cannot give a window of 4"):
    first_batch(strict)


def test_paired_multi_camera_windows_share_frames_and_the_global_frame():
  source = synthetic.SyntheticSource(3, num_cameras=3, num_frames=8, height=24, width=24, num_tracks=8)
  ds = make_pipeline(source, paired=True, num_frames=4, height=24, width=24, batch_size=2, stride=(1, 2), seed=0)
  batch = next(iter(ds))
  assert batch["src_frames"].shape == batch["tgt_frames"].shape == (2, 4, 24, 24, 3)
  np.testing.assert_array_equal(batch["src_frame_indices"], batch["tgt_frame_indices"])
  for b in range(2):
    assert batch["src_clip_id"][b].endswith("cam0") and not batch["tgt_clip_id"][b].endswith("cam0")
    assert batch["src_clip_id"][b][:16] == batch["tgt_clip_id"][b][:16]  # same scene
  # Full-length windows start at the shared frame 0: one pose (the global identity) and the same image there.
  full = next(iter(make_pipeline(source, paired=True, num_frames=8, height=24, width=24, batch_size=2, seed=0)))
  np.testing.assert_allclose(full["tgt_w2c"][:, 0], np.broadcast_to(np.eye(4), (2, 4, 4)), atol=1e-5)
  np.testing.assert_array_equal(full["src_frames"][:, 0], full["tgt_frames"][:, 0])
  assert not np.allclose(full["tgt_w2c"][:, -1], full["src_w2c"][:, -1])  # the cameras then move differently
  from camjax.data.pipeline import PairedSource
  assert len(PairedSource(source)) == 3 * 2
