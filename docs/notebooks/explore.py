# %% [markdown]
# # CameraCtrl II scene exploration with camjax
#
# Clip-by-clip autoregressive generation (CameraCtrl II sec. 3.4): start from an image, then give the next camera
# trajectory, and camjax generates the next clip conditioned on the last frames of the previous one, with every camera
# in one global frame. This notebook runs top to bottom on a CPU: it trains a tiny model for a few steps (or uses the
# workdir of a real run, `python -m camjax.main --config=configs/cameractrl2.py`, via `CAMJAX_EXPLORE_WORKDIR`).
#
# Generated from `docs/notebooks/explore.py` by `python docs/notebooks/build.py`; CI executes the script.

# %%
import importlib.util
import os
import tempfile
from pathlib import Path

import mediapy
import numpy as np

from camjax import explore, train
from camjax.data.synthetic import render_scene
from camjax.geometry.plot import plot_trajectories

ROOT = Path(os.environ.get("CAMJAX_ROOT", Path.cwd()))

# %% [markdown]
# ## A trained generator
# A real run's workdir when given; otherwise a tiny model trained here in about a minute (both phases: single clips,
# then clip extension). Its videos are blurry, but every step of the exploration is the real one.

# %%
WORKDIR = os.environ.get("CAMJAX_EXPLORE_WORKDIR")
if not WORKDIR:
  spec = importlib.util.spec_from_file_location("cameractrl2", ROOT / "configs" / "cameractrl2.py")
  configs = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(configs)
  config = configs.get_config("test")
  config.data.render_frames = 13
  config.phase2.update(steps=4, extension_prob=1.0)
  WORKDIR = tempfile.mkdtemp(prefix="camjax_explore_")
  summary = train.train_and_evaluate(config, WORKDIR)
  print(f"trained to step {summary.end_step}, loss {summary.first_loss:.3f} -> {summary.last_loss:.3f}")

explorer = explore.Explorer.from_workdir(WORKDIR)
print(f"window: {explorer.num_frames} frames at {explorer.height}x{explorer.width}")

# %% [markdown]
# ## Explore: three clips, three trajectories
# Each trajectory is relative to where the camera is; `cond_frames` frames of the previous clip are given clean.

# %%
first = render_scene(123, num_frames=1, height=explorer.height, width=explorer.width, num_tracks=0)[0]
run = explorer.start("pan_left", image=first.frames[0], caption=first.caption)
run.extend("dolly_in:0.8", cond_frames=5)
run.extend("orbit_right:20", cond_frames=5)
print(f"{len(run.clips)} clips, {len(run.video)} frames")
mediapy.show_video(run.video, fps=8, height=128)

# %% [markdown]
# ## The whole trajectory, in the global frame of the first clip's first camera

# %%
figure = plot_trajectories({f"clip {i}: {c.trajectory}": c.cameras for i, c in enumerate(run.clips)},
                           title="exploration (global frame)")
figure

# %% [markdown]
# ## Evaluation: camera error per clip (pycolmap) and appearance consistency across clips
# On a tiny model at this resolution SfM usually fails (success ratio 0); on a trained model it reports the paper's
# RotErr / TransErr. The overlap PSNR compares each clip's condition frames with the previous clip's last frames.

# %%
evaluation = run.evaluate(trials=1)
for i, clip in enumerate(evaluation["per_clip"]):
  print(f"clip {i}: success ratio {clip['success_ratio']:.2f}")
print(evaluation["appearance"])
out = run.save(Path(WORKDIR) / "exploration", evaluation=evaluation)
print(sorted(p.name for p in out.iterdir()))
