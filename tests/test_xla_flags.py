"""camjax.xla_flags: defaults added once, never over the user's value, and not at all when switched off."""

from camjax import xla_flags


def test_defaults_are_added_where_the_jaxlib_has_them_and_respect_the_user():
  from jaxlib import version  # pylint: disable=import-outside-toplevel
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  added = xla_flags.apply_defaults(env)
  known = version.__version__.startswith(xla_flags.CPU_DEFAULTS["xla_cpu_experimental_ynn_fusion_type"][1])
  assert added == (["--xla_cpu_experimental_ynn_fusion_type="] if known else [])
  assert env["XLA_FLAGS"].startswith("--xla_force_host_platform_device_count=2")
  assert xla_flags.apply_defaults(env) == []  # idempotent: already there
  user = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"}
  assert xla_flags.apply_defaults(user) == [] and user["XLA_FLAGS"].endswith("LIBRARY_FUSION_TYPE_DOT")
  off = {"CAMJAX_XLA_DEFAULTS": "0"}
  assert xla_flags.apply_defaults(off) == [] and "XLA_FLAGS" not in off
