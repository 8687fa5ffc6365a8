"""dejavu-sparse: contextual sparsity for decoding."""

from tensor_utils.version import package_version

__version__ = package_version("dejavu-sparse", __file__)
