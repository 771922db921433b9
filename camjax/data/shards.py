"""Shards: TFDS datasets in ArrayRecord format (Tensor/Text features only, so no TensorFlow is needed), read back by
Grain through `tfds.data_source`.

`write_shards(records, out_dir)` builds `<out_dir>/camjax_clips/<version>/`; TFDS writes into an `incomplete.*`
folder and renames it when done, so an interrupted write leaves no dataset behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from camjax.data.records import ClipRecord, RecordError, from_example, to_example

DATASET_NAME = "camjax_clips"


def _features():
  import tensorflow_datasets as tfds

  T = tfds.features.Tensor
  return tfds.features.FeaturesDict({
      "schema_version": T(shape=(), dtype=np.int32),
      "clip_id": tfds.features.Text(),
      "source": tfds.features.Text(),
      "scene_id": tfds.features.Text(),
      "camera_index": T(shape=(), dtype=np.int32),
      "K": T(shape=(None, 3, 3), dtype=np.float64),
      "w2c": T(shape=(None, 4, 4), dtype=np.float64),
      "height": T(shape=(), dtype=np.int32),
      "width": T(shape=(), dtype=np.int32),
      "fps": T(shape=(), dtype=np.float32),
      "caption": tfds.features.Text(),
      "has_camera": T(shape=(), dtype=np.bool_),
      "metric_scale": T(shape=(), dtype=np.float32),
      "frames": T(shape=(None, None, None, 3), dtype=np.uint8, encoding="zlib"),
      "latents": T(shape=(None, None, None, None), dtype=np.float32, encoding="zlib"),
      "text_embeddings": T(shape=(None, None), dtype=np.float32, encoding="zlib"),
      "depth": T(shape=(None, None, None), dtype=np.float32, encoding="zlib"),
      "tracks_xyz": T(shape=(None, None, 3), dtype=np.float32, encoding="zlib"),
      "tracks_visible": T(shape=(None, None), dtype=np.bool_, encoding="zlib"),
  })


def write_shards(records: Iterable[ClipRecord] | Callable[[], Iterable[ClipRecord]], out_dir, *,
                 split: str = "train", description: str = "") -> Path:
  """Validates and writes records as a TFDS ArrayRecord dataset; returns the dataset folder.

  Raises:
    RecordError: the first invalid record (nothing is left behind).
  """
  from camjax.data import tfds_builder

  def examples():
    seen = set()
    for record in (records() if callable(records) else records):
      record.validate()
      if record.clip_id in seen:
        raise RecordError(record.clip_id, "duplicate clip id")
      seen.add(record.clip_id)
      yield record.clip_id, to_example(record)

  builder = tfds_builder.CamjaxClips(data_dir=str(out_dir), examples=examples, split=split,
                                     description=description)
  builder.download_and_prepare(file_format="array_record")
  return Path(builder.data_dir)


def dataset_dir(path) -> Path:
  """The versioned dataset folder under `path` (a data_dir, its `camjax_clips` folder, or the version folder).

  Raises:
    RecordError: no written dataset there.
  """
  path = Path(path)
  for candidate in (path, path / DATASET_NAME):
    if (candidate / "dataset_info.json").is_file():
      return candidate
    versions = sorted(p for p in candidate.glob("*") if (p / "dataset_info.json").is_file()) if candidate.is_dir() else []
    if versions:
      return versions[-1]
  raise RecordError("<dataset>", f"no camjax dataset at {path} (expected {DATASET_NAME}/<version>/dataset_info.json)")


class ShardSource:
  """Random-access source of `ClipRecord`s over a written dataset (what Grain's `MapDataset.source` takes)."""

  def __init__(self, data_dir, split: str = "train"):
    import tensorflow_datasets as tfds

    self.data_dir = dataset_dir(data_dir)
    try:
      self._source = tfds.builder_from_directory(str(self.data_dir)).as_data_source(split=split)
    except Exception as e:  # TFDS raises several error types for partial / foreign datasets
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise RecordError("<dataset>", f"cannot open the dataset at {self.data_dir}: {first_line}") from None

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> ClipRecord:
    try:
      ex = self._source[index]
    except Exception as e:  # corrupt ArrayRecord chunk or undecodable example
      raise RecordError(f"#{index}", f"cannot decode example {index} of {self.data_dir} ({e})") from None
    return from_example(ex)
