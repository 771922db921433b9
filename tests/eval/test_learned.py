"""Learned-metric loaders: a clear EvalError without weights; with a (tiny, test-made) TorchScript file of the
public network's calling convention, the inputs reach the network in the documented layout and range."""

import numpy as np
import pytest

from camjax.eval import EvalError, appearance_consistency
from camjax.eval import learned


@pytest.mark.parametrize("kind", sorted(learned.LOADERS))
def test_absent_weights_raise_a_named_error(kind, tmp_path):
  with pytest.raises(EvalError, match="not found.*downloads no weights"):
    learned.load(kind, tmp_path / "missing.pt")
  with pytest.raises(EvalError, match="not found"):
    learned.LOADERS[kind].from_file(None)
  bad = tmp_path / "garbage.pt"
  bad.write_bytes(b"not a torchscript archive")
  pytest.importorskip("torch")
  with pytest.raises(EvalError, match="not a loadable TorchScript"):
    learned.load(kind, bad)
  with pytest.raises(EvalError, match="unknown learned metric"):
    learned.load("psnr", bad)


@pytest.fixture
def scripted(tmp_path):
  torch = pytest.importorskip("torch")

  class I3D(torch.nn.Module):
    def forward(self, x, rescale: bool = False, resize: bool = False, return_features: bool = False):
      assert rescale and resize and return_features
      return x.mean(dim=(2, 3, 4))  # [B, 3]: per-channel mean of the [0, 1] input

  class Inception(torch.nn.Module):
    def forward(self, x, return_features: bool = False):
      return x.float().mean(dim=(2, 3))  # uint8-valued pixels

  class Clip(torch.nn.Module):
    def forward(self, x):
      return x

    @torch.jit.export
    def encode_image(self, x):
      return x.mean(dim=(2, 3))

  class Lpips(torch.nn.Module):
    def forward(self, a, b):
      return ((a - b) ** 2).mean(dim=(1, 2, 3), keepdim=True)

  paths = {}
  for name, module in {"fvd": I3D(), "fid": Inception(), "clip": Clip(), "lpips": Lpips()}.items():
    paths[name] = tmp_path / f"{name}.pt"
    torch.jit.script(module).save(str(paths[name]))
  return paths


def test_torchscript_networks_get_the_documented_inputs(scripted):
  rng = np.random.default_rng(0)
  videos = rng.integers(0, 256, (3, 4, 8, 8, 3), dtype=np.uint8)
  i3d = learned.load("fvd", scripted["fvd"])
  np.testing.assert_allclose(i3d.features(videos, batch_size=2), videos.mean(axis=(1, 2, 3)) / 255.0, rtol=1e-5)
  assert i3d.fvd(videos, videos) == pytest.approx(0.0, abs=1e-9)
  with pytest.raises(EvalError, match="uint8 videos"):
    i3d.features(videos[0])

  inception = learned.load("fid", scripted["fid"])
  images = videos.reshape(-1, 8, 8, 3)
  np.testing.assert_allclose(inception.features(images), images.mean(axis=(1, 2)), rtol=1e-5)
  shifted = np.clip(images.astype(int) + 10, 0, 255).astype(np.uint8)
  assert inception.fid(images, shifted) > 1.0

  lp = learned.load("lpips", scripted["lpips"])
  black, white = np.zeros((2, 8, 8, 3), np.uint8), np.full((2, 8, 8, 3), 255, np.uint8)
  np.testing.assert_allclose(lp.distance(black, white), [4.0, 4.0], rtol=1e-6)  # [-1, 1]: (1 - (-1))^2
  np.testing.assert_allclose(lp.distance(white, white), [0.0, 0.0], atol=1e-7)

  clip = learned.load("clip", scripted["clip"])
  f = clip.features(images[:2])
  assert f.shape == (2, 3)
  np.testing.assert_allclose(np.linalg.norm(f, axis=-1), 1.0, rtol=1e-6)
  # A constant grey image after CLIP normalisation: channel values (0.5 - mean) / std.
  grey = np.full((1, 30, 40, 3), 128, np.uint8)
  expect = (128 / 255.0 - np.array(learned.CLIP_MEAN)) / np.array(learned.CLIP_STD)
  np.testing.assert_allclose(clip.features(grey)[0], expect / np.linalg.norm(expect), atol=1e-4)
  assert clip.frame_consistency(np.repeat(grey, 3, axis=0)) == pytest.approx(1.0)
  # The CLIP encoder plugs into appearance consistency (CameraCtrl II's definition).
  red = np.zeros((2, 16, 16, 3), np.uint8)
  red[..., 0] = 255
  out = appearance_consistency([grey.repeat(2, 0)[:, :16, :16], red], encoder=clip)
  assert -1.0 <= out["feature_cosine"] < 0.99
