"""camjax methods: each paper is a `Method` on the shared core (models, conditioning, diffusion, data, train loop).

    from camjax import methods
    method = methods.get(config.method)        # "cameractrl2", ...
    model = methods.build_model(config, mesh)  # generator + autoencoder + objective, no optimiser

`camjax.train` runs any registered method without knowing which paper it is; a new paper is a new module in this
package with a `METHOD` (a `camjax.methods.base.Method`) and one line in `REGISTRY` (docs/methods.md, "Adding a
method").
The registry imports a paper's module by name only when it is asked for, so importing the registry pulls in no paper.
"""

from __future__ import annotations

from camjax.methods.base import (CaptionEncoder, Generator, Method, Model, Phase, RunNotFoundError, Static,
                                 VideoCodec, abstract_generator, apply_overrides, bind_autoencoder, build_model,
                                 clip_video, denoising_loss, generate, host_batch, load_run, make_autoencoder,
                                 make_caption_encoder, make_video_codec, merge, sample_fn, shared_caption_encoder,
                                 text_states, to_uint8, training_phases, weights_template)
from camjax.methods.registry import REGISTRY, MethodError, get

__all__ = [
    "CaptionEncoder", "Generator", "Method", "MethodError", "Model", "Phase", "REGISTRY", "Static", "VideoCodec",
    "abstract_generator", "bind_autoencoder",
    "RunNotFoundError", "apply_overrides", "build_model", "clip_video", "denoising_loss", "generate", "get",
    "host_batch", "load_run", "make_caption_encoder", "make_video_codec", "to_uint8",
    "make_autoencoder", "merge", "sample_fn", "shared_caption_encoder", "text_states", "training_phases",
    "weights_template",
]
