"""Errors kvprune raises for inputs or generation modes it cannot serve correctly."""


class UnsupportedError(ValueError):
    """A model, argument or generation mode the ragged cache cannot support (one-line message)."""
