"""XLA flags camjax sets by default for its entry points (the main job, benchmarks), before jax starts a backend.

Measured on the 2-core CPU machine (docs/benchmarks.md, `python benchmarks/dit.py --vs_torch`): XLA:CPU in jaxlib 0.10
hands elementwise / reduce fusions to YNNPACK (`xla_cpu_experimental_ynn_fusion_type`), and the reduce of the softmax
backward over a `[B, heads, N, N]` attention map then takes about 25 ms per layer, 4x the whole forward of the layer.
An empty list keeps the fusions in XLA's own emitter: the CPU default's train step goes from about 165 to 125 ms.

Flags are only added where the installed jaxlib is known to have them (an unknown flag aborts XLA at start-up), never
over a value the user set in `XLA_FLAGS`, and not at all with `CAMJAX_XLA_DEFAULTS=0`.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

# flag -> (value, jaxlib version prefixes known to have it)
CPU_DEFAULTS = {"xla_cpu_experimental_ynn_fusion_type": ("", ("0.10.",))}


def apply_defaults(environ=os.environ) -> list[str]:
  """Appends camjax's default XLA flags to `environ["XLA_FLAGS"]`; returns the flags added.

  Call before jax initialises a backend (before the first array or device query). Flags for XLA:CPU are harmless
  on GPU / TPU (the CPU backend is still created for host work).
  """
  if environ.get("CAMJAX_XLA_DEFAULTS", "1") == "0":
    return []
  try:
    from jaxlib import version  # pylint: disable=import-outside-toplevel
    jaxlib_version = version.__version__
  except ImportError:
    return []
  current = environ.get("XLA_FLAGS", "")
  added = []
  for flag, (value, versions) in CPU_DEFAULTS.items():
    if f"--{flag}" in current or not jaxlib_version.startswith(versions):
      continue
    added.append(f"--{flag}={value}")
  if added:
    environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
  return added


@functools.cache
def fast_compile_options() -> dict:
  """XLA options that make small, compile-bound programs (tests, quick scripts) compile several times faster on CPU:
  no LLVM optimisation, XLA's classic fusion emitter (code generation only). Those this jaxlib knows (an unknown
  option is an error), probed on first use (not at import: no backend starts during collection)."""
  options = {}
  for name, value in (("xla_backend_optimization_level", 0), ("xla_cpu_use_fusion_emitters", False)):
    try:
      jax.jit(lambda x: x + 1).lower(np.float32(0)).compile(compiler_options={name: value})
      options[name] = value
    except Exception:  # pylint: disable=broad-except
      pass
  return options


def fast_jit(fun=None, **kw):
  """`jax.jit` compiling with `fast_compile_options()`."""
  if fun is None:
    return functools.partial(fast_jit, **kw)
  jitted = functools.cache(lambda: jax.jit(fun, compiler_options=fast_compile_options(), **kw))
  return functools.wraps(fun)(lambda *args, **kwargs: jitted()(*args, **kwargs))
