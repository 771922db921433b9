"""camjax.data.precompute: windows, resumable per-clip cache, process shares, assembly (with a stand-in encoder; the
WAN VAE + umT5 path runs in tests/test_wan_tiny.py)."""

import numpy as np
import pytest

from camjax.data import precompute, synthetic
from camjax.data.records import DataError
from camjax.data.shards import ShardSource


def pool_encoder(video):
  """A stand-in VAE with the WAN shapes: frame 0 alone, then groups of 4 frames; 8x8 mean pooling; 16 channels."""
  v = np.asarray(video)
  first, rest = v[:, :1], v[:, 1:]
  groups = rest.reshape(v.shape[0], -1, 4, *v.shape[2:]).mean(2)
  z = np.concatenate([first, groups], 1)
  b, t, h, w, c = z.shape
  z = z.reshape(b, t, h // 8, 8, w // 8, 8, c).mean((3, 5))
  return np.concatenate([z] * 5 + [z[..., :1]], -1)


calls = []


def captions(texts):
  calls.append(list(texts))
  return [np.full((len(t.split()) + 1, 8), 0.5, np.float32) for t in texts]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  return synthetic.write_dataset(tmp_path_factory.mktemp("syn") / "d", 3, resolution=32, frames=17, tracks=8,
                                 progress=False)


def test_window_starts():
  assert precompute.window_starts(17, 9, 1) == [0]
  assert precompute.window_starts(18, 9, 1) == [0, 9]
  assert precompute.window_starts(19, 5, 2) == [0, 10]  # windows keep the stride across their boundary
  assert precompute.window_starts(8, 9, 1) == []


def test_two_process_shares_resume_and_assemble(data, tmp_path):
  out = tmp_path / "latents"
  kw = dict(encode_video=pool_encoder, encode_captions=captions, window=5, height=32, width=32)
  a = precompute.Precompute(data, out, process_index=0, process_count=2, **kw)
  b = precompute.Precompute(data, out, process_index=1, process_count=2, **kw)
  assert a.cache == b.cache
  ra = a.run(progress=False)
  assert ra == {"clips": 2, "windows": 6, "too_short": 0, "cached": 0, "assembled": False}
  assert not out.exists()
  again = precompute.Precompute(data, out, process_index=0, process_count=2, **kw).run(progress=False)
  assert again["cached"] == 2 and not again["assembled"]  # resumed from the cache, still waiting for share 1
  rb = b.run(progress=False)
  assert rb["assembled"] and not a.cache.exists()
  src, orig = ShardSource(out), ShardSource(data)
  assert len(src) == 9
  recs = {r.clip_id: r for r in (src[i] for i in range(len(src)))}
  first = orig[0]
  r = recs[f"{first.clip_id}@5"]
  assert r.frames is None and r.latents.shape == (2, 4, 4, 16) and r.num_frames == 5
  video = first.frames[5:10].astype(np.float32)[None] / 127.5 - 1
  np.testing.assert_allclose(r.latents, pool_encoder(video)[0], atol=1e-6)
  np.testing.assert_allclose(r.w2c, first.w2c[5:10], atol=1e-9)
  assert r.text_embeddings.shape == (len(first.caption.split()) + 1, 8) and r.caption == first.caption


def test_other_encoders_never_reuse_a_cache_and_short_clips_are_counted(data, tmp_path):
  kw = dict(encode_video=pool_encoder, encode_captions=None, height=32, width=32)
  a = precompute.Precompute(data, tmp_path / "o", window=9, encoders={"vae": str(tmp_path)}, **kw)
  (tmp_path / "weights.bin").write_bytes(b"x")  # the "encoder folder" changed
  b = precompute.Precompute(data, tmp_path / "o", window=9, encoders={"vae": str(tmp_path)}, **kw)
  assert a.cache != b.cache
  with pytest.raises(DataError, match="no clip .* long enough"):
    precompute.Precompute(data, tmp_path / "short", window=33, **kw).run(progress=False)
  with pytest.raises(DataError, match="1 \\+ 4k"):
    precompute.Precompute(data, tmp_path / "x", window=10, **kw)
