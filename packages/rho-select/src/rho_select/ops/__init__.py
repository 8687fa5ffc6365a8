"""Tensor ops of rho-select (PyTorch reference and Triton kernels, dispatched by tensor_utils)."""

from .selective_loss import selective_loss_backward, selective_loss_forward

__all__ = ["selective_loss_backward", "selective_loss_forward"]
