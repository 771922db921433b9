"""Procedurally rendered clips with everything the curation stages should recover: cameras (metres), metric depth and
the moving objects' pixels (`camjax.data.synthetic`'s renderer, which does not return surface ids itself)."""

from __future__ import annotations

import dataclasses

import numpy as np

from camjax import geometry as g
from camjax.data import synthetic
from camjax.geometry import se3


@dataclasses.dataclass
class GroundTruthClip:
  """A rendered clip: `frames uint8 [T, H, W, 3]`, `depth float32 [T, H, W]` (metres, 0 = sky), `cameras`
  (metric, scene world frame), `moving bool [T, H, W]` (pixels showing an object that moves), `fps`."""

  frames: np.ndarray
  depth: np.ndarray
  cameras: g.Cameras
  moving: np.ndarray
  fps: float
  trajectory: str

  def foreground_target(self) -> np.ndarray:
    """`bool [T-1, H, W]`: the pixels of frame t a moving object covers in frame t or t+1 (where the flow of pair
    (t, t+1) is inconsistent with the camera)."""
    return self.moving[:-1] | self.moving[1:]


def render_clip(seed: int, trajectory: str, *, num_frames: int = 12, height: int = 96, width: int = 128,
                fps: float = 8.0, moving: bool = True) -> GroundTruthClip:
  """Renders `synthetic.random_scene(seed)` along a trajectory preset (e.g. "truck_left:1.0", "static").

  Args:
    seed: scene seed.
    trajectory: `camjax.geometry.preset` name (with magnitude).
    num_frames, height, width, fps: clip size and rate.
    moving: keep the scene's moving objects (False: every object is made static, for a static-scene clip).
  """
  rng = np.random.default_rng(seed)
  scene = synthetic.random_scene(rng)
  if not moving:
    scene = dataclasses.replace(scene, objects=tuple(dataclasses.replace(o, motion="static", spin=0.0)
                                                     for o in scene.objects))
  moving_ids = [synthetic.FIRST_OBJECT + k for k, o in enumerate(scene.objects)
                if o.motion != "static" or abs(o.spin) > 0.5]
  f = synthetic.focal_for(height, width)
  K = g.intrinsics(f, f, width / 2, height / 2)
  rel = g.preset(trajectory, num_frames, height=height, width=width, K=K, radius=3.5)
  c2w = synthetic.start_pose()[None] @ rel.c2w
  cams = g.Cameras(K=rel.K, w2c=se3.invert(c2w), height=height, width=width)
  times = np.arange(num_frames) / fps
  rendered = [synthetic.render_frame(scene, t, cams.K[i], cams.w2c[i], height, width) for i, t in enumerate(times)]
  return GroundTruthClip(
      frames=np.stack([np.round(r.rgb * 255) for r in rendered]).astype(np.uint8),
      depth=np.stack([r.depth for r in rendered]).astype(np.float32), cameras=cams,
      moving=np.stack([np.isin(r.surface, moving_ids) for r in rendered]), fps=fps, trajectory=trajectory)
