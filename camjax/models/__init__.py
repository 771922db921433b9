"""camjax models: the WAN 2.1 DiT (with generic conditioning inputs and LoRA), its diffusers loader, autoencoders, text
encoders.

Imports flow one way: `layers` <- `lora` <- `wan` <- `weights` (and `text`, `umt5`, `wan_vae`); nothing here imports
`camjax.conditioning` or `camjax.methods`.
"""

from camjax.models.layers import ModelError
from camjax.models.wan import LORA_TARGETS, PRESETS, WanConfig, WanDiT, num_params, preset
from camjax.models.umt5 import TextEncoderError, UMT5Config, UMT5Encoder, encode_text, load_tokenizer
from camjax.models.wan_vae import VAE_RULES, VAEWeightsError, WanVAE, WanVAEConfig
from camjax.models.weights import WeightsError, load_diffusers

__all__ = ["LORA_TARGETS", "ModelError", "PRESETS", "TextEncoderError", "UMT5Config", "UMT5Encoder", "VAEWeightsError",
           "VAE_RULES", "WanConfig", "WanDiT", "WanVAE", "WanVAEConfig", "WeightsError", "encode_text", "load_diffusers", "load_tokenizer", "num_params", "preset"]
