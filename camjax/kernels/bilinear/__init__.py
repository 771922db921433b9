"""Bilinear SAMPLE (grid -> tracks) and SCATTER (tracks -> grid): Track2View's geometry core (REFERENCE.md 5)."""

from camjax.kernels.bilinear.reference import bilinear_sample, bilinear_scatter, corner_weights
