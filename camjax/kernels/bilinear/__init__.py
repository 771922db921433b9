"""Bilinear SAMPLE (grid -> tracks) and SCATTER (tracks -> grid): Track2View's geometry core (REFERENCE.md 5).

`bilinear_sample` / `bilinear_scatter` here are the dispatching entry points of `api.py` (choose
`implementation="xla" | "pallas_triton" | "pallas_tpu"`, default by backend); `reference.py` holds the plain-jnp
definition, `pallas_triton.py` / `pallas_tpu.py` the kernels. See docs/kernels.md.
"""

from camjax.kernels.bilinear.api import bilinear_sample, bilinear_scatter, default_implementation
from camjax.kernels.bilinear.common import IMPLEMENTATIONS, BilinearError
from camjax.kernels.bilinear.reference import corner_weights
