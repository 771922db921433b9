"""RealCam-I2V (papers/002; REFERENCE.md section 4) as a camjax method: image-to-video with metric-scale cameras, a 3D
preview of the trajectory, scene-constrained noise shaping and four generation modes, on the shared WAN DiT.

* **Model.** CameraCtrl II's camera conditioning (`camjax.conditioning.cameractrl2.CameraPatchify`: the Plücker map of
  one pose per latent frame as a zero-initialised, bias-free token map added before block 0) on a flow-matching WAN
  DiT. (RealCam-I2V itself builds on DynamiCrafter and CamI2V's epipolar attention; camjax keeps one DiT and one
  camera path for every method, so what is RealCam-I2V's own here is the data, the modes and the sampler.)
* **Modes** (sec. 3.3 "Applications"), trained jointly, one drawn per sample with `train.mode_probs`:
  basic (frame 0 given), interpolation (frames 0 and T-1 given), loop (frame T-1 = frame 0, both given; training
  clips are made to loop by playing their first half forward and back, frames and cameras alike) and continuation
  (the first `i` frames given, `i` from 2 to half the clip).
* **How given frames enter, and the causal-VAE argument.** A causal video VAE (WAN's, camjax's pixel autoencoder)
  encodes frame 0 alone into latent frame 0 and frames `4k-3 .. 4k` together into latent frame k. A given frame
  therefore fills a whole latent frame only when it is frame 0 or completes a run of given frames `4k-3 .. 4k`
  (continuation). The last frame `T - 1 = 4(t - 1)` shares latent frame `t - 1` with three frames to be generated, so it
  cannot be a clean token: holding that latent frame clean would freeze three frames that must move, and leaving it
  noisy alone would drop the frame. So every given frame enters through **extra input channels**
  (`WanConfig.extra_in_channels`, WAN I2V's layout): the latents of the video with the given frames in place and zeros
  elsewhere, plus `temporal_factor` mask channels per latent frame saying which of its video frames are given. Latent
  frames whose every video frame is given are **also** clean tokens (held by `clean_hook` while sampling, left out of
  the loss while training). After decoding, the given frames are written back into the video in pixel space, so they
  come back exactly in every mode; for the frames inside clean latent frames this changes nothing (the pixel
  autoencoder is lossless), for the last frame of interpolation / loop it replaces the model's reconstruction of it
  from the extra channels (`sample(..., paste_given=False)` shows the difference).
* **Metric scale** (sec. 3.2). Training data are procedural scenes (`camjax.data.synthetic`: a room of fixed metric
  size, objects, depth from the renderer) in which each scene's camera travel is multiplied by a per-scene factor
  `s` (log-uniform in `realcam.scale_range`): the camera moves `s` times as far, rotations unchanged. The records
  carry the true metric cameras. `realcam.scale = "metric"` trains with them (the paper's metric-aligned training);
  `"raw"` (the ablation) normalises every clip's translations so that its largest camera displacement from frame 0
  is 1, as a scale-free SfM reconstruction would give, in training and in sampling alike. Why the camera travel and
  not a similarity of the whole world: scaling a scene's geometry and its cameras' translations together by `s`
  leaves every image unchanged, so no model can tell `s` from the first frame, and metric cameras would then carry
  noise rather than information; in the real world (and in these scenes) rooms have sizes the image shows, and what
  SfM loses is how far the camera moved in them.
* **Real clips** (`data.source="re10k"`, the `re10k` variant; `prepare_re10k`). RealEstate10K-layout clips whose
  translations are aligned to metric scale as the paper's training data are (sec. 3.2, 4.1):
  `camjax.data.curate.metric.align_re10k` with the metric depth model `realcam.depth_model` (per clip, frame 0's
  median of metric depth / SfM depth over its triangulated points is the factor; clips with outlying frame factors
  dropped), written once per workdir keyed by the clip files, the depth-model files and the settings. The clips of
  the last `realcam.heldout_scenes` scenes are held out: the samples and the end-of-run evaluation start from their
  first frame, lifted with the same depth model's depth of that frame for the preview (`clip_example`,
  `evaluate_clips`).
* **Sampling** (sec. 3.3). Preview: the first frame lifted with its metric depth, rendered along the trajectory
  (`camjax.geometry.render.preview`, on the host), the rendered video encoded by the autoencoder, and its latent
  mask (5x5 coverage, resized, thresholded at 0.9). Scene-constrained noise shaping pastes the noised preview latents
  into `z_t` while the noise level is above `sample.shaping_threshold` (the paper's equation; `sample.shaping_target
  = "x0"` pastes into the predicted clean latent instead, Fig. 6), then `clean_hook` holds the clean latent frames.
  Guidance: CameraCtrl II's text + camera chain (`sample.w_text`, `sample.w_cam`; one forward when both are 1).
* **Anchor** (camjax's CPU-sized choice, not the paper; x-prediction on pixel tokens). `model.anchor="depth_warp"`
  (the default, as CameraCtrl II's): the clean-sample prediction is a residual on the anchor frame reprojected
  through the conditioning cameras at a per-cell disparity that a zero-initialised `anchor.DisparityHead` reads
  from the DiT's last hidden states (`camjax.conditioning.anchor.reproject_anchor`; `anchor_poses` here). The anchor
  frame is frame 0 in basic, interpolation and loop (the frame the trajectory and the preview start from) and the
  last given frame in continuation (`anchor_frames`); the other given frames enter through the extra channels as
  before and still come back exactly. The warp uses the cameras the DiT sees (normalised ones with
  `realcam.scale="raw"`, so there the warp's magnitude is off by the clip's unknown scale) and is the same in every
  guidance set (camera dropout and the null camera drop the Plücker tokens only). "condition_frame": a residual on
  the last clean latent frame repeated.
* **End of run** (`evaluate_at_end`): `eval.scenes` held-out scenes with randomised scale (or, for `re10k`, up to
  that many held-out real clips with their aligned cameras, scored against their real frames), PSNR inside the preview
  mask and over whole frames, with shaping, without it, with Fig. 6's variant, with the trajectory's translations
  halved / doubled (does the model read metric scale?), next to "repeat the first frame", "mean colour" and the
  preview itself -> `<workdir>/eval_realcam/` (report.md, metrics.json, strip_<i>.png).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from camjax.conditioning import cameractrl2 as cc2
from camjax.diffusion import clean_hook, guided_denoiser, noise_shaping
from camjax.diffusion.shaping import TARGETS
from camjax.errors import CamjaxError
from camjax.geometry import se3
from camjax.geometry.cameras import Cameras
from camjax.methods.base import Method, bind_autoencoder, clip_video, denoising_loss, make_autoencoder, text_states
from camjax.conditioning.anchor import DisparityHead, condition_anchor, reproject_anchor
from camjax.models.autoencoders import slot_frames
from camjax.models.text import drop_text, null_text

log = logging.getLogger("camjax.methods.realcam_i2v")

MODES = ("basic", "interpolation", "loop", "continuation")
BASIC, INTERPOLATION, LOOP, CONTINUATION = range(len(MODES))
SCALES = ("metric", "raw")
ANCHORS = ("none", "condition_frame", "depth_warp")
DATA_SOURCE = "realcam_scenes"
RE10K_SOURCE = "re10k"  # RealEstate10K-layout clips aligned to metric scale (`prepare_re10k`, the `re10k` variant)
DATA_SOURCES = (DATA_SOURCE, RE10K_SOURCE)
# Scene seeds: training scenes are `seed + i`; held-out scenes (samples, evaluation) `HELD_OUT_SEED + seed + i`.
HELD_OUT_SEED = 4_000_000


class RealCamError(CamjaxError, ValueError):
  """An input RealCam-I2V cannot use: an unknown mode, frames or cameras of the wrong shape, a missing preview, a
  depth map without valid pixels. The message names the argument and what was expected."""


# ----------------------------------------------------------------------------------------------------------------------
# Procedural scenes with a per-scene scale
# ----------------------------------------------------------------------------------------------------------------------


def scene_scale(seed: int, scale_range) -> float:
  """The per-scene factor `s` of scene `seed`: log-uniform in `scale_range = (low, high)` (deterministic).

  Raises:
    RealCamError: a range that is not `0 < low <= high`.
  """
  lo, hi = (float(v) for v in scale_range)
  if not 0 < lo <= hi:
    raise RealCamError(f"scale_range must be (low, high) with 0 < low <= high, got {tuple(scale_range)}")
  u = np.random.default_rng([int(seed), 0x5CA1E]).uniform()
  return float(np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))))


@dataclasses.dataclass
class ScaledScene:
  """One rendered procedural clip whose camera travel was multiplied by `scale`.

  Attributes:
    frames: `uint8 [T, H, W, 3]`.
    depth: `float32 [T, H, W]` camera-space z in metres (0 on the sky).
    cameras: `Cameras [T]`, metric, in the scene's world frame (OpenCV axes).
    caption: the scene description.
    trajectory: the preset composition before scaling (e.g. "dolly_in:0.80+pan_left:14.00").
    scale: the factor `s` applied to the preset's translations.
    fps: frames per second.
  """

  frames: np.ndarray
  depth: np.ndarray
  cameras: Cameras
  caption: str
  trajectory: str
  scale: float
  fps: float = 8.0


def render_scaled_scene(seed: int, *, num_frames: int, size: int, scale_range, trajectory: str | None = None,
                        scale: float | None = None, fps: float = 8.0) -> ScaledScene:
  """Renders scene `seed` of `camjax.data.synthetic` (its room, objects and a random preset composition, or
  `trajectory`) with the camera's translations relative to the first frame multiplied by the scene's factor
  (`scene_scale(seed, scale_range)`, or `scale`).

  Args:
    seed: scene seed.
    num_frames: T.
    size: square frame size in pixels.
    scale_range: `(low, high)` of the log-uniform factor.
    trajectory: preset composition (default: drawn from the scene's RNG, never "static" alone).
    scale: the factor itself (overrides `scale_range`).
    fps: frame rate (object motion is in metres per second).

  Returns:
    A `ScaledScene`.
  """
  from camjax.data import synthetic  # pylint: disable=import-outside-toplevel
  from camjax.geometry import trajectories  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  scene = synthetic.random_scene(rng)
  while trajectory is None:
    name = synthetic.random_trajectory_name(rng)
    trajectory = None if name == "static" else name
  s = scene_scale(seed, scale_range) if scale is None else float(scale)
  f = synthetic.focal_for(size, size)
  K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]], np.float64)
  rel = trajectories.preset(trajectory, num_frames, height=size, width=size, K=K, radius=3.5)
  c2w_rel = np.array(rel.c2w, np.float64)
  c2w_rel[:, :3, 3] *= s
  c2w = synthetic.start_pose()[None] @ c2w_rel
  cams = Cameras(K=np.asarray(rel.K, np.float64), w2c=se3.invert(c2w), height=size, width=size)
  times = np.arange(num_frames) / fps
  rendered = [synthetic.render_frame(scene, t, cams.K[i], cams.w2c[i], size, size) for i, t in enumerate(times)]
  frames = np.stack([np.round(r.rgb * 255) for r in rendered]).astype(np.uint8)
  depth = np.stack([r.depth for r in rendered]).astype(np.float32)
  return ScaledScene(frames=frames, depth=depth, cameras=cams, caption=scene.caption(), trajectory=trajectory,
                     scale=s, fps=fps)


def scene_records(num_scenes: int, *, seed: int, num_frames: int, size: int, scale_range, embed=None):
  """`ClipRecord`s of scenes `seed .. seed + num_scenes - 1` (frames, metric cameras, rendered depth, `metric_scale`
  = the scene's factor), a generator; with `embed` (`caption_embedder`) also the captions' `text_embeddings`."""
  from camjax.data.records import ClipRecord  # pylint: disable=import-outside-toplevel
  for i in range(num_scenes):
    clip = render_scaled_scene(seed + i, num_frames=num_frames, size=size, scale_range=scale_range)
    yield ClipRecord(clip_id=f"realcam-{seed + i:07d}", source="realcam_synthetic", scene_id=f"realcam-{seed + i:07d}",
                     frames=clip.frames, K=clip.cameras.K, w2c=clip.cameras.w2c, height=size, width=size,
                     fps=clip.fps, caption=clip.caption, has_camera=True, depth=clip.depth, metric_scale=clip.scale,
                     text_embeddings=None if embed is None else embed(clip.caption))


def caption_embedder(config):
  """With `text.kind="precomputed"`: `caption -> float32 [L, D]` umT5 embeddings of its real tokens (as
  `camjax.data.precompute` stores them), from the encoder of `text.encoder_path`; otherwise None.

  Raises:
    RealCamError: precomputed text without `text.encoder_path`.
  """
  if config.text.kind != "precomputed":
    return None
  from camjax.methods.base import shared_caption_encoder  # pylint: disable=import-outside-toplevel
  encoder = shared_caption_encoder(config)
  if encoder is None:
    raise RealCamError("text.kind='precomputed' needs text.encoder_path (the umT5 encoder that embeds the captions "
                       "of the records RealCam-I2V writes and of its examples)")

  def embed(caption: str) -> np.ndarray:
    emb, mask = encoder([caption])
    return emb[0][:max(int(mask[0].sum()), 1)]

  return embed


def text_provenance(config) -> tuple[dict, list[str]]:
  """`(arguments, input paths)` that key a dataset by the text encoder its embeddings came from (nothing for the byte
  encoder, whose records hold captions only)."""
  t = config.text
  if t.kind != "precomputed":
    return {}, []
  paths = [str(Path(t.encoder_path).resolve())] + ([str(Path(t.tokenizer_path).resolve())]
                                                    if t.get("tokenizer_path", "") else [])
  return {"text_encoder": paths, "text_max_length": int(t.max_length), "text_width": int(t.width)}, paths


def prepare_scenes(config, workdir) -> Path:
  """The training scenes of a config, rendered once into `<workdir>/data/realcam_<n>x<T>f<size>px_seed<s>_<digest>/`
  (an ArrayRecord dataset, `camjax.data.shards`; reused when its provenance matches; process 0 writes, the others
  wait at a barrier, as `camjax.data.prepare.prepare_dataset`).

  Returns:
    The versioned dataset folder (`shards.ShardSource` opens it).

  Raises:
    camjax.data.records.DataError: the dataset cannot be written or is missing afterwards on another process.
  """
  from camjax.data import shards  # pylint: disable=import-outside-toplevel
  from camjax.data.prepare import _write_or_reuse, on_process_zero  # pylint: disable=import-outside-toplevel
  from camjax.data.synthetic import RENDERER_VERSION  # pylint: disable=import-outside-toplevel
  d, r = config.data, config.realcam
  args = dict(num_scenes=int(d.num_scenes), seed=int(config.seed), num_frames=int(d.num_frames),
              size=int(d.render_size), scale_range=[float(v) for v in r.scale_range])
  text_args, text_inputs = text_provenance(config)
  provenance = shards.make_provenance("camjax.methods.realcam_i2v",
                                      dict(args, renderer_version=RENDERER_VERSION, **text_args),
                                      shards.input_listing(*text_inputs) if text_inputs else None)
  name = f"realcam_{args['num_scenes']}x{args['num_frames']}f{args['size']}px_seed{config.seed}"
  out = Path(workdir) / "data" / f"{name}_{shards.provenance_digest(provenance)}"

  def write(folder: Path, overwrite: bool):
    embed = caption_embedder(config)
    return shards.build_dataset(lambda: scene_records(**args, embed=embed), folder, provenance, overwrite=overwrite,
                                description=f"RealCam-I2V procedural scenes with per-scene scale, {args}")

  on_process_zero(lambda: _write_or_reuse(out, write), f"camjax realcam scenes {out.name}")
  return shards.dataset_dir(out)


# ----------------------------------------------------------------------------------------------------------------------
# RealEstate10K-layout clips aligned to metric scale (the `re10k` variant)
# ----------------------------------------------------------------------------------------------------------------------

DEPTH_MODEL_HINT = ("pass --config.realcam.depth_model=/path/to/depth-anything-v2-metric-folder (a local Depth "
                    "Anything V2 metric checkpoint saved with save_pretrained: config.json with depth_estimation_type "
                    "'metric' and max_depth, and its weights; nothing is downloaded)")
CLIPS_FILE = "clips.json"  # per clip of an aligned dataset: scene, frames, factor, split or why it was dropped


def check_depth_model(path) -> Path:
  """The resolved folder of the `re10k` variant's metric depth model (`camjax.depth.check_metric_checkpoint`).

  Raises:
    camjax.depth.DepthModelNotFoundError: no path, no such folder, no `config.json` or no weights; the message says
      what to pass (`DEPTH_MODEL_HINT`).
    camjax.depth.NotMetricDepthError: a checkpoint that is not a metric Depth Anything model (same hint).
  """
  from camjax import depth as depth_lib  # pylint: disable=import-outside-toplevel
  if not str(path or "").strip():
    raise depth_lib.DepthModelNotFoundError("realcam.depth_model is empty: the re10k variant aligns its clips to "
                                            f"metric scale with a metric depth model; {DEPTH_MODEL_HINT}")
  try:
    depth_lib.check_metric_checkpoint(path)
  except depth_lib.DepthError as e:
    raise type(e)(f"{e}. realcam.depth_model={str(path)!r} is the metric depth model the re10k variant aligns its "
                  f"clips with: {DEPTH_MODEL_HINT}") from None
  return Path(path).resolve()


def re10k_alignment_args(config) -> dict[str, Any]:
  """The settings an aligned dataset is made with (its provenance, with a listing of the clip and depth-model files):
  the clips' folder, the depth model's folder and torch device, `camjax.data.curate.metric.align_re10k`'s settings
  (filter quantile, reference frame 0, minimum points, triangulation threads and seed) and the held-out split.

  Raises:
    camjax.data.records.DataError: `data.path` is not a folder.
    camjax.depth.DepthError: as `check_depth_model`.
  """
  from camjax.data.records import DataError  # pylint: disable=import-outside-toplevel
  d, r = config.data, config.realcam
  if not d.path or not Path(d.path).is_dir():
    raise DataError(f"data.path {d.path!r} is not a folder: the re10k variant reads a folder of RealEstate10K pose "
                    "files + videos (set --config.data.path; the shared clips are ../shared/data/re10k_clips)")
  return dict(root=str(Path(d.path).resolve()), depth_model=str(check_depth_model(r.get("depth_model", ""))),
              device=str(r.get("depth_device", "cpu")), fps=8.0, quantile=float(r.get("align_quantile", 0.02)),
              reference=0, min_points=int(r.get("align_min_points", 20)), num_threads=int(r.get("align_threads", 1)),
              seed=0, heldout_scenes=int(r.get("heldout_scenes", 1)))


def prepare_re10k(config, workdir) -> dict[str, Path]:
  """The `re10k` variant's data: the RealEstate10K-layout clips of `data.path` aligned to metric scale with the
  metric depth model `realcam.depth_model` (`camjax.data.curate.metric.align_re10k`: per clip, frame 0's median of
  metric depth / SfM depth over its triangulated points scales every translation; clips with outlying frame factors
  dropped), written once into `<workdir>/data/realcam_re10k_<folder>_<digest>/` and reused while the clip files, the
  depth-model files and the settings (`re10k_alignment_args`) are unchanged. Process 0 writes into a temporary folder
  that is renamed into place when complete; the others wait at a barrier (as `prepare_scenes`).

  The folder holds `alignment/` (the scaled pose files and `metric_scale.json` of `align_re10k`), `train/` and
  `heldout/` (camjax datasets: frames, K, metric w2c, `metric_scale` = the clip's factor; the held-out clips also
  carry the depth model's depth of frame 0 as `depth[0]`, other frames 0) and `clips.json`. The held-out clips are
  those of the last `realcam.heldout_scenes` scenes (sorted ids): never trained on, they give the samples and the
  end-of-run evaluation. Clips too short for the window are counted and logged here (the training pipeline skips
  them, `pipeline_stats.too_short`).

  Returns:
    `{"main": training dataset folder, "heldout": held-out dataset folder}` (what `shards.ShardSource` opens).

  Raises:
    camjax.depth.DepthError: a missing or wrong depth-model folder (`check_depth_model`).
    camjax.data.records.DataError: `data.path` is not a folder; the dataset is missing on another process.
    RealCamError: no clip aligned, fewer scenes than `heldout_scenes` + 1, or no held-out clip is long enough for
      the window while samples or the evaluation need one.
  """
  from camjax.data import shards  # pylint: disable=import-outside-toplevel
  from camjax.data.prepare import on_process_zero  # pylint: disable=import-outside-toplevel
  from camjax.data.records import DataError  # pylint: disable=import-outside-toplevel
  text_args, text_inputs = text_provenance(config)
  args = dict(re10k_alignment_args(config), **text_args)
  provenance = shards.make_provenance("camjax.methods.realcam_i2v re10k", args,
                                      shards.input_listing(args["root"], args["depth_model"], *text_inputs))
  out = Path(workdir) / "data" / f"realcam_re10k_{Path(args['root']).name}_{shards.provenance_digest(provenance)}"
  embed = caption_embedder(config)
  on_process_zero(lambda: _write_or_reuse_re10k(out, provenance, embed), f"camjax realcam re10k {out.name}")
  if not (out / CLIPS_FILE).is_file():
    raise DataError(f"process {jax.process_index()}: no aligned dataset at {out} after process 0 wrote it: the "
                    "processes disagree on the inputs (data.path and realcam.depth_model must read the same on every "
                    "host)")
  _report_windows(json.loads((out / CLIPS_FILE).read_text()), config, out)
  return {"main": shards.dataset_dir(out / "train"), "heldout": shards.dataset_dir(out / "heldout")}


def _write_or_reuse_re10k(out: Path, provenance: dict, embed=None) -> None:
  """Reuses the aligned dataset at `out` (same provenance, complete) or writes it: into a temporary folder beside it,
  renamed into place when complete (a leftover of another provenance is replaced)."""
  import shutil  # pylint: disable=import-outside-toplevel
  import uuid  # pylint: disable=import-outside-toplevel

  from camjax.data import shards  # pylint: disable=import-outside-toplevel
  from camjax.data.records import RecordError  # pylint: disable=import-outside-toplevel
  if out.is_dir():
    differences = shards.provenance_differences(shards.read_provenance(out), provenance)
    if not differences:
      try:
        if (out / CLIPS_FILE).is_file() and all(shards.dataset_dir(out / s) for s in ("train", "heldout")):
          log.info("reusing the aligned RealEstate10K dataset %s", out)
          return
      except RecordError:
        pass
      differences = ["the folder is incomplete"]
    log.warning("replacing the aligned dataset %s: %s", out, "; ".join(differences))
  tmp = out.parent / f"{shards._TMP_PREFIX}{out.name}-{uuid.uuid4().hex[:8]}"  # pylint: disable=protected-access
  try:
    _write_re10k(tmp, provenance, embed)
    shards._replace_folder(tmp, out)  # pylint: disable=protected-access
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  log.info("wrote the aligned RealEstate10K dataset %s", out)


def _write_re10k(folder: Path, provenance: dict, embed=None) -> None:
  """Aligns the clips (`align_re10k` into `folder/alignment`), splits the kept clips by scene and writes both
  datasets (with `embed`, `caption_embedder`: the captions' umT5 embeddings too), `clips.json` and the provenance
  into `folder`."""
  import datetime  # pylint: disable=import-outside-toplevel

  from camjax import depth as depth_lib  # pylint: disable=import-outside-toplevel
  from camjax.data import shards  # pylint: disable=import-outside-toplevel
  from camjax.data.curate.metric import align_re10k  # pylint: disable=import-outside-toplevel
  from camjax.data.sources import re10k_records  # pylint: disable=import-outside-toplevel
  a = provenance["arguments"]
  folder.mkdir(parents=True)
  depth = depth_lib.DepthAnythingMetric(a["depth_model"], device=a["device"])
  rows = align_re10k(a["root"], depth, out=folder / "alignment", quantile=a["quantile"], reference=a["reference"],
                     min_points=a["min_points"], num_threads=a["num_threads"], seed=a["seed"])
  kept = {r["clip"]: r for r in rows if r["kept"]}
  if not kept:
    reasons = "; ".join(f"{r['clip']}: {r['reason']}" for r in rows[:3])
    raise RealCamError(f"no clip under {a['root']} could be aligned to metric scale ({len(rows)} clips; {reasons})")
  scene = {rec.clip_id.removeprefix("re10k-"): (rec.scene_id, rec.num_frames)
           for rec in re10k_records(a["root"], fps=a["fps"])}
  scenes = sorted({scene[c][0] for c in kept})
  n = a["heldout_scenes"]
  if len(scenes) <= n:
    raise RealCamError(f"the aligned clips under {a['root']} come from {len(scenes)} scene(s) ({', '.join(scenes)}); "
                       f"realcam.heldout_scenes={n} leaves none to train on: give more clips or hold out fewer scenes")
  heldout = set(scenes[-n:])

  def records(split: str):
    for rec in re10k_records(a["root"], fps=a["fps"]):
      row = kept.get(rec.clip_id.removeprefix("re10k-"))
      if row is None or (rec.scene_id in heldout) != (split == "heldout"):
        continue
      extra = {} if embed is None else {"text_embeddings": embed(rec.caption)}
      if split == "heldout":  # the preview's depth: frame 0 through the same model (0 = none on the other frames)
        extra["depth"] = np.zeros((rec.num_frames, rec.height, rec.width), np.float32)
        extra["depth"][0] = depth(rec.frames[0])
      w2c = np.array(rec.w2c, np.float64)
      w2c[:, :3, 3] *= row["factor"]  # c_cam^metric = [R, alpha T]
      yield dataclasses.replace(rec, w2c=w2c, metric_scale=float(row["factor"]), **extra)

  for split in ("train", "heldout"):
    shards.build_dataset(lambda s=split: records(s), folder / split,
                         dict(provenance, arguments=dict(a, split=split)),
                         description=f"RealEstate10K clips from {a['root']} aligned to metric scale ({split})")
  clips = []
  for r in rows:
    scene_id, frames = scene[r["clip"]]
    split = ("heldout" if scene_id in heldout else "train") if r["kept"] else "dropped"
    clips.append({"clip": r["clip"], "scene": scene_id, "frames": frames, "split": split,
                  "factor": r.get("factor"), "reason": r["reason"]})
  (folder / CLIPS_FILE).write_text(json.dumps(clips, indent=1) + "\n")
  written = dict(provenance, clips=len(kept),
                 written_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
  (folder / shards.PROVENANCE_FILE).write_text(json.dumps(written, indent=1) + "\n")


def _validate_re10k(config) -> list[str]:
  """`field=value (why)` for the `re10k` settings no run can use (the filesystem is checked by `prepare_re10k`)."""
  bad, d, r = [], config.data, config.realcam
  if not str(d.path or "").strip():
    bad.append(f"data.path={d.path!r} (data.source={RE10K_SOURCE!r} reads a folder of RealEstate10K pose files + "
               "videos, e.g. ../shared/data/re10k_clips)")
  if "depth_model" not in r:
    bad.append(f"realcam.depth_model is not a field (data.source={RE10K_SOURCE!r} aligns the clips with a metric "
               "depth model: use configs/realcam_i2v.py:re10k)")
  elif not str(r.depth_model or "").strip():
    bad.append(f"realcam.depth_model={r.depth_model!r} (data.source={RE10K_SOURCE!r} aligns the clips to metric "
               f"scale with a metric depth model: {DEPTH_MODEL_HINT})")
  if int(r.get("heldout_scenes", 1)) < 1:
    bad.append(f"realcam.heldout_scenes={r.heldout_scenes!r} (>= 1: the samples and the evaluation use held-out "
               "scenes)")
  if not 0 <= float(r.get("align_quantile", 0.02)) < 0.5:
    bad.append(f"realcam.align_quantile={r.align_quantile!r} (the share of clips cut at each end, in [0, 0.5))")
  for name in ("align_min_points", "align_threads"):
    if int(r.get(name, 1)) < 1:
      bad.append(f"realcam.{name}={r[name]!r} (>= 1)")
  return bad


def window_frames(config) -> int:
  """Frames a clip needs for one training window: `(data.num_frames - 1) * min(data.stride) + 1`."""
  return (int(config.data.num_frames) - 1) * int(min(config.data.stride)) + 1


def _report_windows(clips: list[dict], config, folder: Path) -> None:
  """Logs the aligned dataset's split and the clips too short for the window (the training pipeline skips and
  counts them); raises `RealCamError` when samples or the evaluation need a held-out clip and none is long enough."""
  need, T = window_frames(config), int(config.data.num_frames)
  counts = {}
  for split in ("train", "heldout"):
    rows = [c for c in clips if c["split"] == split]
    short = [c["clip"] for c in rows if c["frames"] < (need if split == "train" else T)]
    counts[split] = (len(rows), len({c["scene"] for c in rows}), short)
  dropped = [c for c in clips if c["split"] == "dropped"]
  (n_train, s_train, short_train), (n_held, s_held, short_held) = counts["train"], counts["heldout"]
  log.info("aligned RealEstate10K clips %s: %d training clips (%d scenes), %d held-out (%d scenes), %d dropped%s",
           folder, n_train, s_train, n_held, s_held, len(dropped),
           "".join(f"; {c['clip']}: {c['reason']}" for c in dropped[:3]))
  if short_train:
    log.warning("%d of %d training clips are shorter than the %d frames of a window and are skipped (counted in "
                "pipeline_stats.too_short): %s", len(short_train), n_train, need, ", ".join(short_train))
  if short_held:
    log.warning("%d of %d held-out clips are shorter than the %d frames of a window and are left out of the samples "
                "and the evaluation: %s", len(short_held), n_held, T, ", ".join(short_held))
  needed = int(config.sample.num) > 0 or (config.eval.at_end and int(config.eval.get("scenes", 0)) > 0)
  if needed and len(short_held) == n_held:
    longest = max((c["frames"] for c in clips if c["split"] == "heldout"), default=0)
    raise RealCamError(f"no held-out clip has the {T} frames of a window (the longest has {longest}): samples and the "
                       "evaluation start from held-out clips; lower data.num_frames or hold out other scenes "
                       "(realcam.heldout_scenes)")


# ----------------------------------------------------------------------------------------------------------------------
# Host side: the preview and one example
# ----------------------------------------------------------------------------------------------------------------------


def mode_index(mode: str | int) -> int:
  """The index of a mode name in `MODES` (an int passes through when valid).

  Raises:
    RealCamError: an unknown mode.
  """
  if isinstance(mode, (int, np.integer)) and 0 <= int(mode) < len(MODES):
    return int(mode)
  if mode not in MODES:
    raise RealCamError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
  return MODES.index(mode)


def latent_grid(config) -> tuple[int, int, int]:
  """`(t, h, w)` of the latents of the config's window."""
  d = config.data
  ae = make_autoencoder(config, check_folder=False)  # shapes only
  t, h, w, _ = ae.latent_shape(int(d.num_frames), int(d.height), int(d.width))
  return t, h, w


def check_trajectory(w2c, num_frames: int) -> np.ndarray:
  """`float64 [T, 4, 4]` world-to-camera poses, checked.

  Raises:
    RealCamError: not `[num_frames, 4, 4]`, non-finite, or not rigid.
  """
  from camjax.geometry import CameraError, validate_poses  # pylint: disable=import-outside-toplevel
  w2c = np.asarray(w2c, np.float64)
  if w2c.shape != (num_frames, 4, 4):
    raise RealCamError(f"trajectory_w2c must be [{num_frames}, 4, 4] (one world-to-camera pose per frame, metres), "
                       f"got {list(w2c.shape)}")
  try:
    validate_poses(w2c, source="trajectory_w2c")
  except CameraError as e:
    raise RealCamError(str(e)) from None
  return w2c


# `render.preview` options of RealCam's previews: 3x3 splats (radius 1, close to the released code's 2-pixel Open3D
# points) with a 15% depth band for "the same surface". With the renderer's default 1% band, at 64x64 the
# neighbouring splats on a slanted floor are more than 1% nearer than a pixel's own point and win it, so frame 0 of the
# preview (the reference camera itself) reproduced only 48% of its covered pixels within 1/255 on held-out scenes;
# with 15%, 97% (and +1.1 dB PSNR of the later frames inside the mask, 6 scenes, /work-local probe, 2026-12-02).
PREVIEW_OPTIONS = dict(radius=1, depth_tolerance=0.15)


def scene_preview(image, depth, K, w2c, latent_shape, **options):
  """RealCam-I2V's preview of a trajectory from the first frame (`camjax.geometry.render.preview` with
  `PREVIEW_OPTIONS`).

  Args:
    image: `uint8 [H, W, 3]` first frame.
    depth: `[H, W]` its metric depth (camera z, metres; `<= 0` = none).
    K: `[3, 3]` pixel intrinsics of the image (also used for every rendered frame).
    w2c: `[T, 4, 4]` trajectory, world-to-camera, metres; `w2c[0]` is the first frame's camera, so the world frame
      may be anything (the image is lifted with `c2w_ref = inv(w2c[0])`).
    latent_shape: `(t, h, w)` of the model's latents.
    **options: `render.preview` options over `PREVIEW_OPTIONS` (`k`, `threshold`, `radius`, `depth_tolerance`, ...).

  Returns:
    `camjax.geometry.render.Preview`: `video [T, H, W, 3]` float in [0, 1], `mask [T, H, W]`, `latent_mask [t, h, w]`.

  Raises:
    RealCamError: an image / depth of the wrong shape, or a depth map without one valid pixel.
  """
  from camjax.geometry import render  # pylint: disable=import-outside-toplevel
  image = np.asarray(image)
  depth = np.asarray(depth, np.float32)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise RealCamError(f"image must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
  if depth.shape != image.shape[:2]:
    raise RealCamError(f"depth must be [H, W] = {list(image.shape[:2])} metres like the image, got {list(depth.shape)}")
  if not np.any(np.isfinite(depth) & (depth > 0)):
    raise RealCamError("depth has no valid pixel (every value is <= 0 or not finite): the preview needs metric depth")
  w2c = np.asarray(w2c, np.float64)
  try:
    return render.preview(image.astype(np.float32) / 255.0, depth, K, se3.invert(w2c[0]), w2c,
                          latent_shape=latent_shape, **{**PREVIEW_OPTIONS, **options})
  except render.RenderError as e:
    raise RealCamError(f"preview: {e}") from None


def make_example(image, depth, K, w2c, *, latent_shape, mode: str | int = "basic", last_image=None, context=None,
                 num_given: int = 1, caption: str = "", with_preview: bool = True, preview=None) -> dict[str, Any]:
  """One host example for `RealCamI2V.sample` (add a batch axis, or use `stack_examples`).

  Args:
    image: `uint8 [H, W, 3]` first frame at the model's size.
    depth: `[H, W]` its metric depth (metres), for the preview; may be None with `with_preview=False`.
    K: `[3, 3]` pixel intrinsics at the model's size.
    w2c: `[T, 4, 4]` trajectory (metres), `w2c[0]` the first frame's camera.
    latent_shape: `(t, h, w)`.
    mode: one of `MODES`.
    last_image: `uint8 [H, W, 3]` last frame (interpolation).
    context: `uint8 [T', H, W, 3]` frames to continue, `T' >= num_given` (continuation; its frame 0 replaces `image`).
    num_given: frames of `context` given (continuation, >= 1).
    caption: the text prompt.
    with_preview: render the preview (`preview`, `preview_mask` keys).
    preview: an already rendered `render.Preview` to use.

  Returns:
    `{"frames": uint8 [T, H, W, 3] (given frames in place, zeros elsewhere), "K": [T, 3, 3], "w2c": [T, 4, 4]
    relative to frame 0, "mode": int32, "num_given": int32, "caption": str[, "preview": uint8 [T, H, W, 3],
    "preview_mask": bool [t, h, w]]}`.

  Raises:
    RealCamError: a mode without its inputs (interpolation without `last_image`, continuation without `context`),
      images of another size, or as `check_trajectory` / `scene_preview`.
  """
  m = mode_index(mode)
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise RealCamError(f"image must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
  T = np.shape(w2c)[0]
  w2c = check_trajectory(w2c, T)
  rel = w2c @ se3.invert(w2c[0])[None]
  frames = np.zeros((T, *image.shape), np.uint8)
  frames[0] = image
  given = 1
  if m == INTERPOLATION:
    if last_image is None:
      raise RealCamError("mode 'interpolation' needs last_image (uint8 [H, W, 3], the last frame)")
    last = np.asarray(last_image)
    if last.shape != image.shape or last.dtype != np.uint8:
      raise RealCamError(f"last_image must be uint8 {list(image.shape)} like the first frame, got {last.dtype} "
                         f"{list(last.shape)}")
    frames[-1] = last
  elif m == LOOP:
    frames[-1] = image
  elif m == CONTINUATION:
    if context is None:
      raise RealCamError("mode 'continuation' needs context (uint8 [T', H, W, 3] frames) and num_given")
    ctx = np.asarray(context)
    given = int(num_given)
    if ctx.ndim != 4 or ctx.shape[1:] != image.shape or ctx.dtype != np.uint8 or not 1 <= given <= min(len(ctx), T - 1):
      raise RealCamError(f"continuation: context must be uint8 [T', {', '.join(map(str, image.shape))}] and "
                         f"1 <= num_given <= min(T', {T - 1}); got {ctx.dtype} {list(ctx.shape)}, "
                         f"num_given {num_given}")
    frames[:given] = ctx[:given]
  K = np.broadcast_to(np.asarray(K, np.float64), (T, 3, 3))
  out = {"frames": frames, "K": K.astype(np.float32), "w2c": rel.astype(np.float32), "mode": np.int32(m),
         "num_given": np.int32(given), "caption": np.str_(caption)}
  if with_preview or preview is not None:
    pv = preview if preview is not None else scene_preview(frames[0], depth, K[0], rel, latent_shape)
    out["preview"] = np.round(np.asarray(pv.video) * 255).clip(0, 255).astype(np.uint8)
    out["preview_mask"] = np.asarray(pv.latent_mask, bool)
  return out


def stack_examples(examples) -> dict[str, np.ndarray]:
  """A host batch `{key: [B, ...]}` from examples of `make_example` (same keys)."""
  return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}


def held_out_example(config, index: int) -> dict[str, Any]:
  """Held-out scene `HELD_OUT_SEED + seed + index` (never trained on) at the config's size: the ground-truth video
  as `frames`, its metric cameras relative to frame 0, the preview from frame 0's rendered depth, mode
  `sample.mode`, plus `depth [T, H, W]`, `preview_pixel_mask [T, H, W]` (the preview's 5x5-covered pixels),
  `metric_scale`, `trajectory`, `fps`, `clip_id`."""
  d, s = config.data, config.sample
  seed = HELD_OUT_SEED + int(config.seed) + int(index)
  clip = render_scaled_scene(seed, num_frames=int(d.num_frames), size=int(d.render_size),
                             scale_range=config.realcam.scale_range)
  rel = clip.cameras.relative(0)
  pv = scene_preview(clip.frames[0], clip.depth[0], rel.K[0], rel.w2c, latent_grid(config))
  ex = make_example(clip.frames[0], None, rel.K[0], rel.w2c, latent_shape=latent_grid(config), caption=clip.caption,
                    preview=pv)
  ex.update(frames=clip.frames, mode=np.int32(mode_index(s.get("mode", "basic"))),
            num_given=np.int32(max(2, int(d.num_frames) // 4 + 1)), depth=clip.depth,
            preview_pixel_mask=np.asarray(pv.mask, bool), metric_scale=np.float32(clip.scale),
            trajectory=np.str_(clip.trajectory), fps=np.float32(clip.fps), clip_id=np.str_(f"realcam-{seed:07d}"))
  return ex


class _HeldOut:
  """`index -> held_out_example(config, index)` (a module-level class, picklable for Grain)."""

  def __init__(self, config):
    self.config = config

  def __call__(self, index):
    return held_out_example(self.config, int(index))


def clip_example(config, record) -> dict[str, Any]:
  """The first window of an aligned held-out clip (`prepare_re10k`) at the config's size, as `held_out_example`:
  frames 0 .. T-1 resized to cover `data.height x data.width` and centre-cropped (K and depth with them, as the
  training pipeline does), the metric cameras relative to frame 0, the preview from frame 0's metric depth (the
  depth model's, stored with the record), mode `sample.mode`; `trajectory` says how far the camera travels.

  Raises:
    camjax.data.pipeline.ClipTooShortError: the clip has fewer than `data.num_frames` frames.
    RealCamError: the record has no valid depth of frame 0.
  """
  from camjax.data.pipeline import (ClipTooShortError,  # pylint: disable=import-outside-toplevel
                                    resize_center_crop_window)
  d, s = config.data, config.sample
  T = int(d.num_frames)
  if record.num_frames < T:
    raise ClipTooShortError(record.clip_id, record.num_frames, f"{record.num_frames} frames, a window needs {T}")
  if record.depth is None or not np.any(np.asarray(record.depth[0]) > 0):
    raise RealCamError(f"clip {record.clip_id} has no metric depth of frame 0 (the preview needs it): an aligned "
                       "held-out record of prepare_re10k carries it")
  window = resize_center_crop_window(record, np.arange(T), int(d.height), int(d.width), with_depth=True)
  frames, rel, depth = window["frames"], window["cameras"].relative(0), window["depth"]
  grid = latent_grid(config)
  pv = scene_preview(frames[0], depth[0], rel.K[0], rel.w2c, grid)
  ex = make_example(frames[0], None, rel.K[0], rel.w2c, latent_shape=grid, caption=record.caption, preview=pv)
  travel = float(np.linalg.norm(np.asarray(rel.centers), axis=-1).max())
  ex.update(frames=frames, K=np.asarray(rel.K, np.float32), mode=np.int32(mode_index(s.get("mode", "basic"))),
            num_given=np.int32(max(2, T // 4 + 1)), depth=depth, preview_pixel_mask=np.asarray(pv.mask, bool),
            metric_scale=np.float32(record.metric_scale), trajectory=np.str_(f"real, {travel:.2f} m"),
            fps=np.float32(record.fps), clip_id=np.str_(record.clip_id))
  return ex


def clip_examples(config, folder, limit: int | None = None) -> tuple[list[dict[str, Any]], list[str]]:
  """`(examples, too_short)`: `clip_example` of the records of the dataset at `folder` in order (at most `limit`),
  and the ids of the clips too short for the window (skipped)."""
  from camjax.data.pipeline import ClipTooShortError  # pylint: disable=import-outside-toplevel
  from camjax.data.shards import ShardSource  # pylint: disable=import-outside-toplevel
  source = ShardSource(folder)
  examples, too_short = [], []
  for i in range(len(source)):
    if limit is not None and len(examples) >= limit:
      break
    record = source[i]
    try:
      examples.append(clip_example(config, record))
    except ClipTooShortError:
      too_short.append(record.clip_id)
  return examples, too_short


# ----------------------------------------------------------------------------------------------------------------------
# Inside jit: modes, given frames, cameras
# ----------------------------------------------------------------------------------------------------------------------


def loop_indices(num_frames: int) -> np.ndarray:
  """Frame order of a looping clip made from a clip's first half: `0, 1, .., m, m - 1, .., 0` (`m = (T - 1) / 2`).

  Raises:
    RealCamError: an even frame count (a causal VAE's `T = 1 + 4k` is always odd).
  """
  if num_frames % 2 == 0:
    raise RealCamError(f"a looping clip needs an odd number of frames, got {num_frames}")
  m = (num_frames - 1) // 2
  return np.concatenate([np.arange(m + 1), np.arange(m - 1, -1, -1)])


def max_continuation(num_frames: int) -> int:
  """The most frames continuation gives in training: half the clip, rounded up (at least 2)."""
  return max(2, (num_frames + 1) // 2)


def given_frames(mode, num_given, num_frames: int):
  """`[B, T]` bool: the frames each mode gives (basic: 0; interpolation and loop: 0 and T-1; continuation: the
  first `num_given`)."""
  f = jnp.arange(num_frames)[None]
  mode, num_given = jnp.asarray(mode)[:, None], jnp.asarray(num_given)[:, None]
  ends = (f == 0) | (f == num_frames - 1)
  return jnp.where((mode == INTERPOLATION) | (mode == LOOP), ends,
                   jnp.where(mode == CONTINUATION, f < jnp.maximum(num_given, 1), f == 0))


def latent_slots(given, temporal_factor: int, latent_frames: int):
  """`[B, t, tf]` float32: which of the video frames each latent frame of a causal VAE encodes are given (latent
  frame 0 encodes frame 0 alone: all its slots are frame 0; latent frame k encodes frames `tf (k - 1) + 1 .. tf k`).

  Raises:
    RealCamError: `T != 1 + tf (t - 1)`.
  """
  T = given.shape[-1]
  if T != 1 + temporal_factor * (latent_frames - 1):
    raise RealCamError(f"{T} frames do not fit {latent_frames} latent frames of a causal VAE with temporal factor "
                       f"{temporal_factor}")
  idx = np.concatenate([np.zeros(temporal_factor - 1, int), np.arange(T)]).reshape(latent_frames, temporal_factor)
  return given[:, idx].astype(jnp.float32)


def normalise_translations(w2c):
  """Raw (SfM-like) scale: poses relative to frame 0 with translations divided by the largest camera-centre
  distance from frame 0 (CamI2V's `s = max_i |t_i|`); clips that do not translate are left as they are.

  Args:
    w2c: `[B, T, 4, 4]` world-to-camera.

  Returns:
    `[B, T, 4, 4]` relative, unit-scale poses.
  """
  rel = w2c @ se3.invert(w2c[:, :1])
  centres = se3.invert(rel)[..., :3, 3]
  s = jnp.max(jnp.linalg.norm(centres, axis=-1), axis=1)  # [B]
  s = jnp.where(s > 1e-6, s, 1.0)[:, None, None]
  return rel.at[..., :3, 3].set(rel[..., :3, 3] / s)


def _paste_last(frames, loop):
  """`frames [B, T, ...]` with frame T-1 replaced by frame 0 where `loop [B]` (sampling a loop)."""
  last = jnp.where(loop[:, None, None, None], frames[:, 0], frames[:, -1])
  return frames.at[:, -1].set(last)


def conditions(static, batch: dict, rng, training: bool) -> dict:
  """Latents and DiT inputs of a batch (inside jit).

  Training draws per sample a mode (`train.mode_probs`), a continuation length in `[2, max_continuation(T)]` and
  camera dropout, and turns loop samples into looping clips (`loop_indices`, frames and cameras). Sampling reads
  `batch["mode"]`, `batch["num_given"]` (default: basic) and, for loop, takes frame 0 as the last frame.

  Returns:
    `{"latents" [B, t, h, w, C], "camera" [B, t, h, w, 6], "clean" [B, t, h, w, 1], "extra_in" [B, t, h, w, C + tf],
    "given" [B, T] bool, "video" [B, T, H, W, 3] in [-1, 1]}`.

  Raises:
    RealCamError: frames or cameras of the wrong shape.
  """
  c, ae = static.config, static.autoencoder
  frames, w2c, K = batch["frames"], batch["w2c"], batch["K"]
  b, T = frames.shape[:2]
  if frames.ndim != 5 or w2c.shape != (b, T, 4, 4) or K.shape != (b, T, 3, 3):
    raise RealCamError(f"batch frames {frames.shape}, w2c {w2c.shape}, K {K.shape}: need [B, T, H, W, 3], "
                       "[B, T, 4, 4], [B, T, 3, 3] (one camera per frame)")
  if training:
    k_mode, k_num, k_drop = jax.random.split(rng, 3)
    probs = jnp.asarray(c.train.mode_probs, jnp.float32)
    mode = jax.random.choice(k_mode, len(MODES), (b,), p=probs / probs.sum())
    num_given = jax.random.randint(k_num, (b,), 2, max_continuation(T) + 1)
    loop = mode == LOOP
    idx = loop_indices(T)
    frames = jnp.where(loop[:, None, None, None, None], frames[:, idx], frames)
    w2c = jnp.where(loop[:, None, None, None], w2c[:, idx], w2c)
  else:
    mode = batch["mode"] if "mode" in batch else jnp.full((b,), BASIC, jnp.int32)
    num_given = batch["num_given"] if "num_given" in batch else jnp.ones((b,), jnp.int32)
    frames = _paste_last(frames, mode == LOOP)
  video = frames.astype(jnp.float32) / 127.5 - 1.0
  given = given_frames(mode, num_given, T)
  latents = ae.encode(video)
  _, t, h, w, _ = latents.shape
  cond_latents = ae.encode(jnp.where(given[:, :, None, None, None], video, 0.0))
  slots = latent_slots(given, ae.temporal_factor, t)  # [B, t, tf]
  slot_maps = jnp.broadcast_to(slots[:, :, None, None, :], (b, t, h, w, slots.shape[-1]))
  extra_in = jnp.concatenate([cond_latents, slot_maps], axis=-1)
  clean = jnp.broadcast_to(jnp.all(slots > 0, axis=-1)[:, :, None, None, None], (b, t, h, w, 1)).astype(jnp.float32)
  if c.realcam.scale == "raw":
    w2c = normalise_translations(w2c)
  cams = Cameras(K=K, w2c=w2c, height=c.data.height, width=c.data.width)
  camera = cc2.camera_plucker(cams, (t, h, w), ae.temporal_factor, relative=True)
  if training:
    camera = cc2.drop_cameras(k_drop, camera, None, c.train.camera_dropout)
  return dict(latents=latents, camera=camera, clean=clean, extra_in=extra_in, given=given, video=video, w2c=w2c, K=K,
              anchor_frame=anchor_frames(mode, num_given))


def anchor_frames(mode, num_given):
  """`[B]` int32: the given frame the `depth_warp` anchor reprojects: the last given frame in continuation
  (`num_given - 1`, the nearest in time to the frames to generate), frame 0 in basic, interpolation and loop (the
  first frame, the one the trajectory and the preview start from; interpolation's last frame still enters through
  the given-frame channels)."""
  mode, num_given = jnp.asarray(mode), jnp.asarray(num_given)
  return jnp.where(mode == CONTINUATION, jnp.maximum(num_given, 1) - 1, 0).astype(jnp.int32)


def frame_anchor(video, anchor_frame, autoencoder):
  """The `depth_warp` anchor frame in the pixel autoencoder's latent layout (the layout `reproject_anchor` reads).

  Args:
    video: `[B, T, H, W, 3]` in [-1, 1] (the given frames in place).
    anchor_frame: `[B]` int frame index (`anchor_frames`).
    autoencoder: the pixel autoencoder.

  Returns:
    `[B, t, h, w, C]` latents of a video that shows the anchor frame in every slot.
  """
  frame = jnp.take_along_axis(video, anchor_frame[:, None, None, None, None], axis=1)  # [B, 1, H, W, 3]
  return autoencoder.encode(jnp.broadcast_to(frame, video.shape))


def anchor_poses(w2c, K, anchor_frame, latent_frames: int, temporal_factor: int):
  """Per output slot the pose of its video frame relative to the anchor frame, for `model.anchor="depth_warp"`
  (RealCam's counterpart of `anchor.anchor_poses`, whose anchor is the last clean latent frame: here it is any
  given frame, `anchor_frames`). Every RealCam batch has cameras; camera dropout and guidance's null-camera sets drop
  only the Plücker tokens and keep this warp (the same in every guidance set).

  Slot `(i, ft)` of the causal pixel autoencoder holds video frame `max(i * tf + ft - (tf - 1), 0)`.

  Args:
    w2c: `[B, T, 4, 4]` the cameras the model is conditioned on (metric, or normalised with `realcam.scale="raw"`:
      then the warp's magnitude is as wrong as the normalisation makes it).
    K: `[B, T, 3, 3]` pixel intrinsics.
    anchor_frame: `[B]` int.
    latent_frames, temporal_factor: `t` and `tf`.

  Returns:
    `(rel [B, t, tf, 4, 4]` = `w2c_anchor @ c2w_slot`, `K_slot [B, t, tf, 3, 3]`, `K_anchor [B, 3, 3])`.
  """
  b, T = w2c.shape[:2]
  tf = temporal_factor
  frames = slot_frames(latent_frames, tf, T).reshape(-1)  # [t * tf]
  a = jnp.clip(anchor_frame, 0, T - 1)[:, None, None, None]
  w2c_a = jnp.take_along_axis(w2c, a, axis=1)[:, 0]
  rel = w2c_a[:, None] @ se3.invert(w2c[:, frames])
  K_anchor = jnp.take_along_axis(K, a, axis=1)[:, 0]
  return (rel.reshape(b, latent_frames, tf, 4, 4), K[:, frames].reshape(b, latent_frames, tf, 3, 3), K_anchor)


# ----------------------------------------------------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------------------------------------------------


class RealCamI2V(Method):
  """RealCam-I2V on the shared stack (module docstring)."""

  name = "realcam_i2v"
  step_vae = True  # the given frames (of a mode drawn per sample) and the preview are encoded inside the step

  def batch_keys(self, config):
    del config
    return ("K", "w2c"), ("mode", "num_given", "preview", "preview_mask")

  def prepare_data(self, config, workdir):
    """The procedural scenes with per-scene scale, rendered once (`prepare_scenes`), or with `data.source="re10k"`
    the RealEstate10K-layout clips aligned to metric scale once (`prepare_re10k`: training and held-out clips); the
    generic windowed pipeline reads them for training."""
    if config.data.source == RE10K_SOURCE:
      return prepare_re10k(config, workdir)
    return {"main": prepare_scenes(config, workdir)}

  def pipeline(self, config, datasets, *, training, batch_size, start_index, seed, process_index=None,
               process_count=None):
    """Training: None (the generic windowed clip pipeline over the rendered scenes or the aligned clips).
    Evaluation: held-out scenes (`held_out_example`, with their previews), or with `data.source="re10k"` the first
    windows of the held-out clips (`clip_example`; repeated when there are fewer than `batch_size`), one epoch."""
    del start_index, seed, process_index, process_count
    if training:
      return None
    import grain  # pylint: disable=import-outside-toplevel
    if config.data.source == RE10K_SOURCE:
      examples, _ = clip_examples(config, datasets["heldout"], limit=batch_size)
      if not examples:
        raise RealCamError(f"no held-out clip has the {config.data.num_frames} frames of a window: lower "
                           "data.num_frames or hold out other scenes (realcam.heldout_scenes)")
      examples = [examples[i % len(examples)] for i in range(batch_size)]
      return grain.MapDataset.source(examples).batch(batch_size, drop_remainder=False).to_iter_dataset()
    n = max(int(config.data.eval_scenes), batch_size)
    ds = grain.MapDataset.range(n).map(_HeldOut(config)).batch(batch_size, drop_remainder=False)
    return ds.to_iter_dataset()

  def dit_options(self, config):
    ae = make_autoencoder(config, check_folder=False)  # shapes only
    return {"extra_in_channels": ae.latent_channels + ae.temporal_factor}

  def conditioners(self, config, dit_config, rngs):
    dtypes = dict(dtype=jnp.dtype(dit_config.dtype), param_dtype=jnp.dtype(dit_config.param_dtype))
    out = {"camera": cc2.CameraPatchify(dit_config.dim, dit_config.patch_size, rngs=rngs, **dtypes)}
    if config.model.get("anchor", "none") == "depth_warp":
      out["disparity_head"] = DisparityHead(dit_config.dim, dit_config.patch_size, config.autoencoder.temporal_factor,
                                            rngs=rngs, init=float(config.model.get("anchor_disparity", 0.25)))
    return out

  def validate(self, config):
    bad = []
    d, r, s, t = config.data, config.realcam, config.sample, config.train
    if d.source not in DATA_SOURCES:
      bad.append(f"data.source={d.source!r} (RealCam-I2V trains on the procedural scenes it renders, "
                 f"{DATA_SOURCE!r}, or on RealEstate10K-layout clips it aligns to metric scale, {RE10K_SOURCE!r}: "
                 "configs/realcam_i2v.py:re10k)")
    elif d.source == DATA_SOURCE:
      if (d.height, d.width) != (d.render_size,) * 2:
        bad.append(f"data.height/width={d.height}x{d.width} (scenes are used at their render size {d.render_size})")
      lo, hi = r.scale_range
      if not 0 < lo <= hi:
        bad.append(f"realcam.scale_range={tuple(r.scale_range)!r} (0 < low <= high)")
    else:
      bad += _validate_re10k(config)
    if r.scale not in SCALES:
      bad.append(f"realcam.scale={r.scale!r} (one of {SCALES})")
    runs = tuple(config.eval.get("runs", ()) or ())
    if runs and (set(runs) - set(RUNS) or not set(REQUIRED_RUNS) <= set(runs)):
      bad.append(f"eval.runs={runs!r} (names of {tuple(RUNS)}, with {REQUIRED_RUNS}; empty = all)")
    probs = tuple(t.mode_probs)
    if len(probs) != len(MODES) or min(probs) < 0 or sum(probs) <= 0:
      bad.append(f"train.mode_probs={probs!r} (one weight >= 0 per mode {MODES}, not all 0)")
    if s.mode not in MODES:
      bad.append(f"sample.mode={s.mode!r} (one of {MODES})")
    if s.shaping_target not in TARGETS:
      bad.append(f"sample.shaping_target={s.shaping_target!r} (one of {TARGETS})")
    if not 0 <= s.shaping_threshold <= 1:
      bad.append(f"sample.shaping_threshold={s.shaping_threshold!r} (in [0, 1])")
    if config.text.kind == "precomputed" and not str(config.text.get("encoder_path", "") or "").strip():
      bad.append("text.encoder_path='' (text.kind='precomputed': RealCam-I2V writes its own records and builds its "
                 "examples from captions, so it embeds them with the umT5 encoder of text.encoder_path)")
    if config.autoencoder.kind not in ("pixel", "wan_vae"):
      bad.append(f"autoencoder.kind={config.autoencoder.kind!r} (the step encodes the given frames and the preview: "
                 "'pixel', or 'wan_vae' with autoencoder.path, the WAN VAE inside the step)")
    if int(d.num_frames) % 2 == 0:
      bad.append(f"data.num_frames={d.num_frames!r} (loop clips need an odd count, 1 + 4k)")
    anchor = config.model.get("anchor", "none")
    if anchor not in ANCHORS:
      bad.append(f"model.anchor={anchor!r} (one of {ANCHORS})")
    elif anchor != "none" and config.objective.get("prediction") != "sample":
      bad.append(f"model.anchor={anchor!r} (a residual on the condition frame needs objective.prediction='sample')")
    elif anchor == "depth_warp" and config.autoencoder.kind != "pixel":
      bad.append(f"model.anchor={anchor!r} with autoencoder.kind={config.autoencoder.kind!r} (the depth warp "
                 "reprojects pixel-autoencoder latents; use 'condition_frame' or 'none' with a learned VAE)")
    elif anchor == "depth_warp" and float(config.model.get("anchor_disparity", 0.25)) <= 0:
      bad.append(f"model.anchor_disparity={config.model.anchor_disparity!r} (the initial disparity, > 0)")
    return bad

  # ------------------------------------------------------------------------------------------------ the DiT inputs
  @staticmethod
  def dit_inputs(model, camera, extra_in) -> dict:
    """The camera token map and the given-frame channels."""
    dtype = jnp.dtype(model.dit.config.dtype)
    return {"token_map": model.camera(camera.astype(dtype)), "extra_in": extra_in.astype(dtype)}

  @staticmethod
  def anchor(static, cond):
    """The anchor of the clean-sample prediction: `anchor.condition_anchor` (the last clean latent frame
    repeated) with `model.anchor="condition_frame"`, the anchor frame (`frame_anchor`) with "depth_warp", else None.
    `cond` is the output of `conditions`."""
    kind = static.config.model.get("anchor", "none")
    if kind == "none":
      return None
    if kind == "depth_warp":
      return frame_anchor(cond["video"], cond["anchor_frame"], static.autoencoder)
    return condition_anchor(cond["latents"], cond["clean"], static.autoencoder.temporal_factor)

  @staticmethod
  def anchored(model, static, cond, anchor):
    """The DiT as the objective sees it: its output plus `anchor` ("condition_frame"), or plus the anchor frame
    reprojected through the cameras (`anchor_poses` of `cond`) at the disparity head's per-cell disparity
    ("depth_warp", `anchor.reproject_anchor`)."""
    if anchor is None:
      return model.dit
    ae = static.autoencoder
    warp = static.config.model.get("anchor", "none") == "depth_warp"
    poses = anchor_poses(cond["w2c"], cond["K"], cond["anchor_frame"], anchor.shape[1], ae.temporal_factor) if warp \
        else ()

    def dit(latents, *args, **kwargs):
      # Guidance concatenates its k condition sets along the batch: anchor and poses repeat per set.
      k = latents.shape[0] // anchor.shape[0]
      tiled = [jnp.tile(x, (k,) + (1,) * (x.ndim - 1)) for x in (anchor, *poses)]
      if not warp:
        return model.dit(latents, *args, **kwargs) + tiled[0]
      out, hidden = model.dit(latents, *args, return_hidden=True, **kwargs)
      disparity = model.disparity_head(hidden[-1], latents.shape[1:4])
      return out + reproject_anchor(tiled[0], disparity, *tiled[1:], ae.spatial_factor, ae.temporal_factor)

    return dit

  def loss(self, model, static, batch, rng):
    static = bind_autoencoder(model, static)  # autoencoder.kind="wan_vae": the generator's VAE encodes
    c = static.config
    k_cond, k_noise, k_sigma, k_text = jax.random.split(rng, 4)
    cond = conditions(static, batch, k_cond, training=True)
    latents = cond["latents"]
    noise = jax.random.normal(k_noise, latents.shape, latents.dtype)
    sigma = static.objective.sample_level(k_sigma, latents.shape[0])
    text, text_mask = drop_text(k_text, text_states(model, batch), batch["text_mask"], c.train.text_dropout)
    dit = self.anchored(model, static, cond, self.anchor(static, cond))
    return denoising_loss(dit, static.objective, latents, noise, sigma, text, text_mask, clean_mask=cond["clean"],
                          **self.dit_inputs(model, cond["camera"], cond["extra_in"]))

  def sample(self, model, static, batch, rng, *, shaping: bool | None = None, target: str | None = None,
             threshold: float | None = None, paste_given: bool = True):
    """A video `[B, T, H, W, 3]` in [-1, 1] (inside jit): the objective's sampler (Euler with `sample.shift`), the
    text + camera chain, noise shaping from `batch["preview"]` / `batch["preview_mask"]` (`shaping`, `target`,
    `threshold` default to `sample.shaping`, `sample.shaping_target`, `sample.shaping_threshold`), then the clean
    latent frames held by `clean_hook`; the given frames written back after decoding (`paste_given`).

    Raises:
      RealCamError: shaping asked for and the batch has no preview.
    """
    static = bind_autoencoder(model, static)  # autoencoder.kind="wan_vae": the generator's VAE encodes and decodes
    c = static.config
    s = c.sample
    shaping = bool(s.shaping) if shaping is None else shaping
    k_noise, k_sampler = jax.random.split(rng)
    cond = conditions(static, batch, rng, training=False)
    latents, clean = cond["latents"], cond["clean"]
    text = text_states(model, batch)
    blank, blank_mask = null_text(text.shape)
    dit = self.anchored(model, static, cond, self.anchor(static, cond))

    def model_fn(latents, timesteps, text, text_mask, camera, extra_in):
      return dit(latents, timesteps, text, text_mask, **self.dit_inputs(model, camera, extra_in))

    camera = cond["camera"]
    full = dict(text=text, text_mask=batch["text_mask"].astype(bool), camera=camera)
    if float(s.w_text) == 1.0 and float(s.w_cam) == 1.0:
      sets, weights = [full], []
    else:
      null_cam = jnp.zeros_like(camera)
      sets = [dict(text=blank, text_mask=blank_mask, camera=null_cam), dict(full, camera=null_cam), full]
      weights = [s.w_text, s.w_cam]
    denoise = guided_denoiser(model_fn, static.objective, sets, weights, extra_in=cond["extra_in"])
    hooks = []
    if shaping:
      denoise, hooks = shaping_inputs(static, batch, denoise, target=target or s.shaping_target,
                                      threshold=float(s.shaping_threshold if threshold is None else threshold))
    hooks = [*hooks, clean_hook(latents, clean, static.objective)]
    noise = jax.random.normal(k_noise, latents.shape, latents.dtype)
    opts = dict(shift=s.shift) if static.objective.kind == "flow" else dict(eta=float(s.get("eta", 0.0)))
    out = static.objective.sample(denoise, noise, steps=s.steps, hooks=hooks, rng=k_sampler, **opts)
    video = clip_video(static, out)
    if paste_given:
      video = jnp.where(cond["given"][:, :, None, None, None], cond["video"], video)
    return video

  def evaluate_at_end(self, weights, config, mesh, workdir, model):
    """Shaping vs no shaping vs the baselines on `eval.scenes` held-out scenes (`evaluate_scenes`), or with
    `data.source="re10k"` on up to `eval.scenes` held-out real clips (`evaluate_clips`) -> `workdir/eval_realcam/`."""
    n = int(config.eval.get("scenes", 0))
    if not n or jax.process_count() > 1:
      return
    out = Path(workdir) / "eval_realcam"
    if config.data.source == RE10K_SOURCE:
      result = evaluate_clips(self, weights, config, mesh, model, prepare_re10k(config, workdir)["heldout"], n, out)
    else:
      result = evaluate_scenes(self, weights, config, mesh, model, n, out)
    log.info("RealCam-I2V held-out %s (%s): %s", "clips" if config.data.source == RE10K_SOURCE else "scenes", out,
             {k: round(v["psnr_mask"], 2) for k, v in result["aggregate"].items()})


def shaping_inputs(static, batch, denoise, *, target: str = "z_t", threshold: float = 0.9):
  """`(denoise, hooks)` with scene-constrained noise shaping (`camjax.diffusion.noise_shaping`): the batch's preview
  `[B, T, H, W, 3]` uint8 encoded by the autoencoder, its `preview_mask [B, t, h, w]`. Put `clean_hook` after the
  hooks.

  Raises:
    RealCamError: the batch has no `preview` / `preview_mask`, or they do not fit the latents.
  """
  if "preview" not in batch or "preview_mask" not in batch:
    raise RealCamError("noise shaping needs batch['preview'] (uint8 [B, T, H, W, 3]) and batch['preview_mask'] "
                       "(bool [B, t, h, w]): build examples with make_example, or sample with shaping=False")
  preview = static.autoencoder.encode(batch["preview"].astype(jnp.float32) / 127.5 - 1.0)
  mask = batch["preview_mask"]
  if mask.shape != preview.shape[:4]:
    raise RealCamError(f"preview_mask {mask.shape} does not fit the preview latents {preview.shape[:4]} [B, t, h, w]")
  return noise_shaping(denoise, preview, mask, static.objective, target=target, threshold=threshold)


METHOD = RealCamI2V()


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation on held-out scenes
# ----------------------------------------------------------------------------------------------------------------------

# name -> sample options; "shaping_to_0.5" shapes down to sigma 0.5 instead of the paper's 0.9 (a probe of the
# schedule, not the paper); "scale_x0.5" / "scale_x2" sample without shaping along the trajectory with its
# translations halved / doubled (a model that reads metric scale loses PSNR; a raw-scale model cannot tell).
RUNS = {"shaping": dict(shaping=True), "no_shaping": dict(shaping=False), "shaping_x0": dict(shaping=True, target="x0"),
        "shaping_to_0.5": dict(shaping=True, threshold=0.5),
        "scale_x0.5": dict(shaping=False, translation=0.5), "scale_x2": dict(shaping=False, translation=2.0)}
BASELINES = ("repeat_first_frame", "mean_colour", "preview")
COLUMNS = (*RUNS, *BASELINES)
REQUIRED_RUNS = ("shaping",)  # what the report compares with the others; `eval.runs` may leave out the rest


def eval_runs(config) -> dict[str, dict]:
  """The sampling runs of the end-of-run evaluation: `eval.runs` (names of `RUNS`), or every run when it is empty
  or absent."""
  names = tuple(config.eval.get("runs", ()) or ())
  return {n: o for n, o in RUNS.items() if not names or n in names}
NAMES = {"shaping": "shaping (z_t, eq.)", "no_shaping": "no shaping", "shaping_x0": "shaping (x0, Fig. 6)",
         "shaping_to_0.5": "shaping (z_t) while sigma > 0.5",
         "scale_x0.5": "no shaping, translations x0.5", "scale_x2": "no shaping, translations x2",
         "repeat_first_frame": "repeat first frame", "mean_colour": "mean colour", "preview": "the preview itself"}


CAMERA_KEYS = ("camera_success", "rot_err", "trans_err", "cammc", "trans_err_abs", "cammc_abs")


def metric_camera_errors(video, ex, *, trials: int = 1) -> dict[str, float]:
  """RealCam-I2V's camera errors of one video of an evaluation example (`held_out_example` / `clip_example`): SfM
  (`camjax.eval.camera.camera_accuracy`, `trials` seeds, the example's K held fixed) against the example's metric
  cameras `w2c`, CamI2V's relative protocol (`rot_err` radians, `trans_err`, `cammc`, summed over frames) and its
  metric variants (`trans_err_abs`, `cammc_abs`: the reconstruction given metres by frame 0's metric depth
  `ex["depth"][0]`, the depth the preview lifts the given image with, then both trajectories normalised by the
  ground truth's scale). NaN where SfM failed or frame 0 observes too few points; `camera_success` is the fraction
  of successful trials.

  Args:
    video: uint8 `[T, H, W, 3]` at the example's size.
  """
  from camjax.eval.camera import camera_accuracy  # pylint: disable=import-outside-toplevel
  video = np.asarray(video)
  cams = Cameras.create(np.asarray(ex["w2c"], np.float64), np.asarray(ex["K"], np.float64), height=video.shape[1],
                        width=video.shape[2])
  r = camera_accuracy(video, cams, trials=trials, protocols=("cami2v",),
                      metric_depth=np.asarray(ex["depth"][0], np.float64))
  return {"camera_success": float(r["success_ratio"]), **{k: r["cami2v"][k] for k in ("rot_err", "trans_err", "cammc")},
          "trans_err_abs": r["cami2v_abs"]["trans_err"], "cammc_abs": r["cami2v_abs"]["cammc"]}


def _camera_report(result: dict) -> list[str]:
  """The camera-error table of the report (nothing when no run was scored)."""
  camera = result.get("camera") or {}
  if not camera:
    return []
  cols = list(camera)
  header = {**NAMES, "ground_truth": "ground-truth video (SfM reference)"}
  labels = {"camera_success": "SfM success", "rot_err": "RotErr (rad, summed)", "trans_err": "TransErr (relative)",
            "cammc": "CamMC (relative)", "trans_err_abs": "TransErr_abs (metric)", "cammc_abs": "CamMC_abs (metric)"}
  fmt = lambda v: f"{v:.3f}" if np.isfinite(v) else "–"
  lines = ["", "Camera error (CamI2V protocol, REFERENCE.md section 4; lower is better): SfM of each video with the "
           "true intrinsics held fixed against the trajectory it was asked to follow, poses relative to frame 0, "
           "summed over frames. `_abs` are RealCam-I2V's metric variants: the reconstruction is put in metres with "
           "frame 0's metric depth and both trajectories are divided by the ground truth's scale, so moving the right "
           "way by the wrong distance costs. The ground-truth video's errors are what SfM does on the real motion at "
           "this size, a reference, not a bound: a generated view warped from one frame can register more easily "
           f"(docs/realcam.md). Scored on the first {result.get('camera_scenes', '')} scenes (`eval.camera_scenes`); "
           "means over those where SfM succeeded.", "",
           "| metric | " + " | ".join(header[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
  lines += [f"| {labels[k]} | " + " | ".join(fmt(camera[c][k]) for c in cols) + " |" for k in CAMERA_KEYS]
  return lines


def paired_difference(diffs) -> dict:
  """`{"mean", "se", "wins", "n"}` of per-scene differences (NaN-skipping): their mean, the standard error of that
  mean (sample standard deviation / sqrt(n); NaN for fewer than 2 scenes) and how many are > 0."""
  d = np.asarray(diffs, np.float64)
  d = d[np.isfinite(d)]
  n = int(d.size)
  return {"mean": float(d.mean()) if n else float("nan"),
          "se": float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"), "wins": int((d > 0).sum()), "n": n}


def masked_psnr(video, gt, mask) -> float:
  """PSNR (dB) of `video` against `gt` (both `uint8 [T, H, W, 3]`) over the pixels where `mask [T, H, W]`; NaN
  when the mask is empty."""
  m = np.asarray(mask, bool)
  if not m.any():
    return float("nan")
  diff = (np.asarray(video, np.float64) - np.asarray(gt, np.float64)) / 255.0
  mse = float(np.mean(np.square(diff[m])))
  return float(10 * np.log10(1.0 / max(mse, 1e-10)))


def _scaled_translations(w2c: np.ndarray, factor: float) -> np.ndarray:
  """Relative poses `w2c [T, 4, 4]` (frame 0 = identity) with every translation multiplied by `factor`."""
  out = np.array(w2c, np.float32)
  out[:, :3, 3] *= factor
  return out


def evaluate_scenes(method: RealCamI2V, weights, config, mesh, model, num_scenes: int, out_dir) -> dict:
  """Scores the model on `num_scenes` held-out scenes (basic mode from the true first frame, along the true metric
  trajectory) and writes `report.md`, `metrics.json` and `strip_<i>.png` (rows: ground truth, preview, shaping, no
  shaping, Fig. 6's variant) to `out_dir` (`evaluate_examples`).

  Returns:
    `{"num_scenes", "aggregate": {column: {"psnr_mask", "psnr", "ssim"}}, "shaping_beats": {...}, "shaping_minus":
    {column: paired_difference of shaping minus it, PSNR in mask}, "camera": {run or "ground_truth": means of
    CAMERA_KEYS} (the `eval.camera_runs`; per scene in each row, `metric_camera_errors`), "per_scene"}`.
  """
  examples = (held_out_example(config, i) for i in range(num_scenes))
  info = {"data": "procedural", "scale_range": list(config.realcam.scale_range)}
  return evaluate_examples(method, weights, config, mesh, model, examples, out_dir, info)


def evaluate_clips(method: RealCamI2V, weights, config, mesh, model, folder, max_clips: int, out_dir) -> dict:
  """Scores the model on up to `max_clips` held-out real clips of the aligned dataset at `folder` (`prepare_re10k`'s
  "heldout"): basic mode from the clip's first frame along its metric (aligned) trajectory, the preview from the
  depth model's depth of frame 0 (`clip_example`), scored against the clip's real frames (`evaluate_examples`).
  Clips too short for the window are left out and listed (`clips_too_short`).

  Returns:
    As `evaluate_scenes`, plus `clips_too_short`.

  Raises:
    RealCamError: no held-out clip is long enough for the window.
  """
  examples, too_short = clip_examples(config, folder, limit=max_clips)
  if not examples:
    raise RealCamError(f"no held-out clip of {folder} has the {config.data.num_frames} frames of a window "
                       f"({len(too_short)} too short): lower data.num_frames or hold out other scenes")
  info = {"data": "re10k", "clips_too_short": too_short, "depth_model": str(config.realcam.get("depth_model", "")),
          "clips": str(config.data.path)}
  return evaluate_examples(method, weights, config, mesh, model, examples, out_dir, info)


def evaluate_examples(method: RealCamI2V, weights, config, mesh, model, examples, out_dir, info: dict) -> dict:
  """Scores the model on held-out examples (`held_out_example` / `clip_example`: the ground-truth video as `frames`,
  its metric cameras, the preview and its pixel mask) with the sampling runs of `eval_runs` (every run of `RUNS`
  by default) and the baselines of `BASELINES`, and writes `report.md`, `metrics.json` and `strip_<i>.png` (rows:
  ground truth, preview, shaping, no shaping, Fig. 6's variant when run) to `out_dir`.

  PSNR is over frames 1..T-1: `psnr_mask` over the pixels of the preview mask (`Preview.mask`, the 5x5-covered
  pixels), `psnr` over whole frames; SSIM over whole frames. `info` (`"data"`: "procedural" | "re10k", ...) goes
  into the result as is.

  Returns:
    `{"num_scenes", "aggregate": {column: {"psnr_mask", "psnr", "ssim"}}, "shaping_beats": {...}, "per_scene",
    **info}`.
  """
  from camjax.eval.quality import (frame_quality, mean_colour,  # pylint: disable=import-outside-toplevel
                                   repeat_first_frame)
  from camjax.eval.report import jsonable, strip, write_png  # pylint: disable=import-outside-toplevel
  from camjax.io import atomic_write  # pylint: disable=import-outside-toplevel
  from camjax.methods.base import generate, host_batch, merge  # pylint: disable=import-outside-toplevel

  static = dataclasses.replace(model.static, config=config)
  runs = eval_runs(config)
  columns = (*runs, *BASELINES)
  camera_runs = tuple(c for c in config.eval.get("camera_runs", ()) if c in runs)
  camera_scenes = int(config.eval.get("camera_scenes", 0))  # 0: every scene
  opts = {name: {k: v for k, v in o.items() if k != "translation"} for name, o in runs.items()}
  fns = {}
  for name, o in opts.items():
    key = tuple(sorted(o.items()))
    if key not in fns:
      fns[key] = jax.jit(lambda w, batch, rng, o=o: method.sample(merge(static, w), static, batch, rng, **o))
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  rows = []
  for i, ex in enumerate(examples):
    ex.update(mode=np.int32(BASIC), num_given=np.int32(1))
    gt = np.asarray(ex["frames"])
    keys = ("frames", "K", "w2c", "mode", "num_given", "preview", "preview_mask", "caption")
    videos = {}
    for name, o in runs.items():
      e = {k: ex[k] for k in keys}
      if "translation" in o:
        e["w2c"] = _scaled_translations(ex["w2c"], o["translation"])
      host = {k: np.asarray(v)[None] for k, v in e.items()}
      batch = host_batch(host, model.tokenizer, method, config)
      fn = fns[tuple(sorted(opts[name].items()))]
      video = generate(weights, fn, batch, mesh, jax.random.key(int(config.seed) + i))[0]
      videos[name] = np.round((np.asarray(video, np.float32) + 1) * 127.5).clip(0, 255).astype(np.uint8)
    videos["repeat_first_frame"] = repeat_first_frame(gt)
    videos["mean_colour"] = mean_colour(gt)
    videos["preview"] = np.asarray(ex["preview"])
    mask = np.asarray(ex["preview_pixel_mask"])[1:]
    row = {"scene": i, "clip_id": str(ex["clip_id"]), "caption": str(ex["caption"]),
           "trajectory": str(ex["trajectory"]),
           "metric_scale": float(ex["metric_scale"]), "mask_fraction": float(mask.mean()),
           "latent_mask_fraction": float(np.asarray(ex["preview_mask"]).mean())}
    for name, video in videos.items():
      q = frame_quality(video, gt, skip_frames=1)
      row[name] = {"psnr_mask": masked_psnr(video[1:], gt[1:], mask), **q}
    if camera_runs and (not camera_scenes or i < camera_scenes):
      row["ground_truth"] = {}
      for name in (*camera_runs, "ground_truth"):
        row[name].update(metric_camera_errors(gt if name == "ground_truth" else videos[name], ex,
                                              trials=int(config.eval.get("trials", 1))))
    rows.append(row)
    shown = [videos[k] for k in ("shaping", "no_shaping", "shaping_x0") if k in videos]
    write_png(out_dir / f"strip_{i}.png", strip([gt, videos["preview"], *shown]))
  keys = ("psnr_mask", "psnr", "ssim")
  agg = {c: {k: float(np.nanmean([r[c][k] for r in rows])) for k in keys} for c in columns}
  rivals = [b for b in ("no_shaping", "repeat_first_frame", "mean_colour") if b in columns]
  beats = {b: {k: bool(agg["shaping"][k] > agg[b][k]) for k in ("psnr_mask", "psnr")} for b in rivals}
  wins = {b: int(sum(r["shaping"]["psnr_mask"] > r[b]["psnr_mask"] for r in rows)) for b in rivals}
  paired = {b: paired_difference([r["shaping"]["psnr_mask"] - r[b]["psnr_mask"] for r in rows])
            for b in columns if b != "shaping"}
  camera = {}
  scored = [r for r in rows if "ground_truth" in r]
  for c in ((*camera_runs, "ground_truth") if scored else ()):
    vals = lambda k, c=c: np.asarray([r[c][k] for r in scored], np.float64)
    camera[c] = {k: float(np.nanmean(vals(k))) if np.isfinite(vals(k)).any() else float("nan")
                 for k in CAMERA_KEYS}
  result = {"num_scenes": len(rows), "scale": config.realcam.scale, **info,
            "shaping_threshold": float(config.sample.shaping_threshold), "columns": list(columns), "aggregate": agg,
            "shaping_beats": beats,
            "shaping_wins_per_scene": wins, "shaping_minus": paired, "camera_runs": list(camera_runs),
            "camera_scenes": len(scored), "camera": camera, "per_scene": rows}
  with atomic_write(out_dir / "metrics.json") as f:
    json.dump(jsonable(result), f, indent=2)
  with atomic_write(out_dir / "report.md") as f:
    f.write(_report(result, config))
  return result


def _intro(result: dict, config) -> list[str]:
  """The report's title and first paragraph: what was evaluated."""
  n, scale = result["num_scenes"], config.realcam.scale
  real = result.get("data") == "re10k"
  kind = ("aligned metric" if real else "true metric") if scale == "metric" else "per-clip normalised, SfM-like"
  cameras = f"cameras `{scale}` ({kind})"
  if real:
    short = result.get("clips_too_short", [])
    return [
        "# RealCam-I2V on held-out RealEstate10K clips", "",
        f"{n} real clips of the held-out scenes (never trained on) from `{result.get('clips')}`, translations aligned "
        f"to metric scale with the depth model `{result.get('depth_model')}` (`align_re10k`; `scale` below is each "
        f"clip's factor); {cameras}. The preview lifts frame 0 with that model's depth. "
        + (f"{len(short)} held-out clip(s) shorter than the {config.data.num_frames}-frame window left out "
           f"({', '.join(short)}). " if short else "")
        + "Basic mode (the clip's first frame), the clip's first "
        f"{config.data.num_frames} frames and their aligned cameras, "]
  return [
      "# RealCam-I2V on held-out procedural scenes", "",
      f"{n} scenes (seeds {HELD_OUT_SEED} + {config.seed} + i, never trained on), camera travel scaled per scene by a "
      f"log-uniform factor in {tuple(config.realcam.scale_range)}; {cameras}. "
      "Basic mode (the true first frame), the true metric trajectory, "]


def _report(result: dict, config) -> str:
  agg, rows, columns = result["aggregate"], result["per_scene"], result["columns"]
  n = result["num_scenes"]
  head = _intro(result, config)
  lines = [
      *head[:-1], head[-1] +
      f"{config.sample.steps} Euler steps at shift {config.sample.shift}, noise shaping while sigma > "
      f"{config.sample.shaping_threshold} unless said otherwise. PSNR on "
      "frames 1..T-1: `PSNR in mask` over the preview mask (pixels whose 5x5 neighbourhood the preview covers), "
      "`PSNR` / `SSIM` over whole frames. `the preview itself` is the point-cloud render (black outside its "
      "coverage): inside the mask it is the geometry's answer, an upper reference for shaping. Strips: ground "
      "truth / preview / " + " / ".join(NAMES[k] for k in ("shaping", "no_shaping", "shaping_x0") if k in columns)
      + ".", "",
      "| metric | " + " | ".join(NAMES[c] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
  labels = {"psnr_mask": "PSNR in mask (dB)", "psnr": "PSNR (dB)", "ssim": "SSIM"}
  for k, label in labels.items():
    lines.append(f"| {label} | " + " | ".join(f"{agg[c][k]:.2f}" if k != "ssim" else f"{agg[c][k]:.3f}"
                                                for c in columns) + " |")
  yes = lambda v: "yes" if v else "no"
  lines += ["", "| shaping beats | PSNR in mask (mean) | PSNR (mean) | scenes won in mask |", "|---|---|---|---|"]
  lines += [f"| {NAMES[b]} | {yes(v['psnr_mask'])} | {yes(v['psnr'])} | {result['shaping_wins_per_scene'][b]} / {n} |"
            for b, v in result["shaping_beats"].items()]
  if "shaping_minus" in result:
    lines += ["", "Paired per scene (same scene, same sampler noise): shaping (z_t, eq.) minus each column, PSNR in "
              "mask, mean and its standard error over the scenes. A mean within about two standard errors of 0 is "
              "not a difference these scenes can show.", "", "| shaping (z_t, eq.) minus | mean (dB) | standard "
              "error (dB) | scenes where shaping is higher |", "|---|---|---|---|"]
    lines += [f"| {NAMES[b]} | {v['mean']:+.2f} | {v['se']:.2f} | {v['wins']} / {v['n']} |"
              for b, v in result["shaping_minus"].items()]
  lines += _camera_report(result)
  lines += ["", "| scene | scale | trajectory | mask | " + " | ".join(f"{NAMES[c]} (mask)" for c in columns) + " |",
            "|---" * (len(columns) + 4) + "|"]
  name = (lambda r: f"{r['scene']} ({r['clip_id']})") if result.get("data") == "re10k" else (lambda r: r["scene"])
  lines += [f"| {name(r)} | {r['metric_scale']:.2f} | {r['trajectory']} | {r['mask_fraction']:.0%} | "
            + " | ".join(f"{r[c]['psnr_mask']:.2f}" for c in columns) + " |" for r in rows]
  lines += ["", *[f"![scene {r['scene']}](strip_{r['scene']}.png)" for r in rows], ""]
  return "\n".join(lines)


__all__ = ["BASELINES", "BASIC", "CONTINUATION", "DATA_SOURCES", "INTERPOLATION", "LOOP", "METHOD", "MODES",
           "RE10K_SOURCE", "RealCamError", "RealCamI2V", "ScaledScene", "check_depth_model", "clip_example",
           "clip_examples", "conditions", "eval_runs", "evaluate_clips", "evaluate_examples", "evaluate_scenes",
           "given_frames", "held_out_example", "latent_grid", "latent_slots", "loop_indices", "make_example",
           "masked_psnr", "normalise_translations", "prepare_re10k", "prepare_scenes", "re10k_alignment_args",
           "render_scaled_scene", "scene_preview", "scene_scale", "shaping_inputs", "stack_examples", "window_frames"]
