"""camjax.data: clip records, shards, the Grain pipeline, procedural scenes and real-data sources.

Errors: `DataError` (every data problem), `RecordError` (a corrupt record), `ClipTooShortError` (a record shorter than
the window), `NoWindowError` (no record gives a window), `StaleDatasetError` (an output folder made from other
arguments or inputs). `prepare_dataset(config, workdir)` gives the dataset a config trains on.
"""

import importlib

from camjax.data.records import SCHEMA_VERSION, ClipRecord, DataError, RecordError, from_example, to_example

# Imported on first use, so `import camjax.data` stays light (no Grain / JAX).
_LAZY = {"ClipTooShortError": "camjax.data.pipeline", "NoWindowError": "camjax.data.pipeline",
         "StaleDatasetError": "camjax.data.shards", "prepare_dataset": "camjax.data.prepare"}


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'camjax.data' has no attribute {name!r}")
