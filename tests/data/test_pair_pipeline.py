"""Track2View pair datasets on disk: written once (atomically, keyed by provenance, reused / rebuilt), read back by
`PairSource` with named errors, and batched by `make_pair_pipeline` (shapes, process sharding, resume, checkpoint
state)."""

import json

import ml_collections
import numpy as np
import pytest

from camjax.data import pairs
from camjax.data.records import DataError, RecordError

SEED, NUM, T, S, N = 3, 3, 5, 16, 8
KWARGS = dict(seed=SEED, num_frames=T, height=S, width=S, num_queries=N)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return pairs.write_pair_dataset(tmp_path_factory.mktemp("pairs") / "ds", NUM, **KWARGS)


@pytest.fixture(scope="module")
def source(folder):
  return pairs.PairSource(folder)


def _config(**data):
  c = ml_collections.ConfigDict(dict(seed=SEED, data=dict(num_scenes=NUM, num_frames=T, render_size=S, num_queries=N)))
  c.data.update(data)
  return c


def _batches(source, count, **kwargs):
  it = iter(pairs.make_pair_pipeline(source, **kwargs))
  return [next(it) for _ in range(count)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ------------------------------------------------------------------------------------------------ writing
def test_written_pairs_are_paired_examples(folder, source):
  files = sorted(p.name for p in folder.iterdir())
  assert files == ["pair_000000.npz", "pair_000001.npz", "pair_000002.npz", "pairs.json"]
  assert not [p for p in folder.parent.iterdir() if p.name.startswith(".camjax-")]  # no temporary folder left
  info = json.loads((folder / "pairs.json").read_text())
  assert info["count"] == NUM and info["format"] == pairs.PAIRS_FORMAT
  assert info["arguments"] == pairs.pair_provenance(NUM, **KWARGS)["arguments"]
  assert len(source) == NUM
  for i in (0, 2):
    want, got = pairs.paired_example(SEED + i, num_frames=T, height=S, width=S, num_queries=N), source[i]
    assert got.keys() == want.keys()
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
      assert got[k].dtype == np.asarray(want[k]).dtype, k


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
  real = pairs.paired_example

  def fail_on_second(seed, **kwargs):
    if seed == SEED + 1:
      raise KeyboardInterrupt
    return real(seed, **kwargs)

  monkeypatch.setattr(pairs, "paired_example", fail_on_second)
  with pytest.raises(KeyboardInterrupt):
    pairs.write_pair_dataset(tmp_path / "ds", NUM, **KWARGS)
  assert list(tmp_path.iterdir()) == []


def test_write_refuses_a_folder_with_other_files(tmp_path):
  (tmp_path / "ds").mkdir()
  (tmp_path / "ds" / "notes.txt").write_text("mine")
  with pytest.raises(DataError, match="notes.txt"):
    pairs.write_pair_dataset(tmp_path / "ds", 1, **KWARGS)
  assert (tmp_path / "ds" / "notes.txt").read_text() == "mine"


def test_prepare_pairs_reuses_and_rebuilds(tmp_path, monkeypatch):
  writes = []
  real = pairs.write_pair_dataset
  monkeypatch.setattr(pairs, "write_pair_dataset", lambda out, *a, **k: writes.append(out.name) or real(out, *a, **k))

  out = pairs.prepare_pairs(_config(), tmp_path)
  assert out.parent == tmp_path / "data" and out.name.startswith(f"pairs_{NUM}x{T}f{S}px_q{N}_seed{SEED}_")
  assert len(writes) == 1 and len(pairs.PairSource(out)) == NUM
  assert pairs.prepare_pairs(_config(), tmp_path) == out and len(writes) == 1  # unchanged: reused

  other = pairs.prepare_pairs(_config(num_queries=4), tmp_path)  # another argument: its own folder, written
  assert other != out and len(writes) == 2 and pairs.PairSource(other).arguments["num_queries"] == 4

  info = json.loads((out / "pairs.json").read_text())  # a stale folder under the name (hand-edited): rebuilt
  info["arguments"]["seed"] = SEED + 1
  (out / "pairs.json").write_text(json.dumps(info))
  assert pairs.prepare_pairs(_config(), tmp_path) == out and len(writes) == 3
  assert pairs.PairSource(out).arguments["seed"] == SEED

  (out / "pairs.json").unlink()  # no pairs.json: never reused
  assert pairs.prepare_pairs(_config(), tmp_path) == out and len(writes) == 4
  (out / "pair_000001.npz").unlink()  # a pair file missing: rebuilt
  assert pairs.prepare_pairs(_config(), tmp_path) == out and len(writes) == 5
  assert (out / "pair_000001.npz").is_file()
  assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted([out.name, other.name])


def test_prepare_pairs_needs_num_queries(tmp_path):
  c = _config()
  c.data.num_queries = None
  with pytest.raises(DataError, match="num_queries"):
    pairs.prepare_pairs(c, tmp_path)


# ------------------------------------------------------------------------------------------------ reading
def test_pair_source_named_errors(folder, tmp_path):
  with pytest.raises(DataError, match="pairs.json"):
    pairs.PairSource(tmp_path)
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "pairs.json").write_text((folder / "pairs.json").read_text())
  (broken / "pair_000000.npz").write_bytes(b"not a zip file")
  bad = {**pairs.PairSource(folder)[1], "src_xy": np.zeros((N, T, 3), np.float32)}
  np.savez(broken / "pair_000001.npz", **bad)
  src = pairs.PairSource(broken)
  with pytest.raises(RecordError, match="pair_000000.npz"):
    src[0]
  with pytest.raises(RecordError, match=r"pair_000001.npz.*src_xy"):
    src[1]
  with pytest.raises(RecordError, match="pair_000002.npz.*missing"):
    src[2]
  with pytest.raises(IndexError):
    src[3]


