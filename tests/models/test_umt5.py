"""camjax's umT5 encoder against transformers' `UMT5EncoderModel` (torch, CPU) on tiny random checkpoints the tests
write; WAN's caption handling with a tokenizer trained here; the named errors of the loaders."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from flax import nnx  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from camjax.models import umt5  # noqa: E402
from camjax.models.tokenizers import TokenizerError  # noqa: E402
from camjax.models.umt5 import TextEncoderError, UMT5Config, UMT5Encoder  # noqa: E402
from camjax.xla_flags import fast_jit  # noqa: E402

TINY = dict(vocab_size=128, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
            relative_attention_num_buckets=8, relative_attention_max_distance=16)
CORPUS = ["a camera moves slowly to the left", "the dog runs across a green field",
          "a red car drives down the road at night", "waves break on a rocky shore under grey clouds"] * 10
EOS = 1  # the toy tokenizer's special tokens: <pad> 0, </s> 1, <unk> 2 (as umT5's)


def _randomise(model, seed):
  """Norm weights away from 1 and larger position tables, so a mis-mapped norm or bias changes the output."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("layer_norm.weight"):
        p.copy_(torch.rand_like(p) + 0.5)
      elif name.endswith("relative_attention_bias.weight"):
        p.copy_(torch.randn_like(p))
  return model.eval()


@pytest.fixture(scope="module")
def tiny_umt5(tmp_path_factory):
  model = _randomise(transformers.UMT5EncoderModel(transformers.UMT5Config(**TINY)), 0)
  path = tmp_path_factory.mktemp("umt5") / "encoder"
  model.save_pretrained(path, safe_serialization=True)
  return model, path


def _reference(model, ids, mask=None):
  with torch.no_grad():
    m = None if mask is None else torch.from_numpy(np.asarray(mask)).long()
    out = model(input_ids=torch.from_numpy(np.asarray(ids)).long(), attention_mask=m)
  return out.last_hidden_state.numpy()


def _forward(enc, ids, mask):
  """`enc(ids, mask)` as NumPy, compiled with the fast (compile-bound) XLA options."""
  graphdef, state = nnx.split(enc)
  return np.asarray(fast_jit(lambda s, i, m: nnx.merge(graphdef, s)(i, m))(state, ids, mask))


