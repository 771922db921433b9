"""The TFDS builder of camjax shards (it must live in its own module, not `__main__`: STACK.md)."""

from __future__ import annotations

import tensorflow_datasets as tfds


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
    from camjax.data.shards import _features

    return tfds.core.DatasetInfo(builder=self, description=self._description, features=_features())

  def _split_generators(self, dl_manager):
    del dl_manager
    if self._examples is None:
      raise ValueError("CamjaxClips writes from examples=...: use camjax.data.shards.write_shards")
    return {self._split: self._examples()}

  def _generate_examples(self):  # required by the base class; _split_generators yields the examples directly
    raise NotImplementedError
