"""Matplotlib figures of camera trajectories as frusta (docs, demos, evaluation reports)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from camjax.geometry.cameras import Cameras
from camjax.io import atomic_write


def frustum_lines(cameras: Cameras, size: float) -> np.ndarray:
  """Line segments `[T, 8, 2, 3]` of each camera's frustum (4 edges from the centre, 4 of the image rectangle) at
  depth `size` in world units, from the cameras' intrinsics and image size."""
  cams = cameras.numpy()
  c2w = cams.c2w
  corners_px = np.array([[0, 0], [cams.width, 0], [cams.width, cams.height], [0, cams.height]], dtype=np.float64)
  Kinv = np.linalg.inv(cams.K)  # [T, 3, 3]
  rays = np.einsum("tij,cj->tci", Kinv, np.concatenate([corners_px, np.ones((4, 1))], -1))  # [T, 4, 3]
  rays = rays / rays[..., 2:3] * size
  corners = np.einsum("tij,tcj->tci", c2w[:, :3, :3], rays) + c2w[:, None, :3, 3]
  centre = np.broadcast_to(c2w[:, None, :3, 3], corners.shape)
  edges = np.stack([centre, corners], axis=2)  # [T, 4, 2, 3]
  rect = np.stack([corners, np.roll(corners, -1, axis=1)], axis=2)
  return np.concatenate([edges, rect], axis=1)


def plot_trajectories(trajectories: Cameras | Sequence[Cameras] | Mapping[str, Cameras], path=None, *,
                      every: int = 1, frustum_size: float | None = None, title: str | None = None, dpi: int = 120):
  """Draws one or more trajectories as frusta in 3D (OpenCV world axes shown with y pointing down).

  Args:
    trajectories: `Cameras [T]`, a list of them, or a `{label: Cameras}` mapping (e.g. GT vs estimated).
    path: when given, the figure is written there as PNG (atomically) and closed.
    every: draw a frustum every `every` frames (the centre path is always drawn).
    frustum_size: frustum depth in world units (default: 8% of the largest extent, or 0.1 for static paths).
    title: figure title.
    dpi: resolution of the PNG.

  Returns:
    The matplotlib Figure (closed when `path` is given).
  """
  import matplotlib
  matplotlib.use("Agg", force=False)
  import matplotlib.pyplot as plt

  if isinstance(trajectories, Cameras):
    trajectories = {"cameras": trajectories}
  elif not isinstance(trajectories, Mapping):
    trajectories = {f"trajectory {i}": t for i, t in enumerate(trajectories)}
  centres = np.concatenate([t.numpy().centers.reshape(-1, 3) for t in trajectories.values()])
  extent = float(np.ptp(centres, axis=0).max()) if len(centres) > 1 else 0.0
  size = frustum_size if frustum_size is not None else (0.08 * extent if extent > 1e-9 else 0.1)

  fig = plt.figure(figsize=(6, 5))
  ax = fig.add_subplot(projection="3d")
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for k, (label, cams) in enumerate(trajectories.items()):
    color = colors[k % len(colors)]
    c = cams.numpy().centers.reshape(-1, 3)
    ax.plot(c[:, 0], c[:, 2], -c[:, 1], color=color, label=label, linewidth=1.5)
    sub = cams.numpy().take(np.arange(0, cams.num_frames, max(1, every)))
    for segs in frustum_lines(sub, size):
      for a, b in segs:
        ax.plot([a[0], b[0]], [a[2], b[2]], [-a[1], -b[1]], color=color, linewidth=0.7)
  half = max(extent, 2 * size) / 2 + size
  mid = (centres.min(0) + centres.max(0)) / 2
  ax.set_xlim(mid[0] - half, mid[0] + half)
  ax.set_ylim(mid[2] - half, mid[2] + half)
  ax.set_zlim(-mid[1] - half, -mid[1] + half)
  ax.set_xlabel("x (right)")
  ax.set_ylabel("z (forward)")
  ax.set_zlabel("-y (up)")
  ax.legend(loc="upper left", fontsize=8)
  if title:
    ax.set_title(title)
  if path is not None:
    with atomic_write(path, "wb") as f:
      fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)
  return fig
