"""camjax models: the WAN 2.1 DiT, autoencoders, text encoders."""

from camjax.models.layers import ModelError
from camjax.models.wan import PRESETS, WanConfig, WanDiT, num_params, preset

__all__ = ["ModelError", "PRESETS", "WanConfig", "WanDiT", "num_params", "preset"]
