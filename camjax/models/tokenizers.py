"""Caption tokenizers that need no downloads.

:class:`ByteTokenizer` maps a caption to its UTF-8 bytes, so the CPU-default text encoder works offline with a
fixed 259-entry vocabulary:

  id 0 = pad, 1 = bos, 2 = eos, byte `b` (0..255) -> id `b + 3`.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from camjax.errors import CamjaxError

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
BYTE_OFFSET = 3  # id of byte b is b + BYTE_OFFSET


class TokenizerError(CamjaxError, ValueError):
  """Captions or token ids a tokenizer cannot take."""


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
  """Byte-level caption tokenizer: `[bos, utf-8 bytes..., eos]`, padded to a fixed length.

  Attributes:
    max_length: `L`, the length of every encoded row in tokens, bos and eos included (at least 2). Longer captions
      are truncated so that the row still ends in eos: `[bos, first L - 2 bytes, eos]`; the cut never splits a
      multi-byte UTF-8 character (a partial character is dropped, so such a row may hold fewer than `L` tokens).

  Raises:
    TokenizerError: on construction, `max_length` is not an int >= 2.
  """

  max_length: int = 64

  def __post_init__(self):
    if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 2:
      raise TokenizerError(f"max_length must be an int >= 2 (room for bos and eos), got {self.max_length!r}")

  @property
  def vocab_size(self) -> int:
    """259: pad, bos, eos and the 256 byte values."""
    return 256 + BYTE_OFFSET

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenizes a batch of captions.

    Args:
      texts: `B` captions (a list or tuple of `str`; a bare `str` is refused, wrap it in a list).

    Returns:
      `(ids, mask)`: `ids` int32 `[B, max_length]`, each row `[bos, bytes + 3..., eos, pad...]` (pad = 0);
      `mask` bool `[B, max_length]`, True on real tokens (bos, bytes, eos), False on padding. The empty caption
      gives `[bos, eos]`.

    Raises:
      TokenizerError: `texts` is a bare string, or an item is not a `str` (the message gives its index and type).
    """
    if isinstance(texts, (str, bytes)):
      raise TokenizerError(f"texts must be a sequence of str, got a bare {type(texts).__name__}: wrap it in a list")
    texts = list(texts)
    ids = np.full((len(texts), self.max_length), PAD_ID, dtype=np.int32)
    mask = np.zeros((len(texts), self.max_length), dtype=bool)
    for i, text in enumerate(texts):
      if not isinstance(text, str):
        raise TokenizerError(f"texts[{i}] is {type(text).__name__} ({text!r:.40}), not str")
      data = text.encode("utf-8")
      room = self.max_length - 2
      if len(data) > room:
        # The input is valid UTF-8, so only the cut at the end can leave an incomplete character: drop it.
        data = data[:room].decode("utf-8", errors="ignore").encode("utf-8")
      row = np.concatenate([[BOS_ID], np.frombuffer(data, dtype=np.uint8).astype(np.int32) + BYTE_OFFSET, [EOS_ID]])
      ids[i, :len(row)] = row
      mask[i, :len(row)] = True
    return ids, mask

  def decode(self, ids) -> list[str]:
    """Turns token ids back into captions.

    Args:
      ids: integer `[B, L]` ids (numpy or JAX array, or nested lists). pad, bos and eos are skipped wherever they
        appear; the remaining bytes are decoded as UTF-8 with invalid sequences replaced by U+FFFD.

    Returns:
      `B` strings.

    Raises:
      TokenizerError: `ids` is not 2-D integer, or holds an id outside `[0, vocab_size)`.
    """
    ids = np.asarray(ids)
    if ids.ndim != 2 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
      raise TokenizerError(f"ids must be a 2-D integer array [B, L], got shape {ids.shape} dtype {ids.dtype}")
    bad = (ids < 0) | (ids >= self.vocab_size)
    if bad.any():
      b, j = np.argwhere(bad)[0]
      raise TokenizerError(f"ids[{b}, {j}] = {ids[b, j]} is outside the vocabulary [0, {self.vocab_size})")
    return [bytes((row[row >= BYTE_OFFSET] - BYTE_OFFSET).astype(np.uint8)).decode("utf-8", errors="replace")
            for row in ids]
