"""camjax."""
