"""The one exception users see: a single line that names the problem."""


class PerlError(ValueError):
    """Bad input or an incompatible checkpoint; the message is one line meant for the user."""
