"""dejavu-sparse: contextual sparsity that skips work on decode steps of Llama-family models.

    from dejavu_sparse import calibrate, sparsify
    calib = calibrate(model, token_ids)            # predictors + thresholds (save/load)
    sparsify(model, mode="teal", sparsity=0.4, calibration=calib)
    model.generate(...)                            # decode steps read only selected rows

Modes: ``dejavu`` (Deja Vu low-rank predictors for MLP neurons and attention heads), ``teal``
(TEAL magnitude thresholds on every linear layer's input, greedy per-layer allocation),
``cats`` (CATS threshold on the SiLU gate). Kernels: ``dejavu_sparse.ops``.
"""

from tensor_utils.version import package_version

from .calibration import Calibration, calibrate
from .errors import DejaVuSparseError
from .fallback import dense_fallback_density, set_dense_fallback
from .ops import gather_cols, gather_rows
from .patch import MODES, SparseModel, sparse_state, sparsify, unsparsify

__version__ = package_version("dejavu-sparse", __file__)

__all__ = [
    "MODES",
    "Calibration",
    "DejaVuSparseError",
    "SparseModel",
    "__version__",
    "calibrate",
    "dense_fallback_density",
    "gather_cols",
    "gather_rows",
    "set_dense_fallback",
    "sparse_state",
    "sparsify",
    "unsparsify",
]
