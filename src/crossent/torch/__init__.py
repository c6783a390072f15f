"""PyTorch fast paths: the fused cross-entropy, the chunked linear cross-entropy, and Modules.

``crossent.torch.cross_entropy`` computes the loss and its gradient in one pass over the
logits (a C++ kernel on CPU, built at first use; torch ops elsewhere);
``crossent.torch.linear_cross_entropy`` never materialises the N x V logits of
``hidden @ weight.T``; ``crossent.torch.margin_linear_cross_entropy`` is ArcFace / CosFace /
SphereFace / L-Softmax chunked over the classes (and class-parallel in
``crossent.torch.distributed``). ``crossent.torch.nn`` has drop-in ``torch.nn.Module`` versions.
"""

try:
    import torch  # noqa: F401
except ModuleNotFoundError as e:
    if e.name != "torch":
        raise
    raise ImportError("crossent.torch needs PyTorch: pip install 'crossent[torch]'") from None

from .cross_entropy import backend_info, cross_entropy
from .linear import choose_chunk_size, linear_cross_entropy
from .linear_distillation import choose_distill_chunk, linear_distillation_loss
from .margin_linear import choose_class_chunk, margin_linear_cross_entropy

__all__ = ["backend_info", "choose_chunk_size", "choose_class_chunk", "choose_distill_chunk",
           "cross_entropy", "linear_cross_entropy", "linear_distillation_loss",
           "margin_linear_cross_entropy"]
