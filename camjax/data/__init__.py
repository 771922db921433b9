"""camjax.data: clip records, shards, the Grain pipeline, procedural scenes and real-data sources."""

from camjax.data.records import SCHEMA_VERSION, ClipRecord, RecordError, from_example, to_example
