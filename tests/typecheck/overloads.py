"""The return types a type checker infers for the torch losses' overloads.

Not a pytest module: ``make test`` runs mypy over this file with the package (see
``[tool.mypy] files``). ``assert_type`` fails the check when an overload infers another type,
and with ``warn_unused_ignores`` each ``type: ignore`` fails it unless mypy rejects that call.
"""

from __future__ import annotations

import torch
from typing_extensions import assert_type

import crossent.torch as ct
from crossent.torch import distributed as dist

Pair = tuple[torch.Tensor, torch.Tensor]


def logits_losses(x: torch.Tensor, y: torch.Tensor, flag: bool) -> None:
    assert_type(ct.cross_entropy(x, y), torch.Tensor)
    assert_type(ct.cross_entropy(x, y, None, None, -100, None, "sum", 0.1, z_loss=1e-4,
                                 softcap=30.0, inplace_backward=True, impl="torch"),
                torch.Tensor)
    assert_type(ct.cross_entropy(x, y, return_z_loss=True), Pair)
    assert_type(ct.cross_entropy(x, y, return_z_loss=flag), torch.Tensor | Pair)
    ct.cross_entropy(x, y, z_los=1e-4)  # type: ignore[call-overload]
    ct.cross_entropy(x, y, softcap="30")  # type: ignore[call-overload]


def linear_losses(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor, flag: bool) -> None:
    assert_type(ct.linear_cross_entropy(h, w, y), torch.Tensor)
    assert_type(ct.linear_cross_entropy(h, w, y, None, chunk_size=256, shift=True,
                                        accum_dtype=torch.float32), torch.Tensor)
    assert_type(ct.linear_cross_entropy(input=h, linear_weight=w, target=y), torch.Tensor)
    assert_type(ct.linear_cross_entropy(h, w, y, return_z_loss=True), torch.Tensor | Pair)
    assert_type(ct.linear_cross_entropy(h, w, y, return_lse=flag),
                torch.Tensor | tuple[torch.Tensor, ...])
    ct.linear_cross_entropy(h, w, y, chunk=256)  # type: ignore[call-overload]


def vocab_parallel_losses(x: torch.Tensor, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor,
                          flag: bool) -> None:
    assert_type(dist.vocab_parallel_cross_entropy(x, y, vocab_size=8, inplace_backward=True),
                torch.Tensor)
    assert_type(dist.vocab_parallel_cross_entropy(x, y, return_z_loss=True), Pair)
    assert_type(dist.vocab_parallel_cross_entropy(x, y, return_z_loss=flag), torch.Tensor | Pair)
    assert_type(dist.vocab_parallel_linear_cross_entropy(h, w, y, chunk_size=64), torch.Tensor)
    assert_type(dist.vocab_parallel_linear_cross_entropy(h, w, y, None, return_z_loss=True), Pair)
    dist.vocab_parallel_linear_cross_entropy(  # type: ignore[call-overload]
        h, w, y, inplace_backward=True)
