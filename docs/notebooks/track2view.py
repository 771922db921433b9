# %% [markdown]
# # Track2View: re-render a video along a new camera trajectory with camjax
#
# Track2View (papers/003) generates the same scene, synchronised frame by frame, filmed along a new trajectory: the
# model sees the clean source video and 3D point tracks paired between the two views (source tracks sampled from the
# source tokens, target tracks = the source's 3D tracks reprojected with the target cameras). This notebook runs top
# to bottom on a CPU: it trains the `test` variant for a few steps (`VARIANT = "default"` trains the CPU default in
# minutes; `CAMJAX_T2V_WORKDIR` points at an existing run), generates held-out procedural pairs next to the trivial
# baselines and the tracks-zeroed control, then re-renders a real RealEstate10K clip.
#
# Generated from `docs/notebooks/track2view.py` by `python docs/notebooks/build.py`; CI executes the script.

# %%
import importlib.util
import os
import tempfile
from pathlib import Path

import jax
import mediapy
import numpy as np

from camjax import methods, rerender, train
from camjax.data.pairs import paired_example
from camjax.eval.quality import baseline_scores

ROOT = Path(os.environ.get("CAMJAX_ROOT", Path.cwd()))
SHARED = Path(os.environ.get("CAMJAX_SHARED_DATA", ROOT.parent / "shared" / "data"))

# %% [markdown]
# ## Parameters
# `test` keeps CI fast (a tiny model, a few steps: its frames are flat colours); `default` is the CPU default.

# %%
VARIANT = os.environ.get("CAMJAX_T2V_VARIANT", "test")
NUM_PAIRS = 2 if VARIANT == "test" else 8

# %% [markdown]
# ## A trained Track2View model

# %%
WORKDIR = os.environ.get("CAMJAX_T2V_WORKDIR")
if not WORKDIR:
  spec = importlib.util.spec_from_file_location("track2view", ROOT / "configs" / "track2view.py")
  configs = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(configs)
  config = configs.get_config(VARIANT)
  if VARIANT == "test":  # 64 x 64 so that the real clip has features to track
    config.data.update(render_size=64, height=64, width=64, num_queries=32)
    config.eval.at_end = False
  WORKDIR = tempfile.mkdtemp(prefix="camjax_t2v_")
  summary = train.train_and_evaluate(config, WORKDIR)
  print(f"trained to step {summary.end_step}, loss {summary.first_loss:.3f} -> {summary.last_loss:.3f}")

config, mesh, model, weights = methods.load_run(WORKDIR)
d = config.data
print(f"{config.method}: {d.num_frames} frames at {d.height}x{d.width}, {d.num_queries} tracks per pair")

# %% [markdown]
# ## Held-out procedural pairs, next to the baselines
# Rows: true target view, source view, Track2View, the same model with its tracks zeroed. PSNR / SSIM on frames
# 1..T-1 (frame 0 is shared by the two views).

# %%
static = model.static
fns = {z: jax.jit(lambda w, batch, rng, z=z: static.method.sample(methods.merge(static, w), static, batch, rng,
                                                                  zero_tracks=z)) for z in (False, True)}
rows = []
for i in range(NUM_PAIRS):
  ex = paired_example(3_100_000 + i, num_frames=int(d.num_frames), height=int(d.height), width=int(d.width),
                      num_queries=int(d.num_queries))
  host = {k: np.asarray(ex[k])[None] for k in ("src_frames", "tgt_frames", "src_K", "src_w2c", "tgt_K", "tgt_w2c",
                                               "src_xy", "tgt_xy", "src_depth", "tgt_depth", "src_valid", "tgt_valid")}
  host["caption"] = np.array([str(ex["caption"])])
  batch = methods.host_batch(host, model.tokenizer, model.method, config)
  videos = {z: np.round((methods.generate(weights, fns[z], batch, mesh, jax.random.key(i))[0] + 1) * 127.5)
            .clip(0, 255).astype(np.uint8) for z in (False, True)}
  scores = baseline_scores(ex["tgt_frames"], videos[False], source=ex["src_frames"])
  scores["tracks_zeroed"] = baseline_scores(ex["tgt_frames"], videos[True])["model"]
  rows.append(scores)
  mediapy.show_videos([ex["tgt_frames"], ex["src_frames"], videos[False], videos[True]], fps=8, height=96,
                      titles=["true target", "source", "Track2View", "tracks zeroed"])

print(f"{'':22s} {'PSNR dB':>8s} {'SSIM':>7s}")
for name in ("model", "tracks_zeroed", "copy_source", "repeat_first_frame", "mean_colour"):
  psnr = np.mean([r[name]["psnr"] for r in rows])
  ssim = np.mean([r[name]["ssim"] for r in rows])
  print(f"{name:22s} {psnr:8.2f} {ssim:7.3f}")
print(f"{NUM_PAIRS} pairs scored")

# %% [markdown]
# ## A real clip: RealEstate10K, its own cameras, a preset target trajectory
# `python -m camjax.rerender` does the same from the command line: track the source (OpenCV LK, forward-backward
# check, triangulated with the source cameras: a static scene), reproject the 3D tracks to the target trajectory
# (starting at the source's first camera), generate.

# %%
clip = SHARED / "re10k_clips"
if (clip / "videos").is_dir():
  out = Path(WORKDIR) / "rerender_real"
  stride = max(1, 24 // (int(d.num_frames) - 1))
  summary = rerender.rerender(WORKDIR, clip / "videos" / "0bf152ef84195293_svdxt.mp4",
                              clip / "pose_files" / "0bf152ef84195293_svdxt.txt", "orbit_left:15", out,
                              stride=stride)
  print(f"re-rendered the real clip: {summary['tracks']} tracks, target tracks valid "
        f"{summary['target_valid_fraction']:.0%}; files: {sorted(p.name for p in out.iterdir())}")
  mediapy.show_video(mediapy.read_video(out / "side_by_side.mp4"), fps=8, height=128)
else:
  print(f"no shared data at {SHARED}: skipping the real clip")
