"""DTensor inputs (FSDP2 parameters, tensor-parallel logits) for the fused losses.

Two cases, both exact:

- A parameter sharded by FSDP2 (``fully_shard``) or any ``DTensor`` weight, passed to
  :func:`crossent.torch.linear_cross_entropy` outside its module's forward (where FSDP2 has not
  gathered it): it is gathered in full the way FSDP2 gathers it, and the gather's backward
  reduce-scatters the gradient averaged over the ranks, FSDP2's default reduction. A local
  shard is never used as if it were the whole weight.
- Logits sharded on the class dimension (``Shard(-1)``, what torchtitan's ``loss_parallel()``
  works with) passed to :func:`crossent.torch.distributed.vocab_parallel_cross_entropy`: the
  local block, the mesh dimension's process group and the block's global offset (DTensor's
  ``torch.chunk`` layout) feed the vocabulary-parallel loss, whose result is returned as a
  replicated DTensor.
"""

from __future__ import annotations

import math
from typing import Any

import torch

try:
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor.placement_types import Partial
except ImportError:  # torch without distributed support
    DTensor = None  # type: ignore[assignment,misc]


def is_dtensor(t: Any) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def gathered(t: Any, name: str) -> Any:
    """``t`` itself, or a DTensor in full on every rank (an all-gather that autograd sees:
    the gradient comes back reduce-scattered, averaged over the ranks)."""
    if not is_dtensor(t):
        return t
    full = [Replicate()] * t.device_mesh.ndim
    if any(not isinstance(p, (Shard, Replicate)) for p in t.placements):
        raise ValueError(f"{name}: a DTensor with placements {t.placements} (partial sums) "
                         "cannot be gathered; pass a sharded or replicated one")
    return t.redistribute(placements=full).to_local(
        grad_placements=[Partial("avg")] * t.device_mesh.ndim)


def replicated_activation(t: Any, name: str) -> Any:
    """Activations: a plain tensor, or a DTensor replicated on every mesh dimension."""
    if not is_dtensor(t):
        return t
    if not all(isinstance(p, Replicate) for p in t.placements):
        raise ValueError(f"{name}: a DTensor sharded as {t.placements} is not supported here; "
                         "pass its full value (replicated) or use the vocabulary-parallel "
                         "functions of crossent.torch.distributed")
    return t.to_local()


def class_sharded(logits: Any, name: str) -> tuple[torch.Tensor, Any, int, int, Any]:
    """(local block, process group, global offset of its first class, number of classes,
    mesh) of logits sharded on their last dimension over one mesh dimension and replicated
    over the others."""
    mesh, last = logits.device_mesh, logits.ndim - 1
    dims = [i for i, p in enumerate(logits.placements) if isinstance(p, Shard)
            and p.dim % logits.ndim == last]
    others_ok = all(isinstance(p, Replicate) for i, p in enumerate(logits.placements)
                    if i not in dims)
    if len(dims) != 1 or not others_ok:
        raise ValueError(f"{name}: a DTensor must be sharded on its class (last) dimension "
                         f"over one mesh dimension and replicated over the others, got "
                         f"placements {logits.placements}")
    (mesh_dim,) = dims
    num_classes = logits.shape[-1]
    parts = mesh.size(mesh_dim)
    step = math.ceil(num_classes / parts) if parts else 0  # torch.chunk's block size
    start = min(mesh.get_local_rank(mesh_dim) * step, num_classes)
    return logits.to_local(), mesh.get_group(mesh_dim), start, num_classes, mesh


def as_replicated(value: torch.Tensor, mesh: Any) -> Any:
    """A value every rank holds identically, as a replicated DTensor on ``mesh``."""
    return DTensor.from_local(value, mesh, [Replicate()] * mesh.ndim, run_check=False)