def _padded_batch(vocab, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(3, vocab, (3, 21)).astype(np.int32)
  mask = np.ones(ids.shape, bool)
  mask[1, 13:] = False  # half padded
  mask[2, 1:] = False  # a single real token
  return ids, mask


def test_relative_position_buckets_match_transformers():
  rel = torch.arange(-600, 601)
  for buckets, distance in ((32, 128), (8, 16), (16, 50)):  # umT5-XXL (WAN), the toy, an odd one
    cfg = transformers.UMT5Config(d_model=8, d_kv=2, num_heads=4, relative_attention_num_buckets=buckets,
                                  relative_attention_max_distance=distance)
    attn = transformers.models.umt5.modeling_umt5.UMT5Attention(cfg, has_relative_attention_bias=True)
    expected = attn._relative_position_bucket(rel[None, :]).numpy()[0]
    # Row 600 of a 1201 x 1201 map holds every relative position -600..600.
    got = umt5.relative_position_buckets(1201, 1201, buckets, distance)[600]
    np.testing.assert_array_equal(got, expected)


def test_parity_padded_fp32(tiny_umt5):
  model, path = tiny_umt5
  enc = UMT5Encoder.from_transformers(path)
  assert enc.config.bias_per_layer and enc.config.activation == "gelu_new"
  ids, mask = _padded_batch(TINY["vocab_size"])
  ref = _reference(model, ids, mask)
  out = _forward(enc, ids, mask)
  assert out.dtype == np.float32 and out.shape == (3, 21, TINY["d_model"])
  # Real tokens, and padded ones too: both compute what transformers computes (padded queries see the real keys).
  np.testing.assert_allclose(out[mask], ref[mask], atol=1e-4, rtol=0)
  np.testing.assert_allclose(out[~mask], ref[~mask], atol=1e-4, rtol=0)
  assert np.abs(ref[~mask]).min() > 0  # not zero at padding: encode_text is what zeroes it
  # Right padding does not change the real tokens: row 1 alone, unpadded.
  np.testing.assert_allclose(out[1, :13], _reference(model, ids[1:2, :13])[0], atol=1e-4, rtol=0)
  # Per-layer tables matter (umT5 is not T5): sharing layer 0's table changes the output.
  shared = nnx.merge(*nnx.split(enc))
  shared.blocks[1].attn.relative_attention_bias = None
  assert np.abs(_forward(shared, ids, mask) - out).max() > 1e-2


def test_bfloat16_compute_stays_close(tiny_umt5):
  model, path = tiny_umt5
  enc = UMT5Encoder.from_transformers(path, dtype="bfloat16", param_dtype="bfloat16")
  assert enc.embed_tokens[...].dtype == jnp.bfloat16
  ids, mask = _padded_batch(TINY["vocab_size"], seed=1)
  out = _forward(enc, ids, mask)
  ref = _reference(model, ids, mask)
  assert out.dtype == np.float32
  err = np.abs(out - ref)[mask].max()
  assert err < 0.05 * np.abs(ref).max(), err


def test_full_seq2seq_checkpoint_sharded(tmp_path):
  """A `UMT5ForConditionalGeneration` folder in shards: decoder / lm_head ignored, `shared.weight` as embedding."""
  model = _randomise(transformers.UMT5ForConditionalGeneration(transformers.UMT5Config(**TINY)), 1)
  model.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="20KB")
  assert os.path.exists(tmp_path / umt5.INDEX_NAME)
  enc = UMT5Encoder.from_transformers(tmp_path)
  ids, mask = _padded_batch(TINY["vocab_size"], seed=2)
  with torch.no_grad():
    ref = model.get_encoder()(input_ids=torch.from_numpy(ids).long(),
                              attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
  np.testing.assert_allclose(_forward(enc, ids, mask)[mask], ref[mask], atol=1e-4,
                             rtol=0)


def test_t5_encoder_shares_layer0_bias(tmp_path):
  """model_type "t5" (plain ReLU FFN, one position table in layer 0 for every layer) loads and matches too."""
  cfg = transformers.T5Config(**TINY, feed_forward_proj="relu")
  model = _randomise(transformers.T5EncoderModel(cfg), 2)
  model.save_pretrained(tmp_path, safe_serialization=True)
  enc = UMT5Encoder.from_transformers(tmp_path)
  assert not enc.config.bias_per_layer and not enc.config.gated
  ids, mask = _padded_batch(TINY["vocab_size"], seed=3)
  np.testing.assert_allclose(_forward(enc, ids, mask)[mask],
                             _reference(model, ids, mask)[mask], atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------------------------------------
# Tokenizer and WAN's caption handling
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_tokenizer(tmp_path_factory):
  """A Unigram tokenizer trained on a toy corpus, umT5-style (`</s>` appended), saved for `AutoTokenizer`."""
  from tokenizers import decoders, models, pre_tokenizers, processors, trainers  # pylint: disable=C0415
  tok = tokenizers.Tokenizer(models.Unigram())
  tok.pre_tokenizer = pre_tokenizers.Metaspace()
  tok.decoder = decoders.Metaspace()
  tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=60, special_tokens=["<pad>", "</s>", "<unk>"],
                                                          unk_token="<unk>"))
  tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS)])
  assert tok.token_to_id("<pad>") == 0 and tok.token_to_id("</s>") == EOS
  root = tmp_path_factory.mktemp("pipeline")  # a diffusers-style pipeline folder: tokenizer/ inside
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                              unk_token="<unk>")
  fast.save_pretrained(root / "tokenizer")
  return root


def test_encode_text_pads_to_512_with_zeros(tiny_umt5, toy_tokenizer):
  model, path = tiny_umt5
  tokenizer = umt5.load_tokenizer(toy_tokenizer / "tokenizer")
  assert isinstance(tokenizer.tokenizer, transformers.PreTrainedTokenizerBase) and tokenizer.max_length == 512
  enc = UMT5Encoder.from_transformers(path)
  captions = ["a camera moves slowly to the left", "the dog", ""]
  emb, mask = umt5.encode_text(tokenizer, enc, captions)
  assert emb.shape == (3, 512, TINY["d_model"]) and mask.shape == (3, 512) and mask.dtype == jnp.bool_
  emb, mask = np.asarray(emb), np.asarray(mask)
  ids, _ = tokenizer.encode(captions)
  for row, caption in enumerate(captions):
    unpadded = tokenizer.tokenizer(caption)["input_ids"]  # pieces + </s>, no padding
    n = len(unpadded)
    assert unpadded[-1] == EOS and ids[row, n - 1] == EOS and (ids[row, n:] == 0).all()
    assert mask[row, :n].all() and not mask[row, n:].any()
    assert (emb[row, n:] == 0).all() and np.abs(emb[row, :n]).min() > 0
    # Real tokens equal transformers' encoder on the unpadded caption: 512-padding changes nothing.
    np.testing.assert_allclose(emb[row, :n], _reference(model, np.array([unpadded]))[0], atol=1e-4, rtol=0)
  assert mask.sum(1).tolist()[2] == 1  # the empty caption is just </s>
  assert tokenizer.decode(ids[:2]) == captions[:2]


