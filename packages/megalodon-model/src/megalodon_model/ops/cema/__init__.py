"""``cema``: Megalodon's complex exponential moving average over a sequence.

    y, h_last = cema(x, p, q, eta, h0=None)      # x [B, L, D]; state [B, D, N, 2]

Backends (all agree with the sequential reference, tests/test_cema.py):

- ``reference``: the step-by-step recurrence (the spec; float64-checkable);
- ``chunked``: a chunked parallel scan in PyTorch (auto on the CPU);
- ``fft``: the long convolution the reference repository trains with;
- ``triton``: the chunked scan as Triton kernels with their own backward (auto on CUDA).

Every path takes the incoming state ``h0`` and returns the last one, so a sequence can be
processed in pieces. ``q``/``eta``/state are complex numbers as (real, imag) pairs in float32.
"""

from tensor_utils.ops import Backend, Op

from . import naive

_FLOATS = None  # every float dtype

cema = Op(
    "megalodon_model::cema",
    reference=naive.cema,
    backends=[
        Backend(
            "triton",
            "megalodon_model.ops.cema.triton:cema",
            aot="megalodon_model.ops.cema.triton:aot_launches",
        ),
        Backend(
            "chunked",
            "megalodon_model.ops.cema.chunked:cema",
            device_types=("cpu", "cuda"),
            requires=(),
            interpretable=False,
        ),
        Backend(
            "fft",
            "megalodon_model.ops.cema.fft:cema",
            device_types=("cpu", "cuda"),
            requires=(),
            interpretable=False,
        ),
    ],
    cases="megalodon_model.ops.cema.cases:cases",
    check="megalodon_model.ops.cema.cases:check",
    library=False,  # differentiable backends: autograd runs through them (torch.compile traces)
)

__all__ = ["cema"]