# ------------------------------------------------------------------------------------------------ batches
def test_batch_keys_shapes_dtypes(source):
  batch, = _batches(source, 1, batch_size=2, process_index=0, process_count=1)
  B = 2
  want = {"src_frames": ((B, T, S, S, 3), np.uint8), "src_K": ((B, T, 3, 3), np.float32),
          "src_w2c": ((B, T, 4, 4), np.float32), "src_xy": ((B, N, T, 2), np.float32),
          "src_depth": ((B, N, T), np.float32), "src_valid": ((B, N, T), np.bool_)}
  want.update({"tgt" + k[3:]: v for k, v in want.items()})
  want.update(points_world=((B, N, T, 3), np.float32), query_frame=((B, N), np.int32), fps=((B,), np.float32))
  assert set(batch) == set(want) | {"caption", "clip_id"}
  for k, (shape, dtype) in want.items():
    assert batch[k].shape == shape and batch[k].dtype == dtype, (k, batch[k].shape, batch[k].dtype)
  for k in ("caption", "clip_id"):
    assert batch[k].shape == (B,) and batch[k].dtype.kind == "U", k
  assert len(set(batch["clip_id"])) == B and all(c.startswith("synthetic-pair-") for c in batch["clip_id"])


def test_shuffle_is_a_deterministic_permutation_per_epoch(source):
  ids = lambda **k: [str(b["clip_id"][0]) for b in _batches(source, 2 * NUM, batch_size=1, num_epochs=2,
                                                            process_index=0, process_count=1, **k)]
  stream = ids(seed=1)
  assert stream == ids(seed=1)
  assert sorted(stream[:NUM]) == sorted(stream[NUM:]) == [f"synthetic-pair-{SEED + i:06d}" for i in range(NUM)]
  assert ids(shuffle=False) == [f"synthetic-pair-{SEED + i:06d}" for i in range(NUM)] * 2
  with pytest.raises(StopIteration):
    _batches(source, NUM + 1, batch_size=1, num_epochs=1, process_index=0, process_count=1)


def test_processes_get_disjoint_halves_of_the_global_batch(source):
  whole = _batches(source, 3, batch_size=2, seed=5, process_index=0, process_count=1)
  parts = [_batches(source, 3, batch_size=1, seed=5, process_index=p, process_count=2) for p in (0, 1)]
  for step, batch in enumerate(whole):
    a, b = parts[0][step], parts[1][step]
    if step == 0:  # the first two pairs of an epoch's permutation: distinct scenes
      assert a["clip_id"][0] != b["clip_id"][0]
    _assert_batches_equal({k: np.concatenate([a[k], b[k]]) for k in a}, batch)


def test_start_index_resumes_the_stream(source):
  stream = _batches(source, 5, batch_size=2, seed=2, num_queries=4, process_index=0, process_count=1)
  resumed = _batches(source, 3, batch_size=2, seed=2, num_queries=4, start_index=2 * 2, process_index=0,
                     process_count=1)
  for a, b in zip(stream[2:], resumed):
    _assert_batches_equal(a, b)
  half = _batches(source, 3, batch_size=1, seed=2, num_queries=4, start_index=2 * 2, process_index=1,
                  process_count=2)  # another process count resumes at the same global batch
  for a, b in zip(stream[2:], half):
    _assert_batches_equal({k: v[1:] for k, v in a.items()}, b)


def test_select_queries_keeps_the_split(source):
  batch, = _batches(source, 1, batch_size=3, shuffle=False, num_queries=4, process_index=0, process_count=1)
  assert batch["src_xy"].shape == (3, 4, T, 2)
  np.testing.assert_array_equal(batch["query_frame"], np.tile([0, 0, T - 1, T - 1], (3, 1)))
  for i in range(3):  # the kept tracks are stored tracks, in stored order
    stored = source[i]
    rows = [int(np.flatnonzero((stored["src_xy"] == xy).all(axis=(1, 2)))[0]) for xy in batch["src_xy"][i]]
    assert rows == sorted(rows)
    np.testing.assert_array_equal(batch["tgt_depth"][i], stored["tgt_depth"][rows])
  with pytest.raises(DataError, match="num_queries"):
    pairs.make_pair_pipeline(source, batch_size=1, num_queries=N + 2, process_index=0, process_count=1)


def test_iterator_state_round_trip(source):
  make = lambda: iter(pairs.make_pair_pipeline(source, batch_size=2, seed=7, num_queries=4, process_index=1,
                                               process_count=2))
  it = make()
  for _ in range(3):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # what grain.checkpoint.CheckpointSave writes (JSON)
  expected = [next(it) for _ in range(2)]
  restored = make()
  next(restored)
  restored.set_state(state)
  for want in expected:
    _assert_batches_equal(next(restored), want)


def test_orbax_checkpoint_round_trip(source, tmp_path):
  """The iterator saved and restored as the main job does (`checkpoints.save`: `grain.checkpoint.CheckpointSave`)."""
  import grain
  import orbax.checkpoint as ocp

  make = lambda: iter(pairs.make_pair_pipeline(source, batch_size=2, seed=4, process_index=0, process_count=1))
  it = make()
  next(it)
  mngr = ocp.CheckpointManager(tmp_path / "checkpoints")
  mngr.save(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  want = next(it)
  restored = make()
  mngr.restore(1, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(restored)))
  _assert_batches_equal(next(restored), want)
