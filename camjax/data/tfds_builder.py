"""The TFDS builder of camjax shards and their feature spec (it must live in its own module, not `__main__`:
STACK.md).

Only `camjax.data.shards` imports this module (when writing), never the other way round: the features below are the
TFDS form of the record schema in `camjax.data.records` (Tensor/Text features only, so no TensorFlow is needed).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds


def features() -> tfds.features.FeaturesDict:
  """The TFDS features of one clip example (`camjax.data.records.to_example` / `from_example`)."""
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


class _LocalInfo(tfds.core.DatasetInfo):
  """DatasetInfo of a dataset that only exists locally: TFDS asks a new builder's info to look for precomputed
  metadata in its GCS bucket (`initialize_from_bucket`), which makes an empty `/tmp/tmp*tfds` folder each time even
  with GCS disabled, and camjax datasets are never there."""

  def initialize_from_bucket(self) -> None:
    return None


class CamjaxClips(tfds.core.GeneratorBasedBuilder):
  """camjax clip records (schema in camjax.data.records), written from a Python generator of examples."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "camjax clip schema version 1."}

  def __init__(self, *, examples=None, split: str = "train", description: str = "", **kwargs):
    self._examples = examples
    self._split = split
    self._description = description
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return _LocalInfo(builder=self, description=self._description, features=features())

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._examples is None:
      raise ValueError("CamjaxClips writes from examples=...: use camjax.data.shards.write_shards")
    return {self._split: self._examples()}

  def _generate_examples(self):  # required by the base class; _split_generators yields the examples directly
    raise NotImplementedError
