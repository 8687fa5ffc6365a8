"""Reference routing (the spec): ``jetmoe_model.routing.top_k_route`` (PyTorch ``topk``,
``softmax`` over the top-k logits, stable ``sort`` + ``searchsorted`` for the expert order)."""

from ...routing import top_k_route

__all__ = ["top_k_route"]
