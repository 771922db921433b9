"""Learned-feature metrics (FVD with I3D, FID with Inception, CLIP image features, LPIPS) behind one interface.

camjax downloads nothing: every metric loads a LOCAL TorchScript file with `LearnedMetric.from_file(path)` (torch is
the `parity` extra) and raises `EvalError` naming the file and what to put there when it is absent. The networks
and their calling conventions are those of the public evaluation code most video papers use:

| class | file | call |
|---|---|---|
| `I3DFeatures` (FVD) | StyleGAN-V's `i3d_torchscript.pt` | `model(x, rescale=True, resize=True, return_features=True)`, `x` float `[B, 3, T, H, W]` in [0, 1] |
| `InceptionFeatures` (FID) | StyleGAN2-ADA/3's `inception-2015-12-05` TorchScript | `model(x, return_features=True)`, `x` uint8-valued `[N, 3, H, W]` |
| `ClipImageEncoder` | OpenAI CLIP `ViT-B-32.pt` (a TorchScript archive) | `model.encode_image(x)`, `x` `[N, 3, 224, 224]` CLIP-normalised |
| `LPIPS` | a TorchScript trace of `lpips.LPIPS(net=...)` | `model(a, b)`, `a, b` float `[N, 3, H, W]` in [-1, 1] |

The Fréchet distance itself (`frechet_distance`) is plain NumPy/SciPy: `|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^1/2)`
(Heusel et al. 2017, eq. 6) on feature means and covariances.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from camjax.eval.errors import EvalError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def frechet_distance(feats_a, feats_b) -> float:
  """Fréchet distance between Gaussians fitted to `feats_a [N, D]` and `feats_b [M, D]` (sample covariance, ddof 1).

  Raises:
    EvalError: feature widths differ or fewer than 2 samples in a set.
  """
  import scipy.linalg

  a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
    raise EvalError(f"Fréchet distance needs features [N, D] of one width, got {a.shape} and {b.shape}")
  if len(a) < 2 or len(b) < 2:
    raise EvalError(f"Fréchet distance needs at least 2 samples per set, got {len(a)} and {len(b)}")
  mu_a, mu_b = a.mean(0), b.mean(0)
  s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
  covmean = scipy.linalg.sqrtm(s_a @ s_b)
  if not np.isfinite(covmean).all():  # singular product: regularise as the public FID code does
    eps = 1e-6 * np.eye(len(s_a))
    covmean = scipy.linalg.sqrtm((s_a + eps) @ (s_b + eps))
  covmean = np.real(covmean)
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))


def _videos(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype != np.uint8 or x.ndim != 5 or x.shape[-1] != 3:
    raise EvalError(f"{name} needs uint8 videos [B, T, H, W, 3], got {x.dtype} {x.shape}")
  return x


def _images(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
    raise EvalError(f"{name} needs uint8 images [N, H, W, 3], got {x.dtype} {x.shape}")
  return x


class LearnedMetric:
  """A network loaded from a local TorchScript file. Subclasses set `name`, `source` (where the file comes from)
  and implement their feature / distance method."""

  name = "learned metric"
  source = "the network's public TorchScript file"

  def __init__(self, model, path=None, device: str = "cpu"):
    self.model, self.path, self.device = model, path, device

  @classmethod
  def from_file(cls, path, device: str = "cpu") -> "LearnedMetric":
    """Loads the TorchScript network at `path` onto `device`.

    Raises:
      EvalError: `path` is None or missing (nothing is downloaded), torch is not installed, or the file is not a
        TorchScript archive.
    """
    if path is None or not Path(path).is_file():
      raise EvalError(f"{cls.name}: weights file {path} not found. camjax downloads no weights: put "
                      f"{cls.source} there (or pass its local path)")
    try:
      import torch
    except ImportError:
      raise EvalError(f"{cls.name}: loading {path} needs torch (pip install camjax[parity])") from None
    try:
      model = torch.jit.load(str(path), map_location=device).eval()
    except Exception as e:  # noqa: BLE001 -- torch raises RuntimeError / pickle errors on a bad archive
      raise EvalError(f"{cls.name}: {path} is not a loadable TorchScript file ({type(e).__name__}: {e})") from None
    return cls(model, Path(path), device)

  def _tensor(self, x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)


class I3DFeatures(LearnedMetric):
  """I3D (Kinetics-400) video features for FVD (Unterthiner et al. 2018)."""

  name = "FVD (I3D)"
  source = "StyleGAN-V's i3d_torchscript.pt"

  def features(self, videos, batch_size: int = 8) -> np.ndarray:
    """`uint8 [B, T, H, W, 3]` videos -> features `[B, D]` (pre-logit, 400-d for the public file)."""
    import torch

    videos = _videos(videos, self.name)
    out = []
    with torch.no_grad():
      for i in range(0, len(videos), batch_size):
        x = self._tensor(videos[i:i + batch_size]).permute(0, 4, 1, 2, 3).float() / 255.0
        out.append(self.model(x, rescale=True, resize=True, return_features=True).cpu().numpy())
    return np.concatenate(out).astype(np.float64)

  def fvd(self, real_videos, generated_videos) -> float:
    """FVD between two sets of `uint8 [B, T, H, W, 3]` videos (each set needs B >= 2)."""
    return frechet_distance(self.features(real_videos), self.features(generated_videos))


class InceptionFeatures(LearnedMetric):
  """Inception-v3 pool features (2048-d) for FID (Heusel et al. 2017)."""

  name = "FID (Inception)"
  source = "the inception-2015-12-05 TorchScript of StyleGAN2-ADA/StyleGAN3's metrics"

  def features(self, images, batch_size: int = 32) -> np.ndarray:
    """`uint8 [N, H, W, 3]` images -> `[N, 2048]`."""
    import torch

    images = _images(images, self.name)
    out = []
    with torch.no_grad():
      for i in range(0, len(images), batch_size):
        x = self._tensor(images[i:i + batch_size]).permute(0, 3, 1, 2)
        out.append(self.model(x, return_features=True).cpu().numpy())
    return np.concatenate(out).astype(np.float64)

  def fid(self, real_images, generated_images) -> float:
    """FID between two sets of `uint8 [N, H, W, 3]` images (video frames: flatten `[B * T, H, W, 3]`)."""
    return frechet_distance(self.features(real_images), self.features(generated_images))


class ClipImageEncoder(LearnedMetric):
  """CLIP image embeddings (Radford et al. 2021): CameraCtrl II's appearance consistency encoder and CLIP frame
  consistency. Calling the object maps `uint8 [T, H, W, 3]` to L2-normalised `[T, D]` (for
  `quality.appearance_consistency(encoder=...)`)."""

  name = "CLIP"
  source = "an OpenAI CLIP TorchScript archive (e.g. ViT-B-32.pt)"
  resolution = 224

  def features(self, images, batch_size: int = 32) -> np.ndarray:
    """`uint8 [N, H, W, 3]` -> L2-normalised `[N, D]`: bicubic resize of the short side to 224, centre crop, CLIP
    mean/std normalisation, `model.encode_image`."""
    import torch
    import torch.nn.functional as F

    images = _images(images, self.name)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
      for i in range(0, len(images), batch_size):
        x = self._tensor(images[i:i + batch_size]).permute(0, 3, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        s = self.resolution / min(h, w)
        nh, nw = max(self.resolution, round(h * s)), max(self.resolution, round(w * s))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False).clamp(0, 1)
        top, left = (nh - self.resolution) // 2, (nw - self.resolution) // 2
        x = x[..., top:top + self.resolution, left:left + self.resolution]
        x = (x - mean.to(x)) / std.to(x)
        out.append(self.model.encode_image(x).float().cpu().numpy())
    f = np.concatenate(out).astype(np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12)

  __call__ = features

  def frame_consistency(self, video) -> float:
    """Mean cosine similarity of CLIP features of consecutive frames of `uint8 [T, H, W, 3]` (CLIP-F)."""
    f = self.features(video)
    if len(f) < 2:
      raise EvalError("CLIP frame consistency needs at least 2 frames")
    return float(np.mean(np.sum(f[1:] * f[:-1], axis=-1)))


class LPIPS(LearnedMetric):
  """LPIPS perceptual distance (Zhang et al. 2018); lower is more similar."""

  name = "LPIPS"
  source = "a TorchScript trace of lpips.LPIPS(net='alex' or 'vgg')"

  def distance(self, a, b, batch_size: int = 16) -> np.ndarray:
    """Per-image LPIPS `[N]` of `uint8 [N, H, W, 3]` pairs."""
    import torch

    a, b = _images(a, self.name), _images(b, self.name)
    if a.shape != b.shape:
      raise EvalError(f"LPIPS needs images of one shape, got {a.shape} and {b.shape}")
    out = []
    with torch.no_grad():
      for i in range(0, len(a), batch_size):
        x, y = (self._tensor(v[i:i + batch_size]).permute(0, 3, 1, 2).float() / 127.5 - 1.0 for v in (a, b))
        out.append(self.model(x, y).reshape(len(x)).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


LOADERS = {"fvd": I3DFeatures, "fid": InceptionFeatures, "clip": ClipImageEncoder, "lpips": LPIPS}


def load(kind: str, path, device: str = "cpu") -> LearnedMetric:
  """`LOADERS[kind].from_file(path)` for kind in "fvd", "fid", "clip", "lpips".

  Raises:
    EvalError: unknown kind or absent weights.
  """
  if kind not in LOADERS:
    raise EvalError(f"unknown learned metric {kind!r}: choose from {sorted(LOADERS)}")
  return LOADERS[kind].from_file(path, device)
