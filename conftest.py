"""pytest start-up for the whole suite, run in the controller before any test process starts (tests/conftest.py holds
the fixtures).

The suite is compile-bound on CPU: most of a test's time is XLA compiling small programs, and many tests (and the
subprocesses they start: the main job, resumed and two-process runs, notebooks) compile the same programs again.
Unless the caller set one, the controller exports `JAX_COMPILATION_CACHE_DIR`, a fresh, empty persistent compilation
cache for this run only (deleted at the end), to itself, the xdist workers and every subprocess. JAX keys an entry by
the program, the compile options, the XLA flags and the jax / jaxlib version, so an entry is reused only for an
identical compilation, and nothing outlives the run.

Not done: XLA's fast-compile flags (`--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false`) for the
whole suite. They compiled a train step about 20% faster, but under them jaxlib 0.10's point-splatting render
(`camjax.geometry.render`) lost points (tests/geometry/test_render.py failed), so tests run what users run.
"""

import os
import shutil
import tempfile

_CREATED = []


def pytest_configure(config):
  del config
  if os.environ.get("PYTEST_XDIST_WORKER") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return  # a worker inherits what its controller exported; a caller's cache is theirs
  path = tempfile.mkdtemp(prefix="camjax-tests-jax-cache-")
  _CREATED.append(path)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = path
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def pytest_unconfigure(config):
  del config
  for path in _CREATED:
    shutil.rmtree(path, ignore_errors=True)
