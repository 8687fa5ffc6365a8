"""The one error type dejavu-sparse raises for bad input: a one-line message naming the problem."""


class DejaVuSparseError(ValueError):
    """A bad argument, a calibration made for another model, or an unsupported architecture."""
