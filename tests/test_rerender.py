"""`python -m camjax.rerender`: a trained (tiny) Track2View run re-renders a real RealEstate10K clip along a preset
trajectory, end to end; bad requests get named errors."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from camjax import rerender, train

ROOT = Path(__file__).resolve().parents[1]
CLIP = "0bf152ef84195293_svdxt"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  spec = importlib.util.spec_from_file_location("track2view_config", ROOT / "configs" / "track2view.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("test")
  config.data.update(render_size=64, height=64, width=64, num_queries=32)
  config.train.steps = 1
  config.eval.at_end = False
  workdir = tmp_path_factory.mktemp("t2v")
  train.train_and_evaluate(config, workdir)
  return workdir


def test_rerenders_a_real_clip_along_a_preset(run, shared_data, tmp_path):
  clips = shared_data / "re10k_clips"
  out = tmp_path / "out"
  code = rerender.main(["--workdir", str(run), "--video", str(clips / "videos" / f"{CLIP}.mp4"),
                        "--cameras", str(clips / "pose_files" / f"{CLIP}.txt"), "--trajectory", "orbit_left:15",
                        "--stride", "4", "--out", str(out)])
  assert code == 0
  for name in ("source.mp4", "generated.mp4", "side_by_side.mp4", "target_cameras.txt", "source_cameras.txt",
               "frusta.png", "tracks.npz", "summary.json"):
    assert (out / name).stat().st_size > 0, name
  summary = json.loads((out / "summary.json").read_text())
  assert summary["frames"] == 5 and summary["depth"].startswith("triangulated")
  assert summary["source_valid_fraction"] > 0.3 and summary["target_valid_fraction"] > 0.2
  tracks = np.load(out / "tracks.npz")
  # Frame 0 is shared: the target tracks start where the source tracks are.
  both = tracks["src_valid"][:, 0] & tracks["tgt_valid"][:, 0]
  assert both.sum() >= 5
  np.testing.assert_allclose(tracks["tgt_xy"][both, 0], tracks["src_xy"][both, 0], atol=1.5)
  from camjax.geometry import read_re10k
  src = read_re10k(out / "source_cameras.txt")
  tgt = read_re10k(out / "target_cameras.txt")
  np.testing.assert_allclose(tgt.w2c[0], src.w2c[0], atol=1e-5)
  assert not np.allclose(tgt.w2c[-1], src.w2c[-1], atol=1e-3)
  assert not list(tmp_path.glob(".out.tmp-*"))


def test_bad_requests_are_named(run, tmp_path):
  with pytest.raises(rerender.RerenderError, match="not found"):
    rerender.read_video(tmp_path / "missing.mp4")
  frames = np.zeros((3, 16, 16, 3), np.uint8)
  from camjax.geometry import Cameras, intrinsics
  cams = Cameras(K=np.tile(intrinsics(10.0, 10.0, 8.0, 8.0), (3, 1, 1)), w2c=np.tile(np.eye(4), (3, 1, 1)),
                 height=16, width=16)
  with pytest.raises(rerender.RerenderError, match="window needs 5 frames"):
    rerender.source_window(frames, cams, num_frames=5, height=16, width=16)
  with pytest.raises(rerender.RerenderError, match="config.json"):
    rerender.checkpoints_load(tmp_path, None)
  with pytest.raises(rerender.RerenderError, match="trajectory"):
    rerender.target_cameras("warp_speed", cams, scale=1.0)
