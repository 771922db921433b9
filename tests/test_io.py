"""camjax.io: atomic writes keep the old file on failure and give the new one the usual permissions."""

import os
import stat

import pytest

from camjax.io import atomic_write


def test_atomic_write_gives_umask_permissions_like_open(tmp_path):
  old = os.umask(0o022)
  try:
    with open(tmp_path / "plain.txt", "w") as f:
      f.write("x")
    with atomic_write(tmp_path / "atomic.txt") as f:
      f.write("x")
  finally:
    os.umask(old)
  mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
  assert mode(tmp_path / "atomic.txt") == mode(tmp_path / "plain.txt") == 0o644


def test_atomic_write_keeps_the_old_file_when_the_block_fails(tmp_path):
  path = tmp_path / "a.json"
  path.write_text("old")
  with pytest.raises(RuntimeError):
    with atomic_write(path) as f:
      f.write("half")
      raise RuntimeError("boom")
  assert path.read_text() == "old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temp file left behind
