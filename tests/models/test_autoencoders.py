"""PixelAutoencoder: exact round trips, the causal shape contract, channel layout / locality, jit, vmap, bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from camjax.models.autoencoders import Autoencoder, AutoencoderError, PixelAutoencoder


def random_video(B=2, T=17, H=32, W=32, C=3, seed=0, dtype=np.float32):
  return np.random.default_rng(seed).uniform(-1, 1, size=(B, T, H, W, C)).astype(dtype)


FACTORS = [(4, 8), (1, 2), (4, 4)]


@pytest.mark.parametrize("tf, sf", FACTORS)
def test_round_trip_is_bit_exact(tf, sf):
  ae = PixelAutoencoder(temporal_factor=tf, spatial_factor=sf)
  video = random_video()
  latents = ae.encode(video)
  out = np.asarray(ae.decode(latents))
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, video)


@pytest.mark.parametrize("tf, sf", FACTORS)
def test_shapes_agree_with_latent_shape_and_video_frames(tf, sf):
  ae = PixelAutoencoder(temporal_factor=tf, spatial_factor=sf)
  video = random_video(B=3)
  latents = ae.encode(video)
  t, h, w, c = ae.latent_shape(17, 32, 32)
  assert latents.shape == (3, t, h, w, c)
  assert t == 1 + 16 // tf and h == w == 32 // sf
  assert c == ae.latent_channels == 3 * tf * sf**2
  assert ae.video_frames(t) == 17
  assert ae.decode(latents).shape == video.shape


def test_defaults_and_protocol():
  ae = PixelAutoencoder()
  assert (ae.temporal_factor, ae.spatial_factor, ae.channels, ae.latent_channels) == (4, 8, 3, 768)
  assert ae.latent_shape(1, 8, 8) == (1, 1, 1, 768)  # a single image is one latent frame
  assert ae.video_frames(1) == 1 and ae.video_frames(21) == 81
  assert isinstance(ae, Autoencoder)


@pytest.mark.parametrize("frames, valid", [(18, "17 or 21"), (16, "13 or 17"), (0, "1")])
def test_bad_frame_count_raises_with_the_numbers(frames, valid):
  ae = PixelAutoencoder(temporal_factor=4, spatial_factor=8)
  with pytest.raises(AutoencoderError, match=rf"{frames} frames .*temporal factor 4.*1 \+ 4k.*{valid}"):
    ae.latent_shape(frames, 32, 32)
  if frames:
    with pytest.raises(AutoencoderError, match=rf"\(1, {frames}, 32, 32, 3\).*{frames} frames"):
      ae.encode(np.zeros((1, frames, 32, 32, 3), np.float32))


def test_non_divisible_size_raises_with_the_numbers():
  ae = PixelAutoencoder(temporal_factor=4, spatial_factor=8)
  with pytest.raises(AutoencoderError, match=r"height 30 px .*spatial factor 8.*24 or 32"):
    ae.latent_shape(17, 30, 32)
  with pytest.raises(AutoencoderError, match=r"\(1, 17, 32, 36, 3\).*width 36 px .*spatial factor 8"):
    ae.encode(np.zeros((1, 17, 32, 36, 3), np.float32))


def test_bad_rank_dtype_latents_and_settings_raise():
  ae = PixelAutoencoder()
  with pytest.raises(AutoencoderError, match=r"\(17, 32, 32, 3\).*\[B, T, H, W, 3\]"):
    ae.encode(np.zeros((17, 32, 32, 3), np.float32))
  with pytest.raises(AutoencoderError, match="uint8 is not floating"):
    ae.encode(np.zeros((1, 17, 32, 32, 3), np.uint8))
  with pytest.raises(AutoencoderError, match=r"\(1, 5, 4, 4, 12\).*768"):
    ae.decode(np.zeros((1, 5, 4, 4, 12), np.float32))
  with pytest.raises(AutoencoderError, match="0 latent frames"):
    ae.video_frames(0)
  with pytest.raises(AutoencoderError, match="temporal_factor"):
    PixelAutoencoder(temporal_factor=0)
  with pytest.raises(AutoencoderError, match="scale"):
    PixelAutoencoder(scale=0.0)


def test_channel_layout_is_time_row_col_colour():
  tf, sf, C = 4, 8, 3
  ae = PixelAutoencoder(temporal_factor=tf, spatial_factor=sf)
  video = random_video(B=1)
  z = np.asarray(ae.encode(video))
  for f, y, x, c in [(5, 9, 17, 2), (16, 31, 0, 1), (1, 0, 31, 0)]:
    p = f + tf - 1  # index in the front-padded video
    ft, fy, fx = p % tf, y % sf, x % sf
    assert z[0, p // tf, y // sf, x // sf, ((ft * sf + fy) * sf + fx) * C + c] == video[0, f, y, x, c]
  # Latent frame 0 holds frame 0 at every time offset.
  for ft in range(tf):
    np.testing.assert_array_equal(z[0, 0, 1, 2, (ft * sf * sf + 3 * sf + 4) * C:][:C], video[0, 0, 11, 20])


def test_local_change_changes_only_its_token():
  tf, sf = 4, 8
  ae = PixelAutoencoder(temporal_factor=tf, spatial_factor=sf)
  video = random_video(B=1)
  f, y, x = 5, 9, 17
  changed = video.copy()
  changed[0, f, y, x] += 0.5
  diff = np.asarray(ae.encode(changed)) != np.asarray(ae.encode(video))
  # Frame 5 is in latent frame 1 + (5 - 1) // 4 = 2 at offset (5 - 1) % 4 = 0; pixel (9, 17) in token (1, 2)
  # at block offset (1, 1): channels ((0 * 8 + 1) * 8 + 1) * 3 + {0, 1, 2} = 27, 28, 29.
  assert set(map(tuple, np.argwhere(diff))) == {(0, 2, 1, 2, ch) for ch in (27, 28, 29)}
  # Changing frame 0 touches only latent frame 0 (all tf copies).
  changed = video.copy()
  changed[0, 0, y, x, 0] += 0.5
  diff = np.argwhere(np.asarray(ae.encode(changed)) != np.asarray(ae.encode(video)))
  assert {tuple(d[:4]) for d in diff} == {(0, 0, 1, 2)} and len(diff) == tf


@pytest.mark.parametrize("tf, sf", FACTORS)
def test_scale_shift_round_trip(tf, sf):
  ae = PixelAutoencoder(temporal_factor=tf, spatial_factor=sf, scale=1 / 0.577, shift=0.1)
  plain = PixelAutoencoder(temporal_factor=tf, spatial_factor=sf)
  video = random_video()
  z = ae.encode(video)
  np.testing.assert_allclose(z, (np.asarray(plain.encode(video)) - 0.1) / 0.577, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ae.decode(z), video, rtol=0, atol=1e-6)


def test_jit_vmap_and_bfloat16():
  ae = PixelAutoencoder(temporal_factor=4, spatial_factor=4, scale=2.0, shift=0.5)
  videos = random_video(B=2, T=9, H=16, W=16).reshape(1, 2, 9, 16, 16, 3).repeat(3, axis=0)  # [N, B, ...]
  videos[1] *= 0.5
  encode = jax.jit(jax.vmap(ae.encode))
  z = encode(videos)
  assert z.shape == (3, 2) + ae.latent_shape(9, 16, 16)
  np.testing.assert_allclose(z[1], ae.encode(videos[1]), atol=1e-6)
  out = jax.jit(jax.vmap(ae.decode))(z)
  np.testing.assert_allclose(out, videos, atol=1e-6)

  exact = PixelAutoencoder(temporal_factor=4, spatial_factor=4)
  v16 = jnp.asarray(videos[0], jnp.bfloat16)
  z16 = jax.jit(exact.encode)(v16)
  assert z16.dtype == jnp.bfloat16
  out16 = jax.jit(exact.decode)(z16)
  assert out16.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(out16, np.float32), np.asarray(v16, np.float32))
  assert ae.encode(v16).dtype == jnp.bfloat16  # the affine keeps bf16
