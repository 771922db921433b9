"""The method registry: `config.method` -> the paper module defining `METHOD`, imported by name on first use."""

from __future__ import annotations

import importlib

from camjax.errors import CamjaxError

# name -> module defining METHOD (a camjax.methods.base.Method).
REGISTRY = {
    "cameractrl2": "camjax.methods.cameractrl2",
    "track2view": "camjax.methods.track2view",
    "realcam_i2v": "camjax.methods.realcam_i2v",
    "motionflow": "camjax.methods.motionflow",
}


class MethodError(CamjaxError):
  """An unknown method, or a config / batch a method cannot use."""


def get(name: str):
  """The registered method `name` (`config.method`).

  Raises:
    MethodError: no method of that name (the message lists the registered ones).
  """
  if name not in REGISTRY:
    raise MethodError(f"unknown method {name!r} (config.method); registered: {', '.join(sorted(REGISTRY))}")
  return importlib.import_module(REGISTRY[name]).METHOD
