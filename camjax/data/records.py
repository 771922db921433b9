"""The camjax clip record: one versioned schema for all four papers, and its validation.

A record is one clip of one camera. Optional fields are None in Python and empty (zero-size) arrays in shards.
Multi-camera scenes (synchronised cameras sharing frame 0: Track2View / ReCamMaster pairs) are grouped records:
same `scene_id`, distinct `camera_index`.

| field | type / shape | notes |
|---|---|---|
| clip_id, source, scene_id | str | provenance; `source` e.g. "synthetic", "re10k", "nerf", "colmap" |
| camera_index | int | camera of a multi-camera scene (0 otherwise) |
| frames | uint8 [T, H, W, 3] | or None when `latents` are given |
| latents | float32 [T', h, w, c] | precomputed VAE latents (optional) |
| K, w2c | float64 [T, 3, 3], [T, 4, 4] | pixel intrinsics at (H, W), OpenCV world-to-camera |
| height, width | int | image size the intrinsics refer to |
| fps | float | frames per second |
| caption | str | scene content (not the camera) |
| text_embeddings | float32 [L, D] | precomputed (optional) |
| has_camera | bool | False for unlabeled clips: cameras are ignored downstream |
| depth | float32 [T, H, W] | metric depth, metres, 0 = invalid (optional) |
| tracks_xyz, tracks_visible | float32 [N, T, 3], bool [N, T] | world-space 3D point tracks (optional) |
| metric_scale | float | factor applied to make translations metric; NaN when unknown |
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from camjax.errors import CamjaxError
from camjax.geometry import CameraError, Cameras, validate_poses

SCHEMA_VERSION = 1


class DataError(CamjaxError):
  """A dataset that cannot be used as asked: no clip gives a training window (`pipeline.NoWindowError`), a dataset
  folder made from other arguments or inputs (`shards.StaleDatasetError`), a missing input folder, an unknown data
  source. Every data problem camjax names derives from it, `RecordError` included."""


class RecordError(DataError, ValueError):
  """A corrupt or inconsistent clip record; names the clip id and, for shards, where it came from."""

  def __init__(self, clip_id: str, message: str):
    self.clip_id = clip_id
    super().__init__(f"record {clip_id!r}: {message}")


@dataclasses.dataclass
class ClipRecord:
  clip_id: str
  K: np.ndarray
  w2c: np.ndarray
  height: int
  width: int
  frames: np.ndarray | None = None
  latents: np.ndarray | None = None
  fps: float = 8.0
  caption: str = ""
  text_embeddings: np.ndarray | None = None
  has_camera: bool = True
  depth: np.ndarray | None = None
  tracks_xyz: np.ndarray | None = None
  tracks_visible: np.ndarray | None = None
  metric_scale: float = float("nan")
  source: str = ""
  scene_id: str = ""
  camera_index: int = 0

  @property
  def num_frames(self) -> int:
    return int(self.w2c.shape[0])

  @property
  def cameras(self) -> Cameras:
    return Cameras(K=np.asarray(self.K, np.float64), w2c=np.asarray(self.w2c, np.float64), height=self.height,
                   width=self.width)

  def validate(self) -> "ClipRecord":
    """Checks shapes, frame counts, dtypes and camera validity; raises `RecordError` naming the clip."""
    cid = self.clip_id
    if self.frames is None and self.latents is None:
      raise RecordError(cid, "has neither frames nor latents")
    K, w2c = np.asarray(self.K), np.asarray(self.w2c)
    if K.ndim != 3 or K.shape[1:] != (3, 3) or w2c.ndim != 3 or w2c.shape[1:] != (4, 4):
      raise RecordError(cid, f"K must be [T, 3, 3] and w2c [T, 4, 4], got {K.shape} and {w2c.shape}")
    T = w2c.shape[0]
    if K.shape[0] != T:
      raise RecordError(cid, f"{K.shape[0]} intrinsics for {T} poses")
    if self.frames is not None:
      f = np.asarray(self.frames)
      if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
        raise RecordError(cid, f"frames must be uint8 [T, H, W, 3], got {f.dtype} {f.shape}")
      if f.shape[0] != T:
        raise RecordError(cid, f"{f.shape[0]} frames but {T} cameras")
      if f.shape[1:3] != (self.height, self.width):
        raise RecordError(cid, f"frames are {f.shape[1]}x{f.shape[2]} but the intrinsics refer to "
                          f"{self.height}x{self.width}")
    if self.latents is not None and np.asarray(self.latents).ndim != 4:
      raise RecordError(cid, f"latents must be [T', h, w, c], got {np.asarray(self.latents).shape}")
    if self.depth is not None:
      d = np.asarray(self.depth)
      if d.shape != (T, self.height, self.width):
        raise RecordError(cid, f"depth has shape {d.shape}, expected {(T, self.height, self.width)}")
      if not np.isfinite(d).all() or (d < 0).any():
        raise RecordError(cid, "depth has NaN, inf or negative values (0 marks invalid pixels)")
    if (self.tracks_xyz is None) != (self.tracks_visible is None):
      raise RecordError(cid, "tracks_xyz and tracks_visible go together")
    if self.tracks_xyz is not None:
      xyz, vis = np.asarray(self.tracks_xyz), np.asarray(self.tracks_visible)
      if xyz.ndim != 3 or xyz.shape[1:] != (T, 3) or vis.shape != xyz.shape[:2]:
        raise RecordError(cid, f"tracks must be xyz [N, {T}, 3] and visible [N, {T}], got {xyz.shape}, {vis.shape}")
      if not np.isfinite(xyz).all():
        raise RecordError(cid, "tracks_xyz has NaN or inf")
    if not np.isfinite(self.fps) or self.fps <= 0:
      raise RecordError(cid, f"fps must be positive, got {self.fps}")
    if self.has_camera:
      try:
        validate_poses(w2c, K, source=f"record {cid}")
      except CameraError as e:
        raise RecordError(cid, str(e)) from None
    return self


# -------------------------------------------------------------------------------- flat example <-> record
_OPTIONAL = {
    "frames": ((0, 0, 0, 3), np.uint8),
    "latents": ((0, 0, 0, 0), np.float32),
    "text_embeddings": ((0, 0), np.float32),
    "depth": ((0, 0, 0), np.float32),
    "tracks_xyz": ((0, 0, 3), np.float32),
    "tracks_visible": ((0, 0), np.bool_),
}


def to_example(record: ClipRecord) -> dict[str, Any]:
  """The flat dict stored in shards (absent optional fields as zero-size arrays)."""
  ex = {
      "schema_version": np.int32(SCHEMA_VERSION), "clip_id": record.clip_id, "source": record.source,
      "scene_id": record.scene_id, "camera_index": np.int32(record.camera_index),
      "K": np.asarray(record.K, np.float64), "w2c": np.asarray(record.w2c, np.float64),
      "height": np.int32(record.height), "width": np.int32(record.width), "fps": np.float32(record.fps),
      "caption": record.caption, "has_camera": np.bool_(record.has_camera),
      "metric_scale": np.float32(record.metric_scale),
  }
  for name, (empty, dtype) in _OPTIONAL.items():
    value = getattr(record, name)
    ex[name] = np.zeros(empty, dtype) if value is None else np.asarray(value, dtype)
  return ex


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def from_example(ex: dict[str, Any]) -> ClipRecord:
  """Inverse of `to_example` (accepts bytes for text fields, as TFDS returns them)."""
  clip_id = _text(ex.get("clip_id", "<unknown>"))
  version = int(ex.get("schema_version", -1))
  if version != SCHEMA_VERSION:
    raise RecordError(clip_id, f"schema version {version}, this camjax reads version {SCHEMA_VERSION}")
  optional = {name: None if np.asarray(ex[name]).size == 0 else np.asarray(ex[name]) for name in _OPTIONAL}
  return ClipRecord(
      clip_id=clip_id, source=_text(ex["source"]), scene_id=_text(ex["scene_id"]),
      camera_index=int(ex["camera_index"]), K=np.asarray(ex["K"]), w2c=np.asarray(ex["w2c"]),
      height=int(ex["height"]), width=int(ex["width"]), fps=float(ex["fps"]), caption=_text(ex["caption"]),
      has_camera=bool(ex["has_camera"]), metric_scale=float(ex["metric_scale"]), **optional)
