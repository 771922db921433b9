"""Shared test fixtures: the real data in ../shared/data (skipped with a reason where it is absent) and a tiny random
metric Depth Anything checkpoint."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("CAMJAX_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data not found at {SHARED_DATA} (set CAMJAX_SHARED_DATA)")
  return SHARED_DATA


@pytest.fixture(scope="module")
def tiny_depth_anything(tmp_path_factory):
  """A tiny random metric Depth Anything checkpoint (DINOv2 backbone of width 32, 2 layers) saved with its DPT image
  processor at a 56-pixel input side: `(folder, model, processor)` (tests/test_depth.py,
  tests/test_realcam_re10k.py)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

  backbone = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, image_size=56, patch_size=14, out_indices=[1, 2],
                                       reshape_hidden_states=False)
  config = transformers.DepthAnythingConfig(
      backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[16, 32], reassemble_factors=[2, 1],
      fusion_hidden_size=16, head_hidden_size=8, depth_estimation_type="metric", max_depth=20, initializer_range=0.1)
  torch.manual_seed(0)
  model = transformers.DepthAnythingForDepthEstimation(config).eval()
  processor = DPTImageProcessorPil(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                   image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], resample=3)
  path = tmp_path_factory.mktemp("depth_anything") / "tiny-metric"
  model.save_pretrained(path)
  processor.save_pretrained(path)
  return path, model, processor
