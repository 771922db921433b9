"""camjax kernels: one folder per op with a plain-jnp `reference.py` (the semantic definition and fallback)."""
