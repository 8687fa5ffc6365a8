"""Development-only helpers for the toolkit (never a dependency of a published wheel).

- ``tensor_utils_dev.testing``: tolerances, float64 comparisons, NaN poisoning, hypothesis
  strategies, the pytest plugin, and ``opcheck``: every backend of a registered op against its
  reference on the op's own cases.
- ``tensor_utils_dev.aot``: compile Triton kernels ahead of time for the H100 on a CPU machine.
- ``tensor_utils_dev.bench``: timing, peak memory, tagged CSV rows.
- ``tensor_utils_dev.models``: the SmolLM2-135M-Instruct test model (extra ``models``).
"""
