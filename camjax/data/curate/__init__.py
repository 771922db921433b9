"""CameraCtrl II data curation (REFERENCE.md section 3, paper sec. 3.2): `python -m camjax.data.curate`.

Stages, one module each: `clips` (decode, split, drop dark/static clips), `motion` (optical flow, moving-object
mask, camera-movement score), `poses` (pycolmap SfM per clip), `scale` (metric scale calibration, eq. 2, and the
RealCam-I2V variant), `balance` (trajectory balancing), `report` (per-video decisions and statistics), `cache`
(stage caches keyed by their inputs and options), and `pipeline` (the resumable end-to-end run writing shards).
"""

from camjax.data.curate.errors import CurationError, NoVideosError

__all__ = ["CurationError", "NoVideosError"]
