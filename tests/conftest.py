"""Shared test fixtures: the real data in ../shared/data (skipped with a reason where it is absent)."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("CAMJAX_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real data not found at {SHARED_DATA} (set CAMJAX_SHARED_DATA)")
  return SHARED_DATA
