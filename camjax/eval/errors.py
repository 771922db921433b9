"""Errors of the evaluation library."""

from __future__ import annotations

from camjax.errors import CamjaxError


class EvalError(CamjaxError, ValueError):
  """Bad evaluation input: mismatched videos/cameras, a missing sample file, absent learned-metric weights."""
