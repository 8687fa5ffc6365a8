"""Megalodon."""

from tensor_utils.version import package_version

__version__ = package_version("megalodon-model", __file__)
