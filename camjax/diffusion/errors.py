"""The error of `camjax.diffusion`, on the package's bottom floor: every diffusion module imports it, it imports
only `camjax.errors`, so no diffusion module needs a lazy import to raise it."""

from __future__ import annotations

from camjax.errors import CamjaxError


class DiffusionError(CamjaxError, ValueError):
  """Invalid diffusion configuration or call: unknown objective kind, field, density or parameterisation,
  mismatched condition sets or guidance weights, bad sampler options, bad mask shape."""
