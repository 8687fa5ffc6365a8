"""Ops, one folder each: ``naive.py`` is the spec, ``triton.py`` the kernels."""