def test_tokenizer_truncates_and_loads_from_pipeline_or_json(toy_tokenizer):
  folder = umt5.load_tokenizer(toy_tokenizer / "tokenizer", max_length=8)
  long = [" ".join(CORPUS[:3])]
  ids, mask = folder.encode(long)
  assert ids.shape == (1, 8) and mask.all() and ids[0, -1] == EOS  # truncated, still ends in </s>
  for other in (umt5.load_tokenizer(toy_tokenizer, max_length=8),  # pipeline root -> tokenizer/
                umt5.load_tokenizer(toy_tokenizer / "tokenizer" / "tokenizer.json", max_length=8)):
    np.testing.assert_array_equal(other.encode(long)[0], ids)
    np.testing.assert_array_equal(other.encode(CORPUS[:2], max_length=20)[0], folder.encode(CORPUS[:2], 20)[0])
  with pytest.raises(TokenizerError, match="bare str"):
    folder.encode("a caption")
  with pytest.raises(TokenizerError, match=r"texts\[1\]"):
    folder.encode(["ok", 3])


# ----------------------------------------------------------------------------------------------------------------------
# Named errors
# ----------------------------------------------------------------------------------------------------------------------


def _copy_checkpoint(src, dst, config_edit=None, drop=()):
  os.makedirs(dst)
  config = json.loads((src / "config.json").read_text())
  if config_edit:
    config.update(config_edit)
  (dst / "config.json").write_text(json.dumps(config))
  tensors = {k: v for k, v in load_file(src / "model.safetensors").items() if k not in drop}
  save_file(tensors, dst / "model.safetensors")
  return dst


def test_loader_errors(tiny_umt5, tmp_path):
  _, path = tiny_umt5
  with pytest.raises(TextEncoderError, match="no such text-encoder folder"):
    UMT5Encoder.from_transformers(tmp_path / "absent")
  (tmp_path / "empty").mkdir()
  with pytest.raises(TextEncoderError, match="no config.json"):
    UMT5Encoder.from_transformers(tmp_path / "empty")
  with pytest.raises(TextEncoderError, match="'bert' is not a umT5 / T5 encoder"):
    UMT5Encoder.from_transformers(_copy_checkpoint(path, tmp_path / "bert", {"model_type": "bert"}))
  weightless = tmp_path / "weightless"
  weightless.mkdir()
  (weightless / "config.json").write_text((path / "config.json").read_text())
  (weightless / "pytorch_model.bin").write_bytes(b"")
  with pytest.raises(TextEncoderError, match=r"no safetensors weights.*pytorch_model.bin.*only safetensors"):
    UMT5Encoder.from_transformers(weightless)
  key = "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"
  with pytest.raises(TextEncoderError, match=f"missing {key}"):
    UMT5Encoder.from_transformers(_copy_checkpoint(path, tmp_path / "missing", drop=(key,)))
  with pytest.raises(TextEncoderError, match="missing token embedding"):
    UMT5Encoder.from_transformers(_copy_checkpoint(path, tmp_path / "noembed", drop=("shared.weight",)))
  with pytest.raises(TextEncoderError, match=r"DenseReluDense.wi_0.weight: shape \(64, 32\) does not fit"):
    UMT5Encoder.from_transformers(_copy_checkpoint(path, tmp_path / "shape", {"d_ff": 48}))
  # A T5 config over umT5 weights: layer 1's position table is unexpected.
  with pytest.raises(TextEncoderError, match="unexpected encoder tensors.*block.1.layer.0.SelfAttention.relative"):
    UMT5Encoder.from_transformers(_copy_checkpoint(path, tmp_path / "t5", {"model_type": "t5"}))


def test_input_and_tokenizer_errors(tmp_path, toy_tokenizer):
  # Abstract parameters suffice: every check runs before a parameter is read.
  enc = nnx.eval_shape(lambda: UMT5Encoder(UMT5Config(**{**TINY, "vocab_size": 8}), rngs=nnx.Rngs(0)))
  with pytest.raises(TextEncoderError, match="input_ids must be integer"):
    enc(jnp.zeros((4,), jnp.int32))
  with pytest.raises(TextEncoderError, match="attention_mask shape"):
    enc(jnp.zeros((2, 4), jnp.int32), jnp.ones((2, 5), bool))
  tokenizer = umt5.load_tokenizer(toy_tokenizer)
  with pytest.raises(TextEncoderError, match="outside the encoder's vocabulary"):
    umt5.encode_text(tokenizer, enc, ["a green field"])
  with pytest.raises(TokenizerError, match="no such tokenizer"):
    umt5.load_tokenizer(tmp_path / "absent")
  with pytest.raises(TokenizerError, match="no tokenizer files"):
    umt5.load_tokenizer(tmp_path)
  with pytest.raises(TextEncoderError, match="feed_forward_proj"):
    UMT5Config(feed_forward_proj="gated-tanhish")
  with pytest.raises(TextEncoderError, match="relative_attention_max_distance"):
    UMT5Config(relative_attention_num_buckets=32, relative_attention_max_distance=8)
