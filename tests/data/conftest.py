"""Fixtures shared by the data tests."""

import numpy as np
import pytest


def _tiny_re10k(root, clip: str, num_frames: int = 3, height: int = 18, width: int = 32):
  """A RealEstate10K clip in the frame-folder layout (`<clip>.txt` beside `<clip>/` of PNGs): identity rotations,
  the camera moving 0.1 along x per frame, 16:9 frames."""
  from PIL import Image

  root.mkdir(parents=True, exist_ok=True)
  rows = [f"{i * 125000} 0.5 0.9 0.5 0.5 0 0 1 0 0 {0.1 * i} 0 1 0 0 0 0 1 0" for i in range(num_frames)]
  (root / f"{clip}.txt").write_text("\n".join([f"https://example.com/{clip}"] + rows) + "\n")
  (root / clip).mkdir()
  rng = np.random.default_rng(len(clip) + num_frames)
  for i in range(num_frames):
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / clip / f"{i:03d}.png")



@pytest.fixture
def tiny_re10k():
  """`tiny_re10k(root, clip, num_frames=3, height=18, width=32)` writes a tiny RealEstate10K clip (see `_tiny_re10k`)."""
  return _tiny_re10k
