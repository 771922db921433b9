"""ByteTokenizer: round trips, truncation, masks, errors."""

import numpy as np
import pytest

from camjax.models.tokenizers import BOS_ID, EOS_ID, PAD_ID, ByteTokenizer, TokenizerError

CAPTIONS = ["a camera pans left over a café", "dolly zoom", "日本の街を歩く — 4K", ""]


def test_round_trip_ascii_and_non_ascii():
  tok = ByteTokenizer(max_length=64)
  ids, mask = tok.encode(CAPTIONS)
  assert ids.shape == mask.shape == (4, 64)
  assert ids.dtype == np.int32 and mask.dtype == bool
  assert tok.decode(ids) == CAPTIONS
  assert tok.vocab_size == 259 and ids.max() < tok.vocab_size


def test_layout_and_mask_match_lengths():
  tok = ByteTokenizer(max_length=40)
  ids, mask = tok.encode(CAPTIONS)
  for row, m, text in zip(ids, mask, CAPTIONS):
    data = text.encode("utf-8")
    n = len(data) + 2
    assert m.sum() == n and m[:n].all()
    assert row[0] == BOS_ID and row[n - 1] == EOS_ID and (row[n:] == PAD_ID).all()
    np.testing.assert_array_equal(row[1:n - 1], np.frombuffer(data, np.uint8).astype(np.int32) + 3)


def test_empty_caption_is_bos_eos():
  ids, mask = ByteTokenizer(max_length=4).encode([""])
  np.testing.assert_array_equal(ids, [[BOS_ID, EOS_ID, PAD_ID, PAD_ID]])
  np.testing.assert_array_equal(mask, [[True, True, False, False]])
  assert ByteTokenizer().decode(ids) == [""]
  empty_ids, empty_mask = ByteTokenizer(max_length=4).encode([])
  assert empty_ids.shape == empty_mask.shape == (0, 4)


def test_truncation_keeps_eos():
  tok = ByteTokenizer(max_length=8)
  ids, mask = tok.encode(["abcdefghijkl", "abcdef", "abcde"])
  np.testing.assert_array_equal(ids[0], [BOS_ID, *(np.frombuffer(b"abcdef", np.uint8) + 3), EOS_ID])
  assert mask.all(axis=1).tolist() == [True, True, False]
  assert ids[1, -1] == EOS_ID and ids[2, -2:].tolist() == [EOS_ID, PAD_ID]
  assert tok.decode(ids) == ["abcdef", "abcdef", "abcde"]


def test_truncation_never_splits_a_character():
  tok = ByteTokenizer(max_length=6)  # room for 4 bytes: "ca" + "f" + half of "é" -> "caf"
  ids, mask = tok.encode(["café au lait"])
  assert tok.decode(ids) == ["caf"]
  assert mask.sum() == 5 and ids[0, 4] == EOS_ID


def test_bad_inputs_raise_tokenizer_error():
  tok = ByteTokenizer()
  with pytest.raises(TokenizerError, match=r"texts\[1\] is int"):
    tok.encode(["fine", 3, "also fine"])
  with pytest.raises(TokenizerError, match=r"texts\[0\] is NoneType"):
    tok.encode([None])
  with pytest.raises(TokenizerError, match="bare str"):
    tok.encode("not a list")
  with pytest.raises(TokenizerError, match=r"ids\[0, 1\] = 300"):
    tok.decode(np.array([[1, 300, 2]]))
  with pytest.raises(TokenizerError, match="2-D"):
    tok.decode(np.array([1, 70, 2]))
  with pytest.raises(TokenizerError, match="max_length"):
    ByteTokenizer(max_length=1)


def test_decode_skips_specials_and_replaces_invalid_bytes():
  tok = ByteTokenizer()
  ids = np.array([[BOS_ID, ord("h") + 3, PAD_ID, EOS_ID, ord("i") + 3, 0xFF + 3, EOS_ID]])
  assert tok.decode(ids) == ["hi\ufffd"]
