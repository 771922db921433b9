"""The method interface and the pieces every paper shares.

A *method* (one paper: CameraCtrl II, Track2View, RealCam-I2V, MotionFlow) is a `Method` object. It declares what it
reads from a batch, which conditioners it adds to the shared WAN DiT, which parameters train, how a host batch becomes
a loss and a sample, and what it evaluates at the end. Everything else is shared and lives outside the method:

  * the generator (`Generator`): the WAN DiT (`camjax.models.WanDiT`, generic inputs only), the text encoder (the
    trained byte-level one, or None for precomputed umT5 embeddings) and the method's conditioner modules;
  * the autoencoder (`make_autoencoder`), the objective (`camjax.diffusion.make_objective(config.objective)`);
  * beside latent runs, outside every jitted step: the WAN VAE that decodes samples and encodes exploration frames
    (`make_video_codec`, `autoencoder.path`) and the umT5 encoder of captions not in the records
    (`make_caption_encoder`, `text.encoder_path`);
  * the train loop (`camjax.train`): data, optimiser over `Method.trainable`, one generic jitted step that calls
    `Method.loss`, checkpoints, metrics, phases (`Method.phases`, lists of config overrides);
  * inference (`build_model` without an optimiser, `camjax.checkpoints.restore_weights`, `generate`).

Parameters are split by `Method.trainable` (an `nnx` filter) into `params` (optimised, EMA'd) and `frozen` (saved
with the checkpoints, never in the optimiser state; None when every parameter trains).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from camjax import sharding
from camjax.diffusion import make_objective, masked_mse
from camjax.errors import TrainingError
from camjax.methods.registry import MethodError, get
from camjax.models import WanConfig, WanDiT, preset
from camjax.models.autoencoders import PixelAutoencoder, PrecomputedLatents, StepVAE
from camjax.models.text import ByteTextEncoder

TEXT_KINDS = ("byte", "precomputed")
# config.model fields that are WanConfig fields (the method adds its own through `Method.dit_options`).
MODEL_FIELDS = ("num_heads", "head_dim", "ffn_dim", "num_layers", "dtype", "remat", "scan_layers", "attention")


class Method:
  """One paper on the shared stack. Subclass it, override what the paper needs, and register it
  (`camjax.methods.registry.REGISTRY`). Every hook receives the run's (phase's) ml_collections config.

  The jitted functions close over the method (it is part of `Static`), so a method must be hashable; a module-level
  instance with no mutable state is.
  """

  name: str = ""
  # True when the method encodes / decodes inside its steps through `bind_autoencoder`, so that it can run with
  # `autoencoder.kind="wan_vae"` (the WAN VAE as a frozen module of the generator).
  step_vae: bool = False

  # ---------------------------------------------------------------------------------------------------- the batch
  def batch_keys(self, config) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`(required, optional)` batch keys the jitted step reads besides the generic ones (`frames` or `latents`, and
    `text_ids` / `text` with `text_mask`). Float arrays are passed as float32, bools as bool, ints as int32."""
    del config
    return (), ()

  def prepare_data(self, config, workdir) -> dict[str, Any] | None:
    """`{"main": dataset folder, ...}` when the method writes its own kind of dataset (Track2View's paired views),
    else None: the generic `camjax.data.prepare.prepare_dataset` of `config.data` (plus `extra_datasets`)."""
    del config, workdir
    return None

  def pipeline(self, config, datasets: dict, *, training: bool, batch_size: int, start_index: int, seed: int,
               process_index: int | None = None, process_count: int | None = None):
    """A Grain dataset of host batches over the method's own `prepare_data` datasets, or None for the generic
    windowed clip pipeline (`camjax.data.pipeline.make_pipeline`). Training streams repeat; evaluation streams (one
    epoch, unshuffled) hold held-out data."""
    del config, datasets, training, batch_size, start_index, seed, process_index, process_count
    return None

  def extra_datasets(self, config) -> dict[str, dict[str, Any]]:
    """`{name: config overrides}` of further datasets the method trains on (e.g. CameraCtrl II's unlabeled stream):
    each is prepared like the main one (`camjax.data.prepare.prepare_dataset` on the overridden config) and handed
    to `pipeline_options` as a source."""
    del config
    return {}

  def pipeline_options(self, config, source, training: bool, extra: dict | None = None) -> dict[str, Any]:
    """Extra keyword arguments for `camjax.data.pipeline.make_pipeline`; `extra` holds `{name: source}` of the
    `extra_datasets` (training only)."""
    del config, source, training, extra
    return {}

  # ---------------------------------------------------------------------------------------------------- the model
  def dit_options(self, config) -> dict[str, Any]:
    """`WanConfig` fields the method sets (extra input channels, cross streams, LoRA, ...)."""
    del config
    return {}

  def conditioners(self, config, dit_config: WanConfig, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
    """`{name: module}` added to the generator next to `dit` and `text_encoder` (created after them)."""
    del config, dit_config, rngs
    return {}

  def trainable(self, config):
    """The `nnx` filter of the parameters the optimiser updates (default: every parameter)."""
    del config
    return nnx.Param

  def phases(self, config) -> list[tuple[int, dict[str, Any]]]:
    """`[(steps, overrides)]`: the training phases of a run, each a number of steps and the config overrides
    (`{"data.height": 128, "train.extension_prob": 0.5}`) it runs with. Default: one phase of `train.steps`."""
    return [(int(config.train.steps), {})]

  def validate(self, config) -> list[str]:
    """`field=value (why)` for every method-specific config value no run can use."""
    del config
    return []

  # ---------------------------------------------------------------------------------------------------- inside jit
  def loss(self, model: Generator, static: Static, batch: dict, rng: jax.Array) -> jax.Array:
    """The scalar training loss of a batch (inside jit)."""
    raise NotImplementedError

  def sample(self, model: Generator, static: Static, batch: dict, rng: jax.Array) -> jax.Array:
    """Samples for a batch (inside jit): `[B, T, H, W, 3]` video in [-1, 1], or `[B, t, h, w, c]` latents when the
    autoencoder cannot decode."""
    raise NotImplementedError

  # ---------------------------------------------------------------------------------------------------- after a run
  def evaluate_at_end(self, weights: dict, config, mesh, workdir, model: Model) -> None:
    """Method-specific evaluation of the final weights (`{params[, frozen]}`, EMA when kept) of a finished run."""
    del weights, config, mesh, workdir, model

  def __repr__(self):
    return f"<method {self.name}>"


class Generator(nnx.Module):
  """The networks of a method: `dit` (WAN DiT), `text_encoder` (None with precomputed text embeddings), the
  method's conditioners as attributes of their own names and, with `autoencoder.kind="wan_vae"`, `vae` (the frozen
  WAN VAE the step encodes and decodes with; `make_step_vae`)."""

  def __init__(self, dit: WanDiT | None, text_encoder: ByteTextEncoder | None, **conditioners: nnx.Module):
    self.dit = nnx.data(dit)  # None while a pretrained DiT is loaded separately (`make_generator`)
    self.text_encoder = text_encoder
    for name, module in conditioners.items():
      if name in ("dit", "text_encoder", "vae"):
        raise MethodError(f"conditioner name {name!r} is taken")
      setattr(self, name, module)


@dataclasses.dataclass(frozen=True)
class Static:
  """Everything the jitted functions close over (hashable)."""

  graphdef: Any
  autoencoder: Any
  objective: Any
  config: Any
  method: Method


@dataclasses.dataclass
class Model:
  """What `build_model` returns: the jit statics, the weights and the pieces around them.

  Attributes:
    static: `Static` (graph, autoencoder, objective, config, method).
    params: the trainable parameters (`Method.trainable`), an `nnx.State`.
    frozen: the other parameters (`nnx.State`), or None when every parameter trains.
    autoencoder: the autoencoder (also in `static`).
    tokenizer: the byte tokenizer of the trained text encoder, or None (precomputed text embeddings).
  """

  static: Static
  params: Any
  frozen: Any
  autoencoder: Any
  tokenizer: Any

  @property
  def method(self) -> Method:
    return self.static.method

  def weights(self) -> dict:
    """`{params[, frozen]}`: what `merge` and the jitted samplers take."""
    return {"params": self.params} if self.frozen is None else {"params": self.params, "frozen": self.frozen}


AUTOENCODER_KINDS = ("pixel", "precomputed", "wan_vae")


def make_autoencoder(config, check_folder: bool = True):
  """The autoencoder the jitted train / sample steps close over (`config.autoencoder`): `pixel` space-to-depth;
  `precomputed` (the records carry VAE latents; the steps never encode or decode; the WAN VAE of `autoencoder.path`
  runs outside the steps, `make_video_codec`); or `wan_vae`, the WAN VAE of `autoencoder.path` INSIDE the steps for
  methods that encode there what no record can carry (RealCam-I2V's given frames and preview): its shapes here
  (`StepVAE`: the config's factors and channels, checked against the folder's `config.json`), its weights a frozen
  module of the generator (`Generator.vae`, `make_step_vae`) that `bind_autoencoder` puts in place of this object
  inside the step.

  `check_folder=False` (parameter counts, `abstract_generator`) takes the `wan_vae` shapes from the config alone.

  Raises:
    TrainingError: an unknown kind, `autoencoder.path` set for `pixel`, or for `wan_vae` a missing path, a folder
      that is not a WAN 2.1 VAE, or one whose factors / channels differ from the config's.
  """
  ae = config.autoencoder
  path = ae.get("path", "")
  if path and ae.kind == "pixel":
    raise TrainingError(f"autoencoder.path={ae.path!r} is for autoencoder.kind='precomputed' (records with WAN-VAE "
                        f"latents) or 'wan_vae' (the VAE inside the step), not {ae.kind!r}")
  if ae.kind == "pixel":
    return PixelAutoencoder(temporal_factor=ae.temporal_factor, spatial_factor=ae.spatial_factor, scale=ae.scale,
                            shift=ae.shift)
  if ae.kind == "precomputed":  # WAN-VAE latents stored in the records
    return PrecomputedLatents(temporal_factor=ae.temporal_factor, spatial_factor=ae.spatial_factor,
                              channels=ae.channels)
  if ae.kind == "wan_vae":
    if not path:
      raise TrainingError("autoencoder.kind='wan_vae' needs autoencoder.path, a diffusers AutoencoderKLWan folder "
                          "(`python -m camjax.models.tiny` writes a tiny random one)")
    out = StepVAE(path=str(path), temporal_factor=ae.temporal_factor, spatial_factor=ae.spatial_factor,
                  channels=ae.channels)
    if check_folder:
      check_vae_folder(str(path), out)
    return out
  raise TrainingError(f"autoencoder kind {ae.kind!r} is not one of {AUTOENCODER_KINDS} (precomputed: records with "
                      "latents, optionally with autoencoder.path, the WAN VAE that decodes them; wan_vae: the WAN VAE "
                      "of autoencoder.path inside the step)")


def check_vae_folder(path: str, autoencoder) -> None:
  """Reads the folder's `config.json` (not the weights) and checks it against the run's latents.

  Raises:
    TrainingError: the folder is not a WAN 2.1 VAE, or its factors / latent channels differ from the config's.
  """
  import json  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel

  from camjax.models.wan_vae import WanVAEConfig  # pylint: disable=import-outside-toplevel
  cfg_path = os.path.join(path, "config.json")
  try:
    with open(cfg_path) as f:
      cfg = WanVAEConfig.from_diffusers_config(json.load(f))
  except (OSError, ValueError) as e:  # VAEWeightsError is a ValueError
    raise TrainingError(f"autoencoder.path={path!r}: not a diffusers AutoencoderKLWan folder ({e})") from None
  got = (cfg.temporal_factor, cfg.spatial_factor, cfg.z_dim)
  want = (autoencoder.temporal_factor, autoencoder.spatial_factor, autoencoder.latent_channels)
  if got != want:
    raise TrainingError(f"autoencoder.path={path!r}: the VAE has temporal factor {got[0]}, spatial factor "
                        f"{got[1]} and {got[2]} latent channels; the config (autoencoder.temporal_factor, "
                        f"spatial_factor, channels) says {want}")


def make_step_vae(config, mesh=None, abstract: bool = False):
  """The generator's `vae` module of an `autoencoder.kind="wan_vae"` run (`camjax.models.wan_vae.WanVAE` from
  `autoencoder.path`, placed on `mesh` by `VAE_RULES`), or None for the other kinds. `abstract`: the module
  structure only (inside `jax.eval_shape`; the weights are not read, and without the folder the layout is WAN 2.1's,
  `WanVAEConfig()`: parameter counts of paper-scale variants on any machine).

  Raises:
    camjax.models.wan_vae.VAEWeightsError: the folder's weights are missing or do not fit.
  """
  if config.autoencoder.kind != "wan_vae":
    return None
  from camjax.models import wan_vae  # pylint: disable=import-outside-toplevel
  path = str(config.autoencoder.path)
  if abstract:
    import os  # pylint: disable=import-outside-toplevel
    cfg = wan_vae.WanVAEConfig()
    if os.path.isfile(os.path.join(path, "config.json")):
      cfg = wan_vae.WanVAEConfig.from_diffusers_config(wan_vae._read_config(path))  # pylint: disable=protected-access
    return wan_vae.WanVAE(cfg, rngs=nnx.Rngs(0))
  return wan_vae.WanVAE.from_diffusers(path, mesh=mesh, rules=wan_vae.VAE_RULES)


def bind_autoencoder(model, static: Static) -> Static:
  """`static` with the generator's own `vae` in place of a `StepVAE` (inside the step, where `model` is merged from
  the step's weights), so that `static.autoencoder.encode` / `decode` run the WAN VAE; any other `static` as it is.
  Methods that encode or decode inside the step with `autoencoder.kind="wan_vae"` call it first."""
  if isinstance(static.autoencoder, StepVAE):
    return dataclasses.replace(static, autoencoder=model.vae)
  return static


class VideoCodec:
  """The WAN VAE of a latent run (`autoencoder.kind == "precomputed"` with `autoencoder.path`, a diffusers
  `AutoencoderKLWan` folder), used on host batches OUTSIDE the jitted train and sample steps: it decodes samples (and
  the records' latents, the ground truth) into videos and encodes exploration frames. Its weights are arguments of
  its own jitted encode / decode (`camjax.models.wan_vae`), never constants of the train step; they are loaded on
  first use, placed on `mesh` by the VAE's own rules (`VAE_RULES`) when one is given.

  One sample at a time (chunked over the batch; WAN's causal chunking over time inside), optionally in spatial
  tiles of `autoencoder.tile` pixels.

  Args:
    path: the VAE folder.
    tile: spatial tile size in pixels (multiple of 8), 0 for whole frames.
    mesh: the run's mesh (every process calls encode / decode with the same host arrays), or None.
  """

  def __init__(self, path: str, tile: int = 0, mesh=None):
    self.path, self.tile, self.mesh = str(path), int(tile), mesh
    self._vae = None

  @property
  def vae(self):
    """The `WanVAE` (loaded on first use)."""
    if self._vae is None:
      from camjax.models.wan_vae import WanVAE  # pylint: disable=import-outside-toplevel
      from camjax.models.wan_vae import VAE_RULES  # pylint: disable=import-outside-toplevel
      self._vae = WanVAE.from_diffusers(self.path, mesh=self.mesh, rules=VAE_RULES)
    return self._vae

  def check(self, autoencoder) -> None:
    """Reads the folder's `config.json` (not the weights) and checks it against the run's latents (`check_vae_folder`).

    Raises:
      TrainingError: the folder is not a WAN 2.1 VAE, or its factors / latent channels differ from the config's.
    """
    check_vae_folder(self.path, autoencoder)

  def _run(self, fn, x: np.ndarray) -> np.ndarray:
    tile = dict(tile=self.tile) if self.tile else {}
    if self.mesh is None:
      return np.asarray(fn(jnp.asarray(x), **tile))
    with sharding.use_mesh(self.mesh):
      replicated = NamedSharding(self.mesh, P())
      out = fn(jax.device_put(x, replicated), **tile)
      return np.asarray(jax.jit(lambda y: y, out_shardings=replicated)(out))

  def decode(self, latents) -> np.ndarray:
    """`[B, t, h, w, c]` normalised latents -> `float32 [B, 1 + 4 (t - 1), 8 h, 8 w, 3]` video in [-1, 1]."""
    latents = np.asarray(latents, np.float32)
    return np.concatenate([self._run(self.vae.decode, latents[i:i + 1]) for i in range(len(latents))])

  def encode(self, frames) -> np.ndarray:
    """`uint8 [B, T, H, W, 3]` frames (`T = 1 + 4k`) -> `float32 [B, t, h, w, c]` normalised latents."""
    video = np.asarray(frames, np.float32) / 127.5 - 1.0
    return np.concatenate([self._run(self.vae.encode, video[i:i + 1]) for i in range(len(video))])


def to_uint8(video) -> np.ndarray:
  """`[..., 3]` float video in [-1, 1] -> uint8 (rounded, clipped)."""
  return np.round((np.asarray(video, np.float32) + 1) * 127.5).clip(0, 255).astype(np.uint8)


def make_video_codec(config, mesh=None) -> VideoCodec | None:
  """The `VideoCodec` of `autoencoder.path` (checked against the config's latents, weights not yet read), or None
  when the run has none (pixel runs decode inside the sampler; precomputed runs without a path keep latents).

  Raises:
    TrainingError: as `make_autoencoder`, or a folder that is not the VAE of the config's latents.
  """
  autoencoder = make_autoencoder(config)
  path = config.autoencoder.get("path", "")
  if not path or config.autoencoder.kind != "precomputed":  # wan_vae: the step's own VAE decodes the samples
    return None
  codec = VideoCodec(path, int(config.autoencoder.get("tile", 0)), mesh)
  codec.check(autoencoder)
  return codec


class CaptionEncoder:
  """umT5 caption embeddings for captions that are not in the records (exploration, camera following), WAN's way
  (`camjax.models.umt5.encode_text`: real tokens, zeros after them), padded / truncated to `text.max_length` tokens
  like the records' embeddings in the training pipeline. Runs outside every jitted step, on JAX's default device;
  the encoder is loaded on first use and each caption is encoded once.

  Args:
    encoder_path: a transformers umT5 encoder folder (or a diffusers WAN pipeline folder with `text_encoder/`).
    tokenizer_path: its tokenizer folder; "" looks in `encoder_path`, then beside it (a pipeline's `tokenizer/`).
    max_length: `L`, tokens per caption (`text.max_length`).
    width: `D`, the DiT's text width (`text.width`), checked against the encoder's `d_model`.
  """

  def __init__(self, encoder_path: str, tokenizer_path: str, max_length: int, width: int):
    self.encoder_path, self.tokenizer_path = str(encoder_path), str(tokenizer_path)
    self.max_length, self.width = int(max_length), int(width)
    self._encoder = self._tokenizer = None
    self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

  def _load(self):
    import os  # pylint: disable=import-outside-toplevel

    from camjax.models import umt5  # pylint: disable=import-outside-toplevel
    encoder = umt5.UMT5Encoder.from_transformers(self.encoder_path)
    if encoder.config.d_model != self.width:
      raise TrainingError(f"text.encoder_path={self.encoder_path!r}: the encoder's width is {encoder.config.d_model} "
                          f"but text.width is {self.width}")
    candidates = [self.tokenizer_path] if self.tokenizer_path else [
        self.encoder_path, os.path.dirname(os.path.normpath(self.encoder_path))]
    error = None
    for path in candidates:
      try:
        self._tokenizer = umt5.load_tokenizer(path, max_length=self.max_length)
        break
      except umt5.TokenizerError as e:
        error = error or e
    else:
      raise TrainingError(f"text.tokenizer_path={self.tokenizer_path!r}: no tokenizer ({error}); set "
                          "text.tokenizer_path to the umT5 tokenizer folder")
    self._encoder = encoder

  def __call__(self, captions) -> tuple[np.ndarray, np.ndarray]:
    """`B` captions -> `(text_embeddings float32 [B, L, D], text_mask bool [B, L])`, `L = max_length`.

    Raises:
      TrainingError: the encoder's width is not `text.width`, or no tokenizer is found.
      camjax.models.umt5.TextEncoderError / TokenizerError: an unreadable folder, bad captions.
    """
    from camjax.models import umt5  # pylint: disable=import-outside-toplevel
    captions = [str(c) for c in captions]
    new = [c for c in dict.fromkeys(captions) if c not in self._cache]
    if new:
      if self._encoder is None:
        self._load()
      emb, mask = umt5.encode_text(self._tokenizer, self._encoder, new, max_length=self.max_length)
      for c, e, m in zip(new, np.asarray(emb, np.float32), np.asarray(mask, bool)):
        self._cache[c] = (e, m)
    return (np.stack([self._cache[c][0] for c in captions]), np.stack([self._cache[c][1] for c in captions]))


def make_caption_encoder(config) -> CaptionEncoder | None:
  """The `CaptionEncoder` of `text.encoder_path` (precomputed text only), or None without one.

  Raises:
    TrainingError: `text.encoder_path` set with a text kind that does not take one.
  """
  t = config.text
  path = t.get("encoder_path", "")
  if not path:
    return None
  if t.kind != "precomputed":
    raise TrainingError(f"text.encoder_path={path!r} is for text.kind='precomputed' (umT5 embeddings), not "
                        f"{t.kind!r}")
  return CaptionEncoder(path, t.get("tokenizer_path", ""), t.max_length, t.width)


_CAPTION_ENCODERS: dict[tuple, CaptionEncoder] = {}


def shared_caption_encoder(config) -> CaptionEncoder | None:
  """`make_caption_encoder(config)`, one per (folders and their files' sizes and times, length, width) in the
  process: its weights are read once and every caption is encoded once, however many batches ask (`host_batch`,
  data preparation); a folder whose files change gets a new encoder."""
  import os  # pylint: disable=import-outside-toplevel

  from camjax.data.shards import input_listing  # pylint: disable=import-outside-toplevel
  t = config.text
  if not t.get("encoder_path", "") or t.kind != "precomputed":
    return make_caption_encoder(config)
  folders = [p for p in (str(t.encoder_path), str(t.get("tokenizer_path", ""))) if p and os.path.exists(p)]
  files = tuple(v["sha256"] for v in input_listing(*folders).values()) if folders else ()
  key = (str(t.encoder_path), str(t.get("tokenizer_path", "")), files, int(t.max_length), int(t.width))
  if key not in _CAPTION_ENCODERS:
    _CAPTION_ENCODERS[key] = make_caption_encoder(config)
  return _CAPTION_ENCODERS[key]


def wan_config(config, autoencoder, method: Method) -> WanConfig:
  """The DiT's `WanConfig`: `config.model` on its preset, the autoencoder's channels, the text width, and the
  method's own fields."""
  m = config.model
  if config.text.kind not in TEXT_KINDS:
    raise TrainingError(f"text kind {config.text.kind!r} is not one of {TEXT_KINDS}")
  fields = {k: m[k] for k in MODEL_FIELDS}
  return preset(m.preset, in_channels=autoencoder.latent_channels, out_channels=autoencoder.latent_channels,
                text_dim=config.text.width, **fields, **method.dit_options(config))


def _make_text_encoder(config, rngs):
  t = config.text
  make_caption_encoder(config)  # a text.encoder_path with a kind that does not take one raises here
  if t.kind == "precomputed":
    return None
  return ByteTextEncoder(t.width, t.num_layers, t.num_heads, t.max_length, rngs=rngs)


def _conditioners(method: Method, config, dit_config: WanConfig, rngs) -> dict:
  with nnx.use_eager_sharding(False):  # logical names are resolved by camjax.sharding, not at creation
    return method.conditioners(config, dit_config, rngs)


def make_generator(config, autoencoder, mesh, method: Method) -> Generator:
  """The generator, randomly initialised (`nnx.Rngs(config.seed)`: DiT, then text encoder, then conditioners) or,
  with `model.pretrained`, with WAN weights from a diffusers folder (the rest initialised from the seed).

  Raises:
    TrainingError: the pretrained model does not match the latent channels or text width of the config.
  """
  cfg = wan_config(config, autoencoder, method)
  vae = make_step_vae(config, mesh)
  if not config.model.pretrained:
    def make():
      rngs = nnx.Rngs(config.seed)
      dit = WanDiT(cfg, rngs=rngs)
      text_encoder = _make_text_encoder(config, rngs)
      return Generator(dit, text_encoder, **_conditioners(method, config, cfg, rngs))
    generator = sharding.create_sharded(make, mesh)
    if vae is not None:
      generator.vae = vae
    return generator

  from camjax.models.weights import load_diffusers  # pylint: disable=import-outside-toplevel
  options = {k: config.model[k] for k in ("dtype", "remat", "scan_layers", "attention")}
  dit = load_diffusers(config.model.pretrained, mesh=mesh, seed=config.seed, **options, **method.dit_options(config))
  got = dit.config
  for name in ("in_channels", "out_channels", "text_dim"):
    if getattr(got, name) != getattr(cfg, name):
      raise TrainingError(f"pretrained model {config.model.pretrained}: {name} is {getattr(got, name)} but the config "
                          f"needs {getattr(cfg, name)} (autoencoder.channels / text.width)")

  def make_rest():
    rngs = nnx.Rngs(config.seed)
    return Generator(None, _make_text_encoder(config, rngs), **_conditioners(method, config, got, rngs))

  rest = sharding.create_sharded(make_rest, mesh)
  rest.dit = dit
  if vae is not None:
    rest.vae = vae
  return rest


def abstract_generator(config, method: Method | None = None):
  """`(graphdef, abstract state)` of the method's generator for `config` without allocating it (`jax.eval_shape`;
  `model.pretrained` is not read): parameter counts and shapes of paper-scale variants on any machine."""
  method = method or get(config.method)
  cfg = wan_config(config, make_autoencoder(config, check_folder=False), method)

  def make():
    rngs = nnx.Rngs(config.seed)
    dit = WanDiT(cfg, rngs=rngs)
    generator = Generator(dit, _make_text_encoder(config, rngs), **_conditioners(method, config, cfg, rngs))
    vae = make_step_vae(config, abstract=True)
    if vae is not None:
      generator.vae = vae
    return generator

  return sharding.abstract_module(make)


def build_model(config, mesh, method: Method | None = None) -> Model:
  """The method's generator, autoencoder and objective for `config` (call inside `sharding.use_mesh(mesh)`); no
  optimiser state (`camjax.train` adds it).

  Raises:
    MethodError: `config.method` is not registered.
    TrainingError: an unknown autoencoder / text kind, or a pretrained model that does not fit.
    camjax.diffusion.DiffusionError: a bad `config.objective`.
  """
  method = method or get(config.method)
  autoencoder = make_autoencoder(config)
  objective = make_objective(config.objective)
  generator = make_generator(config, autoencoder, mesh, method)
  trainable = method.trainable(config)
  if config.autoencoder.kind == "wan_vae":  # the step's VAE never trains
    trainable = nnx.All(trainable, nnx.Not(nnx.PathContains("vae")))
  graphdef, params, frozen = nnx.split(generator, trainable, ...)
  frozen = frozen if jax.tree.leaves(frozen) else None
  tokenizer = None if generator.text_encoder is None else generator.text_encoder.tokenizer
  return Model(Static(graphdef, autoencoder, objective, config, method), params, frozen, autoencoder, tokenizer)


def merge(static: Static, weights: dict) -> Generator:
  """The generator from its graph and `{params[, frozen]}` (inside jit)."""
  states = [weights["params"]] + ([weights["frozen"]] if weights.get("frozen") is not None else [])
  return nnx.merge(static.graphdef, *states)


class RunNotFoundError(TrainingError):
  """A folder that is not a trained `python -m camjax.main` run (no `config.json`, no checkpoint, no such step)."""


def load_run(workdir, step: int | None = None, *, mesh=None):
  """A trained run for inference: `(config, mesh, model, weights)` from `<workdir>/config.json` and the newest (or
  `step`) checkpoint; `weights` is `{params[, frozen]}` with the EMA parameters in place of `params` when the run
  kept them.

  Raises:
    RunNotFoundError: no `config.json` or no checkpoint (at `step`) in `workdir`.
    camjax.checkpoints.CheckpointError: no checkpoint restores.
  """
  import json  # pylint: disable=import-outside-toplevel
  from pathlib import Path  # pylint: disable=import-outside-toplevel

  import ml_collections  # pylint: disable=import-outside-toplevel

  from camjax import checkpoints  # pylint: disable=import-outside-toplevel
  path = Path(workdir) / "config.json"
  if not path.exists():
    raise RunNotFoundError(f"{path} not found: point --workdir at a `python -m camjax.main` run")
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  config.model.pretrained = ""  # the checkpoint holds every weight
  mesh = mesh if mesh is not None else sharding.make_mesh(dict(config.mesh))
  with sharding.use_mesh(mesh):
    model = build_model(config, mesh)
    template = weights_template(model, with_ema=config.optimizer.ema_decay > 0)
    try:
      state, _ = checkpoints.restore_weights(workdir, template, config, step)
    except checkpoints.CheckpointError:
      raise
    except TrainingError as e:
      raise RunNotFoundError(str(e)) from None
  weights = {k: v for k, v in state.items() if k != "ema"}
  if "ema" in state:
    weights["params"] = state["ema"]
  return config, mesh, model, weights


def weights_template(model: Model, with_ema: bool) -> dict:
  """`{params[, frozen][, ema]}` of a built model: the entries `camjax.checkpoints.restore_weights` reads."""
  out = model.weights()
  if with_ema:
    out["ema"] = model.params
  return out


# ----------------------------------------------------------------------------------------------------------------------
# Phases
# ----------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Phase:
  """A training phase: the config it runs with and its global step range `[start, end)`."""

  config: Any
  start: int
  end: int


def apply_overrides(config, overrides: dict[str, Any]):
  """A copy of `config` with dotted-key overrides applied (`{"data.height": 128}`).

  Raises:
    MethodError: an override names a field the config does not have.
  """
  c = config.copy_and_resolve_references()
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    node = c
    for part in path:
      if part not in node:
        raise MethodError(f"phase override {key!r}: the config has no section {part!r}")
      node = node[part]
    if leaf not in node:
      raise MethodError(f"phase override {key!r}: the config has no field {leaf!r}")
    node[leaf] = value
  return c


def training_phases(config, method: Method | None = None) -> list[Phase]:
  """The run's phases (`Method.phases`), each with its config and global step range; phases with 0 steps are
  dropped. The first phase runs with `config` itself when it has no overrides."""
  method = method or get(config.method)
  phases, start = [], 0
  for steps, overrides in method.phases(config):
    if not steps and phases:
      continue
    c = config if not overrides and not phases else apply_overrides(config, overrides)
    phases.append(Phase(c, start, start + int(steps)))
    start += int(steps)
  return phases


# ----------------------------------------------------------------------------------------------------------------------
# Batches, text, loss, sampling
# ----------------------------------------------------------------------------------------------------------------------


def _as_jax_dtype(name: str, value) -> np.ndarray:
  v = np.asarray(value)
  if v.dtype == np.bool_:
    return v
  if np.issubdtype(v.dtype, np.floating):
    return v.astype(np.float32)
  if np.issubdtype(v.dtype, np.integer):
    return v if v.dtype == np.uint8 else v.astype(np.int32)
  raise MethodError(f"batch key {name!r} has dtype {v.dtype}, which the jitted step cannot read")


def host_batch(batch: dict, tokenizer, method: Method, config) -> dict[str, np.ndarray]:
  """The arrays the jitted step reads: frames (uint8) or precomputed latents; token ids or precomputed text
  embeddings with the text mask; the method's batch keys.

  With precomputed text (`tokenizer` None), a batch without `text_embeddings` (examples built from a caption:
  held-out scenes, a user's prompt) has its `caption`s embedded by the umT5 encoder of `text.encoder_path`
  (`shared_caption_encoder`).

  Raises:
    MethodError: a required batch key of the method is missing (named, with the keys there are), or precomputed
      text with neither `text_embeddings` nor a caption encoder.
  """
  out = {}
  if "latents" in batch:
    out["latents"] = np.asarray(batch["latents"], np.float32)
  elif "frames" in batch:
    out["frames"] = batch["frames"]
  if tokenizer is None and "text_embeddings" in batch:
    out.update(text=np.asarray(batch["text_embeddings"], np.float32), text_mask=np.asarray(batch["text_mask"], bool))
  elif tokenizer is None:
    encoder = shared_caption_encoder(config)
    if encoder is None or "caption" not in batch:
      what = "no caption to embed" if encoder else "text.encoder_path is empty (the umT5 encoder that embeds captions)"
      raise MethodError(f"text.kind='precomputed': the batch has no text_embeddings and {what}")
    out["text"], out["text_mask"] = encoder([str(c) for c in batch["caption"]])
  else:
    out["text_ids"], out["text_mask"] = tokenizer.encode([str(c) for c in batch["caption"]])
  required, optional = method.batch_keys(config)
  missing = [k for k in required if k not in batch]
  if missing:
    raise MethodError(f"method {method.name} needs batch keys {missing}; the batch has {sorted(batch)}")
  for k in (*required, *optional):
    if k in batch:
      out[k] = _as_jax_dtype(k, batch[k])
  return out


def text_states(model: Generator, batch: dict) -> jax.Array:
  """`[B, L, D]` text states: precomputed (umT5) embeddings from the batch, or the byte encoder's."""
  if model.text_encoder is None:
    return batch["text"]
  return model.text_encoder(batch["text_ids"], batch["text_mask"])


def denoising_loss(dit: WanDiT, objective, latents, noise, level, text, text_mask, *, clean_mask=None, loss_mask=None,
                   **dit_inputs) -> jax.Array:
  """The denoising loss with separate clean and loss masks.

  Tokens where `clean_mask` is 1 enter the DiT clean (condition frames, a video-to-video source); the rest are noised
  to `level` (`objective.add_noise`). The squared error of `objective.loss_terms` is averaged over `loss_mask`
  (default `1 - clean_mask`, or everything without a clean mask): CameraCtrl II eq. 1 with its clean extension frames,
  Track2View's target half.

  Args:
    dit: the DiT (or any callable with its signature).
    objective: a `camjax.diffusion` objective (`add_noise`, `model_timesteps`, `loss_terms`).
    latents: `[B, t, h, w, c]` clean latents; noise: the same shape; level: `[B]` noise levels.
    text, text_mask: `[B, L, D]`, `[B, L]`.
    clean_mask: optional `[B, t, h, w, 1]` (or `[B, t, h, w]`), 1 = clean token.
    loss_mask: optional weights of the same layout; default `1 - clean_mask`.
    **dit_inputs: further DiT inputs (`extra_in`, `token_map`, `positions`, ...).

  Returns:
    The scalar masked mean squared error (float32).
  """
  x_t = objective.add_noise(latents, noise, level)
  if clean_mask is not None:
    x_t_in = clean_mask * latents + (1 - clean_mask) * x_t
    if loss_mask is None:
      loss_mask = 1 - clean_mask
  else:
    x_t_in = x_t
  out = dit(x_t_in, objective.model_timesteps(level), text, text_mask, **dit_inputs)
  pred, target = objective.loss_terms(x_t, out, latents, noise, level)
  return masked_mse(pred, target, loss_mask)


def generate(weights: dict, sample_fn, batch: dict[str, np.ndarray], mesh, rng) -> np.ndarray:
  """Runs a jitted `sample_fn(weights, batch, rng)` on a small host batch replicated on every process (padded to the
  batch sharding).

  Returns:
    The host array of the sampler's output for the batch's `B` samples.
  """
  n = len(next(iter(batch.values())))
  shards = math.prod(mesh.shape[a] for a in ("data", "fsdp"))
  pad = -n % shards  # the batch axis is sharded over data x fsdp: repeat the last sample to fill it
  batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in batch.items()}
  batch = jax.device_put(batch, NamedSharding(mesh, P()))
  return np.asarray(jax.device_get(sample_fn(weights, batch=batch, rng=rng)))[:n]


def sample_fn(static: Static):
  """`f(weights, batch, rng)`: the method's sampler on merged weights (jit it)."""

  def fn(weights, batch, rng):
    return static.method.sample(merge(static, weights), static, batch, rng)

  return fn


def batch_latents(static: Static, batch: dict) -> jax.Array:
  """The clean latents `[B, t, h, w, C]` of a batch (inside jit): its precomputed `latents` (checked against the
  autoencoder's shapes), or its uint8 `frames [B, T, H, W, 3]` encoded from [-1, 1].

  Raises:
    AutoencoderError: precomputed latents of another shape than the autoencoder's (`check_latents`).
  """
  ae = static.autoencoder
  if "latents" in batch:
    ae.check_latents(batch["latents"])
    return batch["latents"]
  return ae.encode(batch["frames"].astype(jnp.float32) / 127.5 - 1.0)


def clip_video(static: Static, latents: jax.Array) -> jax.Array:
  """Decoded `[B, T, H, W, 3]` video clipped to [-1, 1], or the latents when the autoencoder cannot decode."""
  if not getattr(static.autoencoder, "can_decode", True):
    return latents
  return jnp.clip(static.autoencoder.decode(latents), -1, 1)
