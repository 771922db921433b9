"""CameraCtrl II scene exploration (sec. 3.4): clip-wise autoregressive generation along user trajectories.

    explorer = Explorer.from_workdir("runs/cameractrl2-default")        # a trained main-job workdir
    run = explorer.start("pan_left", image=first_frame, caption="a room")   # I2V (or image=None: T2V)
    run.extend("dolly_in:1.0")                   # a preset, a pose file, or Cameras, relative to where the camera is
    run.extend("orbit_right", cond_frames=5)     # clip i+1 sees the last 5 frames of clip i as clean tokens
    run.save("explore_out")                      # exploration.mp4, clip_<i>.mp4, trajectory.png, cameras.json
                                                 # (written into a temporary folder beside it, renamed when complete)

    python -m camjax.explore --workdir runs/cameractrl2-default --trajectory pan_left --trajectory dolly_in \\
        --trajectory orbit_right --out explore_out [--image first.png | --caption "..."] [--reference clip] [--evaluate]

Every camera lives in ONE global frame, the first frame of the first clip (the identity). Each new trajectory is
given relative to its own frame 0, which is placed at the last camera of the exploration so far
(`camjax.geometry.trajectories.chain`). A clip's window (the model's `num_frames`) is the condition frames, the
last `cond_frames` generated frames, followed by the new frames; the model sees the window's poses in the global
frame (`reference="global"`, the paper's choice) or relative to the window's first frame (`reference="clip"`, Table
5's "Different Ref." ablation). Device memory is one window whatever the total length; the host keeps the uint8
frames of the exploration.

Runs on precomputed WAN-VAE latents and umT5 embeddings (`wan1_3b`, `wan14b`, `wan_tiny`) explore the same way when
their config names the encoders (`autoencoder.path`, `text.encoder_path`; or `--vae`, `--text_encoder` here): the
condition frames (the given image, then the last generated frames) are encoded with the JAX WAN VAE (causal: the
window's first `n` latent frames hold its first `1 + 4 (n - 1)` frames), the sampled latents are decoded, and
captions are embedded with umT5 as precompute did, all outside the jitted sampler. Such runs trained their clip
extension with the global reference drawn inside the record (`camjax.data.pipeline.Window._latent_window`): the
window's first pose is then not the identity, as here from the second clip on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from camjax import checkpoints, methods, sharding
from camjax.errors import CamjaxError
from camjax.io import replace_dir
from camjax.geometry import trajectories
from camjax.geometry.cameras import Cameras, intrinsics, validate_poses
from camjax.methods.base import make_caption_encoder, make_video_codec, to_uint8

REFERENCES = ("global", "clip")
# What `Exploration.save` writes; an existing output folder holding anything else is not replaced.
_OUTPUT_FILES = re.compile(r"exploration\.mp4|clip_\d+\.mp4|trajectory\.png|cameras\.json|evaluation\.json")


class ExplorationError(CamjaxError, ValueError):
  """A bad exploration request: unknown trajectory, missing pose file, non-finite cameras, bad condition-frame
  count, unreadable image, missing checkpoint step, an output folder holding other files."""


@dataclasses.dataclass
class Clip:
  """One generated clip.

  Attributes:
    window: `uint8 [T, H, W, 3]`, what the model produced (condition frames first).
    cameras: `Cameras [T]` of the window in the global frame.
    cond_frames: condition frames at the start of the window (0 for the first clip of a T2V exploration).
    trajectory: the trajectory as the user gave it (a name, a path, or "cameras").
  """

  window: np.ndarray
  cameras: Cameras
  cond_frames: int
  trajectory: str

  @property
  def new_frames(self) -> np.ndarray:
    return self.window[self.cond_frames:]


class Explorer:
  """A trained CameraCtrl II generator ready to explore: one jitted window sampler, compiled once.

  Args:
    config: the main job's config (`train_and_evaluate`'s); its last phase's window size is used.
    weights: the generator's `{params[, frozen]}` (EMA parameters when the run kept them).
    mesh: the mesh (default: `config.mesh` over the local devices).
    K: `[3, 3]` pixel intrinsics of the generated frames (default: 60 degrees horizontal field of view, the
      procedural scenes' camera).
    reference: "global" or "clip" (module docstring).
    seed: sampling seed (clip i uses `seed + i`).
    model: a `camjax.methods.Model` already built for `config` (the main job's, at the end of a run); default: one
      built here (sampling only: no optimiser state).
  """

  def __init__(self, config, weights, *, mesh=None, K=None, reference: str = "global", seed: int = 0,
               model: methods.Model | None = None):
    if reference not in REFERENCES:
      raise ExplorationError(f"reference must be one of {REFERENCES}, got {reference!r}")
    self.config = methods.training_phases(config)[-1].config
    self.mesh = mesh if mesh is not None else sharding.make_mesh(dict(config.mesh))
    d = self.config.data
    self.num_frames, self.height, self.width = int(d.num_frames), int(d.height), int(d.width)
    # Latent runs: the WAN VAE and umT5 outside the jitted sampler (None for pixel / byte-text runs), checked before
    # the model is built.
    self.codec = make_video_codec(self.config, self.mesh)
    if not getattr(methods.make_autoencoder(self.config), "can_decode", True) and self.codec is None:
      raise ExplorationError("this run trained on precomputed latents: exploration needs the VAE that made them to "
                             "encode frames and decode samples; set autoencoder.path (--vae) to its diffusers "
                             "AutoencoderKLWan folder")
    self.captions = make_caption_encoder(self.config)
    if self.config.text.kind == "precomputed" and self.captions is None:
      raise ExplorationError("this run trained on precomputed text embeddings: exploration needs the text encoder "
                             "that made them; set text.encoder_path (--text_encoder) to its umT5 folder (and "
                             "text.tokenizer_path / --tokenizer unless the tokenizer sits there or beside it)")
    if model is None:
      with sharding.use_mesh(self.mesh):
        model = methods.build_model(self.config, self.mesh)
    # The last phase's window: the statics the sampler closes over carry its config.
    self.model = dataclasses.replace(model, static=dataclasses.replace(model.static, config=self.config))
    self.weights = weights
    if K is None:
      from camjax.data.synthetic import focal_for  # pylint: disable=import-outside-toplevel
      f = focal_for(self.height, self.width)
      K = intrinsics(f, f, self.width / 2, self.height / 2)
    self.K = np.asarray(K, np.float64)
    self.reference, self.seed = reference, seed
    self._sample = jax.jit(methods.sample_fn(self.model.static), out_shardings=NamedSharding(self.mesh, P()))
    self.temporal_factor = self.model.autoencoder.temporal_factor

  @classmethod
  def from_workdir(cls, workdir, step: int | None = None, paths: dict | None = None, **kwargs) -> Explorer:
    """The latest (or `step`) checkpoint of a main-job workdir (its `config.json` rebuilds the model).

    `paths` overrides encoder folders of the saved config (`{"autoencoder.path": ..., "text.encoder_path": ...,
    "text.tokenizer_path": ...}`; empty values are ignored), e.g. when they moved since training.

    Raises:
      ExplorationError: no `config.json` in `workdir`, no checkpoint, or none at `step` (the message lists the
        steps there are).
    """
    import ml_collections  # pylint: disable=import-outside-toplevel
    path = Path(workdir) / "config.json"
    if not path.exists():
      raise ExplorationError(f"{path} not found: point --workdir at a `python -m camjax.main` run")
    steps = checkpoint_steps(workdir)
    if not steps:
      raise ExplorationError(f"no checkpoint in {Path(workdir) / 'checkpoints'}: train first")
    if step is not None and step not in steps:
      raise ExplorationError(f"no checkpoint for step {step} (--step) in {Path(workdir) / 'checkpoints'}; "
                             f"available steps: {', '.join(map(str, steps))}")
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    config.model.pretrained = ""  # the checkpoint holds every weight
    for key, value in (paths or {}).items():  # set, not `apply_overrides`: configs saved before these fields lack them
      if value:
        section, field = key.split(".")
        config[section][field] = str(value)
    explorer = cls(config, None, **kwargs)
    with sharding.use_mesh(explorer.mesh):
      template = methods.weights_template(explorer.model, with_ema=config.optimizer.ema_decay > 0)
      state, _ = checkpoints.restore_weights(workdir, template, config, step)
    explorer.weights = {k: v for k, v in state.items() if k != "ema"}
    if "ema" in state:
      explorer.weights["params"] = state["ema"]
    return explorer

  # ------------------------------------------------------------------------------------------------ trajectories
  def trajectory(self, spec, num_frames: int) -> Cameras:
    """`Cameras [num_frames]` relative to their frame 0 from a preset name / composition, a pose file (RealEstate10K
    `.txt`, NeRF `transforms.json`, TUM / KITTI by extension), or `Cameras` (resampled when the count differs).

    A string with a path separator or a file extension (`poses.txt`, `run/transforms.json`) is a pose file; any
    other string that is not an existing file is a preset.

    Raises:
      ExplorationError: unknown preset, non-finite magnitude, pose file not found or unreadable, invalid (NaN,
        infinite, non-rigid) poses or intrinsics.
    """
    from camjax.geometry.errors import CameraError  # pylint: disable=import-outside-toplevel
    label = _label(spec)
    try:
      path = pose_file(spec)
      if isinstance(spec, Cameras):
        cams = spec.numpy()
      elif path is not None:
        cams = self._read_pose_file(path)
      else:
        cams = trajectories.preset(str(spec), num_frames, height=self.height, width=self.width, K=self.K)
      validate_poses(cams.w2c, cams.K, source=path)  # NaN / inf poses or intrinsics, named by frame
      if path is None and not isinstance(spec, Cameras):
        return cams
      cams = cams.resize(self.height, self.width) if (cams.height, cams.width) != (self.height, self.width) else cams
      cams = cams.relative(0)
      return cams if cams.num_frames == num_frames else trajectories.resample(cams, num_frames)
    except CameraError as e:
      raise ExplorationError(f"trajectory {label!r}: {e}") from None

  def _read_pose_file(self, path: Path) -> Cameras:
    """A pose file by extension (`.json` NeRF, `.tum`, `.kitti`, else RealEstate10K)."""
    from camjax.geometry import formats  # pylint: disable=import-outside-toplevel
    if path.suffix == ".json":
      return formats.read_nerf_transforms(path)
    if path.suffix == ".tum":
      return formats.read_tum(path, K=self.K, image_size=(self.height, self.width))
    if path.suffix == ".kitti":
      return formats.read_kitti(path, K=self.K, image_size=(self.height, self.width))
    return formats.read_re10k(path, image_size=(self.height, self.width))

  def check_cond_frames(self, cond_frames: int) -> None:
    """Raises ExplorationError unless `cond_frames` is `1 + k * temporal_factor` and below the window."""
    tf, T = self.temporal_factor, self.num_frames
    if cond_frames < 1 or (cond_frames - 1) % tf or cond_frames >= T:
      raise ExplorationError(f"cond_frames must be 1 + {tf}k and below the {T}-frame window, got {cond_frames}")

  # ------------------------------------------------------------------------------------------------ generation
  def generate_window(self, frames: np.ndarray, cameras: Cameras, num_cond: int, caption: str, seed: int,
                      null_camera: bool = False) -> np.ndarray:
    """One window: `frames uint8 [T, H, W, 3]` whose first `num_cond` latent frames are given clean; returns the
    generated `uint8 [T, H, W, 3]` (condition frames come back unchanged with the pixel autoencoder, as the VAE
    reconstructs them in latent runs). `null_camera` zeroes the Plücker map (the unconditional camera of CFG
    training)."""
    cams = cameras if self.reference == "global" else cameras.relative(0)
    host = dict(K=cams.K[None].astype(np.float32), w2c=cams.w2c[None].astype(np.float32),
                has_camera=np.array([not null_camera]), caption=np.array([caption]),
                num_cond=np.array([num_cond], np.int32))
    if self.codec is None:
      host["frames"] = frames[None]
    else:
      host["latents"] = self.condition_latents(frames, num_cond)
    if self.captions is not None:
      host["text_embeddings"], host["text_mask"] = self.captions([caption])
    batch = methods.host_batch(host, self.model.tokenizer, self.model.method, self.config)
    with sharding.use_mesh(self.mesh):
      out = methods.generate(self.weights, self._sample, batch, self.mesh, jax.random.key(seed))
    if self.codec is not None:
      out = self.codec.decode(out)
    return to_uint8(out[0])

  def condition_latents(self, frames: np.ndarray, num_cond: int) -> np.ndarray:
    """`float32 [1, t, h, w, c]` latents of a window for a latent run: its first `num_cond` latent frames encode the
    condition frames with the VAE, the rest are zero (the sampler noises them). The whole window is encoded (one
    compiled shape for every clip); the VAE is causal, so latent frame `k < num_cond` sees frames `<= 4k` only, the
    condition frames."""
    ae = self.model.autoencoder
    latents = np.zeros((1, *ae.latent_shape(self.num_frames, self.height, self.width)), np.float32)
    if num_cond:
      latents[:, :num_cond] = self.codec.encode(frames[None])[:, :num_cond]
    return latents

  def following_generator(self):
    """`generate(first_frame, cameras, caption, null_camera)` for `camjax.eval.camera_following`: one I2V window
    along `cameras` (made relative to their first frame)."""

    def generate(first_frame, cameras, caption, null_camera=False):
      cams = cameras.numpy().relative(0)
      if cams.num_frames != self.num_frames or (cams.height, cams.width) != (self.height, self.width):
        raise ExplorationError(f"scenes must have {self.num_frames} frames at {self.height}x{self.width}, got "
                               f"{cams.num_frames} at {cams.height}x{cams.width}")
      frames = np.zeros((self.num_frames, self.height, self.width, 3), np.uint8)
      frames[0] = first_frame
      return self.generate_window(frames, cams, 1, caption, self.seed, null_camera=null_camera)

    return generate

  def start(self, trajectory, *, image: np.ndarray | None = None, caption: str = "") -> Exploration:
    """The first clip: I2V from `image` (`uint8 [H, W, 3]`, resized to the model's size) or T2V (`image=None`)."""
    cams = self.trajectory(trajectory, self.num_frames)
    frames = np.zeros((self.num_frames, self.height, self.width, 3), np.uint8)
    if image is not None:
      frames[0] = _fit_image(image, self.height, self.width)
    window = self.generate_window(frames, cams, int(image is not None), caption, self.seed)
    return Exploration(self, caption, [Clip(window, cams, int(image is not None), _label(trajectory))])


class Exploration:
  """The clips generated so far and the global cameras of every frame."""

  def __init__(self, explorer: Explorer, caption: str, clips: list[Clip]):
    self.explorer, self.caption, self.clips = explorer, caption, clips

  @property
  def video(self) -> np.ndarray:
    """`uint8 [N, H, W, 3]`: the first clip, then the new frames of every later clip."""
    return np.concatenate([self.clips[0].window] + [c.new_frames for c in self.clips[1:]])

  @property
  def cameras(self) -> Cameras:
    """`Cameras [N]` of `video` in the global frame."""
    parts = [self.clips[0].cameras] + [c.cameras.take(np.arange(c.cond_frames, c.cameras.num_frames))
                                       for c in self.clips[1:]]
    return Cameras.concatenate(parts)

  def extend(self, trajectory, cond_frames: int = 5, caption: str | None = None) -> Clip:
    """Generates the next clip along `trajectory` (relative to the current camera), conditioned on the last
    `cond_frames` frames of the exploration (`1 + k * temporal_factor`, fewer than the window).

    Raises:
      ExplorationError: a bad `cond_frames` or trajectory.
    """
    ex = self.explorer
    tf, T = ex.temporal_factor, ex.num_frames
    ex.check_cond_frames(cond_frames)
    new = T - cond_frames
    rel = ex.trajectory(trajectory, new + 1)
    so_far = self.cameras
    glob = trajectories.chain([so_far, rel], drop_anchor=True)
    cams = glob.take(np.arange(so_far.num_frames - cond_frames, glob.num_frames))
    frames = np.zeros((T, ex.height, ex.width, 3), np.uint8)
    frames[:cond_frames] = self.video[-cond_frames:]
    cond_latents = 1 + (cond_frames - 1) // tf
    window = ex.generate_window(frames, cams, cond_latents, self.caption if caption is None else caption,
                                ex.seed + len(self.clips))
    clip = Clip(window, cams, cond_frames, _label(trajectory))
    self.clips.append(clip)
    return clip

  def evaluate(self, trials: int = 2) -> dict:
    """Camera accuracy of every clip against its cameras (`camjax.eval.camera_accuracy`, several SfM trials) and the
    appearance consistency across clips (`camjax.eval.appearance_consistency`; the overlap is the condition frames),
    for the model and for the trivial baseline of the same shape: every window frozen on the exploration's first
    frame (`camjax.eval.repeat_first_frame`), so a reader sees what a video that never moves scores (colour
    histograms identical, overlap PSNR at its 100 dB cap, no camera motion for SfM to recover).

    Returns:
      The model's numbers, `"per_clip"` (`camjax.eval.summary` per clip) and `"appearance"` (with two clips or
      more), and the baseline's under the same keys in `["baselines"]["repeat_first_frame"]`.
    """
    from camjax import eval as ev  # pylint: disable=import-outside-toplevel

    def scores(windows: list[np.ndarray]) -> dict:
      out = {"per_clip": [ev.summary(ev.camera_accuracy(w, c.cameras, trials=trials, seed=0))
                          for w, c in zip(windows, self.clips)]}
      if len(self.clips) > 1:
        out["appearance"] = ev.appearance_consistency(windows, overlap=min(c.cond_frames for c in self.clips[1:]))
      return out

    frozen_video = ev.repeat_first_frame(self.video)  # every frame identical: any slice is a frozen window
    frozen = [frozen_video[:len(c.window)] for c in self.clips]
    return {**scores([c.window for c in self.clips]), "baselines": {"repeat_first_frame": scores(frozen)}}

  def save(self, out_dir, fps: float = 8.0, evaluation: dict | None = None) -> Path:
    """Writes `exploration.mp4`, `clip_<i>.mp4` (each window), `trajectory.png`, `cameras.json` (and
    `evaluation.json` when given) into `out_dir`, all or nothing: the files go into a temporary folder beside
    `out_dir`, renamed to `out_dir` once complete (a previous exploration there is replaced whole).

    Raises:
      ExplorationError: `out_dir` exists and holds files an exploration does not write.
    """
    out = Path(out_dir).resolve()  # `.` or `runs/x/` name a folder with a parent to write beside
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
      self._write(tmp, fps, evaluation)
      replace_dir(tmp, out)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    return Path(out_dir)

  def _write(self, out: Path, fps: float, evaluation: dict | None) -> None:
    """Writes every output file into the (temporary) folder `out`."""
    import mediapy  # pylint: disable=import-outside-toplevel

    from camjax import media  # pylint: disable=import-outside-toplevel
    from camjax.geometry.plot import plot_trajectories  # pylint: disable=import-outside-toplevel
    media._setup_ffmpeg()  # pylint: disable=protected-access
    mediapy.write_video(out / "exploration.mp4", self.video, fps=fps)
    for i, clip in enumerate(self.clips):
      mediapy.write_video(out / f"clip_{i}.mp4", clip.window, fps=fps)
    plot_trajectories({f"clip {i}: {c.trajectory}": c.cameras for i, c in enumerate(self.clips)},
                      out / "trajectory.png", title="exploration (global frame)")
    cams = self.cameras
    record = dict(reference=self.explorer.reference, height=self.explorer.height, width=self.explorer.width,
                  caption=self.caption, K=self.explorer.K.tolist(), w2c=cams.w2c.tolist(),
                  clips=[dict(trajectory=c.trajectory, cond_frames=c.cond_frames, w2c=c.cameras.w2c.tolist())
                         for c in self.clips])
    (out / "cameras.json").write_text(json.dumps(record))
    if evaluation is not None:
      from camjax.eval.report import jsonable  # pylint: disable=import-outside-toplevel
      (out / "evaluation.json").write_text(json.dumps(jsonable(evaluation), indent=2))  # NaN (no SfM) -> null


def checkpoint_steps(workdir) -> list[int]:
  """The steps of the finished checkpoints in `<workdir>/checkpoints` (orbax step folders), ascending."""
  d = Path(workdir) / "checkpoints"
  if not d.is_dir():
    return []
  return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())


def check_out_dir(out: Path) -> None:
  """Raises ExplorationError when `out` exists and is not a folder an exploration wrote (so replacing it would
  lose other files)."""
  if not out.exists():
    return
  if not out.is_dir():
    raise ExplorationError(f"output folder {out} (--out) exists and is not a folder")
  foreign = sorted(p.name for p in out.iterdir() if not _OUTPUT_FILES.fullmatch(p.name))
  if foreign:
    shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
    raise ExplorationError(f"output folder {out} (--out) holds files an exploration does not write ({shown}): "
                           "choose a new or empty folder")


def pose_file(spec) -> Path | None:
  """The pose file a trajectory argument names, or None for a preset (or `Cameras`).

  A path-like object, an existing file, or a string with a path separator or a file extension is a pose file.

  Raises:
    ExplorationError: it names a pose file that does not exist (or is a folder).
  """
  if not isinstance(spec, (str, os.PathLike)):
    return None
  path = Path(spec)
  if path.is_file():
    return path
  if not isinstance(spec, os.PathLike) and not _looks_like_path(spec):
    return None
  if path.exists():
    raise ExplorationError(f"trajectory file {path} is not a file")
  raise ExplorationError(f"trajectory file {path} not found (an argument with a path separator or a file "
                         "extension is read as a pose file, not a preset)")


def check_trajectory(spec: str) -> None:
  """Checks a trajectory argument without a model: a pose file exists, a preset parses with finite magnitudes
  (`Explorer.trajectory` reads the pose file).

  Raises:
    ExplorationError: the file is missing, or the preset is unknown or has a bad magnitude.
  """
  from camjax.geometry.errors import CameraError  # pylint: disable=import-outside-toplevel
  if pose_file(spec) is None:
    try:
      trajectories.preset(str(spec), 2)
    except CameraError as e:
      raise ExplorationError(f"trajectory {spec!r}: {e}") from None


def _looks_like_path(spec: str) -> bool:
  """A trajectory argument meant as a file: a path separator or a file extension (a preset magnitude such as
  `dolly_in:0.5` is not one)."""
  seps = [s for s in (os.sep, os.altsep, "/") if s]
  return any(s in spec for s in seps) or re.search(r"\.[A-Za-z][A-Za-z0-9]*$", spec) is not None


def _label(trajectory) -> str:
  return "cameras" if isinstance(trajectory, Cameras) else str(trajectory)


def read_image(path) -> np.ndarray:
  """An image file as `uint8 [H, W, 3]` (grey, palette and alpha images converted to RGB).

  Raises:
    ExplorationError: the file is missing or is not an image.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel
  path = Path(path)
  if not path.is_file():
    raise ExplorationError(f"--image {path}: " + ("not a file" if path.exists() else "file not found"))
  try:
    with Image.open(path) as im:
      return np.asarray(im.convert("RGB"), np.uint8)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise ExplorationError(f"--image {path}: not a readable image ({e})") from None


def _fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  from camjax.data.pipeline import cover_crop, resize_frames  # pylint: disable=import-outside-toplevel
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ExplorationError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
  rh, rw, top, left = cover_crop(image.shape[0], image.shape[1], height, width)  # as the training pipeline does
  return resize_frames(image[None], rh, rw)[0, top:top + height, left:left + width]


def _flag(flag: str, fn, *args):
  """`fn(*args)`, with the command-line flag the bad value came from prepended to an ExplorationError."""
  try:
    return fn(*args)
  except ExplorationError as e:
    raise ExplorationError(f"{flag}: {e}") from None


def main(argv: Sequence[str] | None = None) -> int:
  import argparse  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(prog="python -m camjax.explore", description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True, help="a `python -m camjax.main` workdir (config.json + checkpoints)")
  p.add_argument("--trajectory", action="append", required=True,
                 help="one per clip: preset (e.g. pan_left, 'dolly_in:1+pan_left:10'), or a pose file (any "
                 "argument with a path separator or an extension: .txt RealEstate10K, .json NeRF, .tum, .kitti)")
  p.add_argument("--out", required=True)
  p.add_argument("--image", help="first frame (I2V); default: the first frame of a held-out procedural scene")
  p.add_argument("--t2v", action="store_true", help="no first frame (text-to-video)")
  p.add_argument("--caption", default="")
  p.add_argument("--cond_frames", type=int, default=5)
  p.add_argument("--reference", choices=REFERENCES, default="global")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--evaluate", action="store_true", help="camera error per clip + appearance consistency")
  p.add_argument("--vae", default="", help="latent runs: the diffusers AutoencoderKLWan folder (default: the run's "
                 "autoencoder.path)")
  p.add_argument("--text_encoder", default="", help="latent runs: the umT5 encoder folder (default: the run's "
                 "text.encoder_path)")
  p.add_argument("--tokenizer", default="", help="latent runs: the umT5 tokenizer folder (default: the run's "
                 "text.tokenizer_path)")
  args = p.parse_args(argv)
  try:
    check_out_dir(Path(args.out))  # every input is checked before anything is generated
    image, caption = (read_image(args.image) if args.image else None), args.caption
    for spec in args.trajectory:  # presets and file names before a model is loaded, pose files after
      _flag("--trajectory", check_trajectory, spec)
    paths = {"autoencoder.path": args.vae, "text.encoder_path": args.text_encoder,
             "text.tokenizer_path": args.tokenizer}
    explorer = Explorer.from_workdir(args.workdir, args.step, paths=paths, reference=args.reference, seed=args.seed)
    for spec in args.trajectory:
      _flag("--trajectory", explorer.trajectory, spec, explorer.num_frames)
    if len(args.trajectory) > 1:
      _flag("--cond_frames", explorer.check_cond_frames, args.cond_frames)
    if image is None and not args.t2v:
      from camjax.data.synthetic import render_scene  # pylint: disable=import-outside-toplevel
      scene = render_scene(10_000_000 + args.seed, num_frames=1, height=explorer.height, width=explorer.width,
                           num_tracks=0)[0]
      image, caption = scene.frames[0], caption or scene.caption
    run = explorer.start(args.trajectory[0], image=image, caption=caption)
    for spec in args.trajectory[1:]:
      run.extend(spec, cond_frames=args.cond_frames)
    evaluation = run.evaluate() if args.evaluate else None
    out = run.save(args.out, evaluation=evaluation)
  except CamjaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"camjax: {len(run.clips)} clips, {len(run.video)} frames -> {out}")
  if evaluation is not None:
    print((out / "evaluation.json").read_text())
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
