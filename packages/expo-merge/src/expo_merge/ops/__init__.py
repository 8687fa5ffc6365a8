"""Tensor ops of expo-merge (reference in PyTorch, fused kernel in Triton)."""

from .extrapolate import extrapolate

__all__ = ["extrapolate"]
