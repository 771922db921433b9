"""The main job's dataset cache: keyed by what produced it, process 0 writes, named errors for bad configs."""

import importlib.util
from pathlib import Path

import jax
import pytest
from jax.experimental import multihost_utils

from camjax.data import DataError, prepare_dataset
from camjax.data.shards import PROVENANCE_FILE, ShardSource

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "cameractrl2.py"


def tiny_config(**data):
  """`configs/cameractrl2.py:test` (loaded from its file: `configs` is not a package) with `data` fields changed."""
  spec = importlib.util.spec_from_file_location("cameractrl2_config_for_tests", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("test")
  config.data.update(num_scenes=1, render_size=8, num_frames=2, **data)
  return config


def clip_ids(dataset) -> list[str]:
  source = ShardSource(dataset)
  return sorted(source[i].clip_id for i in range(len(source)))


def test_re10k_ingest_is_keyed_by_the_input_files_not_the_folder_name(tmp_path, tiny_re10k):
  workdir = tmp_path / "work"
  one, other = tmp_path / "x" / "clips", tmp_path / "y" / "clips"  # the same basename
  tiny_re10k(one, "a")
  tiny_re10k(other, "b")
  tiny_re10k(other, "c")
  first = prepare_dataset(tiny_config(source="re10k", path=str(one)), workdir)
  assert clip_ids(first) == ["re10k-a"]
  second = prepare_dataset(tiny_config(source="re10k", path=str(other)), workdir)
  assert second != first and clip_ids(second) == ["re10k-b", "re10k-c"]  # not the old ingest of another `clips`
  provenance = (first.parents[1] / PROVENANCE_FILE).read_text()
  assert str(one.resolve()) in provenance and '"a/000.png"' in provenance

  assert prepare_dataset(tiny_config(source="re10k", path=str(one)), workdir) == first  # unchanged: reused
  assert (first.parents[1] / PROVENANCE_FILE).read_text() == provenance
  tiny_re10k(one, "d")  # changed in place: ingested again
  changed = prepare_dataset(tiny_config(source="re10k", path=str(one)), workdir)
  assert changed not in (first, second) and clip_ids(changed) == ["re10k-a", "re10k-d"]


def test_synthetic_dataset_is_keyed_by_its_producing_arguments(tmp_path):
  first = prepare_dataset(tiny_config(), tmp_path)
  source = ShardSource(first)
  assert len(source) == 1 and source[0].frames.shape == (2, 8, 8, 3) and source[0].tracks_xyz is None
  assert first.parents[1].parent == tmp_path / "data" and first.parents[1].name.startswith("synthetic_1x2f8px_seed0_")
  assert '"renderer_version"' in (first.parents[1] / PROVENANCE_FILE).read_text()
  assert prepare_dataset(tiny_config(), tmp_path) == first
  assert prepare_dataset(tiny_config(render_frames=3), tmp_path) != first
  seeded = tiny_config()
  seeded.seed = 1
  assert prepare_dataset(seeded, tmp_path) != first


def test_shards_source_reads_the_dataset_at_data_path(tmp_path):
  written = prepare_dataset(tiny_config(), tmp_path / "work")
  assert prepare_dataset(tiny_config(source="shards", path=str(written.parents[1])), tmp_path) == written


@pytest.mark.parametrize("data, message", [
    (dict(source="re10k", path=""), "data.path '' is not a folder"),
    (dict(source="re10k", path="/no/such/folder"), "data.path '/no/such/folder' is not a folder"),
    (dict(source="shards", path="/no/such/folder"), "data.path '/no/such/folder' does not exist"),
    (dict(source="webvid"), "data.source 'webvid' is not one of synthetic, re10k, shards"),
])
def test_bad_data_configs_are_named_errors(tmp_path, data, message):
  with pytest.raises(DataError, match=message):
    prepare_dataset(tiny_config(**data), tmp_path)
  assert not (tmp_path / "data").exists()


def test_process_zero_writes_and_every_process_waits_at_the_barrier(tmp_path, monkeypatch):
  barriers = []
  index = [1]
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: index[0])
  monkeypatch.setattr(multihost_utils, "sync_global_devices", barriers.append)
  with pytest.raises(DataError, match="process 1: no dataset at .* processes disagree"):
    prepare_dataset(tiny_config(), tmp_path)  # process 0 never wrote it (another host's inputs): no silent wait
  assert len(barriers) == 1 and not (tmp_path / "data").exists()  # process 1 waited and wrote nothing
  index[0] = 0
  written = prepare_dataset(tiny_config(), tmp_path)
  assert len(barriers) == 2 and len(ShardSource(written)) == 1
  index[0] = 1
  assert prepare_dataset(tiny_config(), tmp_path) == written and len(barriers) == 3
  assert len(set(barriers)) == 1  # the same barrier name on every process


def test_a_failed_write_on_process_zero_still_releases_the_barrier(tmp_path, monkeypatch):
  barriers = []
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(multihost_utils, "sync_global_devices", barriers.append)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(DataError, match="no RealEstate10K pose files"):
    prepare_dataset(tiny_config(source="re10k", path=str(empty)), tmp_path / "work")
  assert len(barriers) == 1  # the other processes are not left waiting
  assert not list((tmp_path / "work").rglob("*.json"))  # nothing half-written
