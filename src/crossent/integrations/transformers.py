"""Hugging Face transformers: train a ``*ForCausalLM`` without its (B, T, V) logits.

:func:`patch` makes a causal language model compute its training loss with
:func:`crossent.torch.linear_cross_entropy` on the final hidden states and the ``lm_head``
weight, chunk by chunk, so the logits of the whole batch never exist; :func:`causal_lm_loss`
is a drop-in for ``model.loss_function`` on materialised logits, built on
:func:`crossent.torch.cross_entropy`. Both follow ``transformers.loss.loss_utils
.ForCausalLMLoss`` (label shift, ``ignore_index``, ``num_items_in_batch``, ``shift_labels``).

Needs the ``transformers`` extra: ``pip install 'crossent[transformers]'``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

try:
    # through importlib so type checkers do not analyse all of transformers (it ships py.typed)
    importlib.import_module("transformers")
except ImportError:
    raise ImportError("crossent.integrations.transformers needs transformers: "
                      "pip install 'crossent[transformers]'") from None

from ..torch import cross_entropy, linear_cross_entropy

__all__ = ["causal_lm_loss", "is_patched", "patch", "unpatch"]

M = TypeVar("M", bound=torch.nn.Module)

_STATE = "_crossent_patch"
# options of linear_cross_entropy that patch() passes through; the others belong to the model
_PASSED = ("chunk_size", "label_smoothing", "z_loss", "impl")
_OWNED = {
    "ignore_index": "it comes from the model's loss call (its ignore_index, -100 by default)",
    "reduction": "it follows transformers: mean, or sum / num_items_in_batch when given",
    "softcap": "it is the model's own (read from what its forward does to the logits, e.g. "
               "Gemma 2's final_logit_softcapping)",
    "return_z_loss": "the model's loss must be one tensor",
}
# ops on the placeholder logits that do not change the loss: dtype casts and layout
_NEUTRAL = frozenset({"__get__", "float", "to", "type", "contiguous", "clone", "detach",
                      "view", "reshape", "size", "dim", "numel", "__len__", "__repr__",
                      "__format__", "requires_grad_"})


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    vocab_size: int,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Causal-LM cross-entropy on logits, as ``ForCausalLMLoss`` computes it, with crossent.

    A drop-in for a transformers model's ``loss_function`` (``model.loss_function =
    causal_lm_loss``) built on :func:`crossent.torch.cross_entropy` (one fused pass over the
    logits, the gradient computed in the forward). Same semantics as transformers: the logits
    are upcast to float32; unless ``shift_labels`` is given, ``labels`` are shifted left by one
    (padded with ``ignore_index`` at the end), so position ``t`` predicts token ``t + 1``; the
    loss is the mean over non-ignored tokens, or their sum divided by ``num_items_in_batch``
    when that is given (gradient accumulation, as ``Trainer`` passes it). One difference: a
    batch whose every label is ignored gives 0 (zero gradient) with the mean, not NaN.

    Args:
        logits: (..., V) scores, any floating dtype (computed in float32).
        labels: (..., T) token ids, ``ignore_index`` where no loss is wanted; unshifted.
        vocab_size: V, the size of the logits' last dimension.
        num_items_in_batch: number of target tokens in the whole (accumulated) batch, an int
            or a tensor; None takes the mean over this call's non-ignored tokens.
        ignore_index: label value that contributes nothing.
        shift_labels: labels already aligned with the logits (then ``labels`` is unused).
        **kwargs: the other keyword arguments a model forwards to its loss; ignored.

    Returns:
        The scalar loss, float32.

    Raises:
        ValueError: logits and labels that do not have the same number of positions, a label
            out of range (as :func:`crossent.torch.cross_entropy` checks them).

    Example::

        import transformers
        from crossent.integrations.transformers import causal_lm_loss

        model = transformers.AutoModelForCausalLM.from_pretrained("gpt2")
        model.loss_function = causal_lm_loss   # the stock loss, on crossent's kernel
        out = model(input_ids, labels=input_ids)

    References:
        transformers' loss functions:
        https://huggingface.co/docs/transformers/main/en/main_classes/trainer
        (``ForCausalLMLoss`` in ``transformers/loss/loss_utils.py``).
    """
    flat = logits.float().reshape(-1, vocab_size)
    target = _targets(labels, shift_labels, ignore_index, flat, "logits have {} positions")
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = cross_entropy(flat, target, ignore_index=ignore_index, reduction=reduction)
    return _per_item(loss, num_items_in_batch)


def patch(model: M, **loss_options: Any) -> M:
    """Make a transformers ``*ForCausalLM`` train with crossent's chunked linear cross-entropy.

    The model's forward is wrapped (on this instance only; its signature and docs are kept).
    A call with ``labels`` that is not pure inference (the model in ``train()`` mode, or
    gradients enabled) runs the model's own forward with two substitutions: its output
    embedding (``model.get_output_embeddings()``, tied or not) records its input, the final
    hidden states as the model sliced them (``logits_to_keep`` keeps its meaning), and returns
    an empty placeholder instead of the logits; and the model's ``loss_function`` computes
    :func:`crossent.torch.linear_cross_entropy` of those hidden states with the head's weight
    and bias, never materialising the (B, T, V) logits. The output then has ``logits=None``.
    Anything the forward does to the logits between the head and the loss is replayed: a
    softcap ``c * tanh(x / c)`` (Gemma 2's ``final_logit_softcapping``) becomes the loss's
    ``softcap``, a multiplication or division by a number (a logit scale) is folded into the
    hidden states; any other operation raises. Every other call, without labels, or with
    labels in ``eval()`` mode under ``torch.no_grad()`` / ``torch.inference_mode()`` (as
    ``Trainer`` evaluates, so ``compute_metrics`` gets real logits), runs the original forward
    untouched: generation and evaluation behave exactly as before.

    The loss is that of transformers' ``ForCausalLMLoss``: labels shifted left by one unless
    ``shift_labels`` is given, ``ignore_index`` from the call (-100), the mean over
    non-ignored tokens or, when ``num_items_in_batch`` is passed (``Trainer`` with gradient
    accumulation), their sum divided by it. It is float32 for half-precision models, as
    transformers upcasts the logits; a float64 model gets a float64 loss.

    Args:
        model: a transformers causal LM whose ``get_output_embeddings()`` is an
            ``nn.Linear`` and whose forward computes its loss with ``self.loss_function``
            (every ``*ForCausalLM`` of transformers does).
        **loss_options: passed to :func:`crossent.torch.linear_cross_entropy`:
            ``chunk_size``, ``label_smoothing``, ``z_loss``, ``impl``. Checked here, once.

    Returns:
        ``model`` itself, patched in place (patching it again with the same options is a
        no-op).

    Raises:
        TypeError: a model without an ``nn.Linear`` output embedding or a ``loss_function``,
            an unknown loss option.
        ValueError: a loss option the model owns (``ignore_index``, ``reduction``,
            ``softcap``, ``return_z_loss``), a bad option value (named), a model already
            patched with other options (call :func:`unpatch` first).
        NotImplementedError: at a training call, a forward that transforms its logits in a
            way the fused loss cannot reproduce, or that calls the head more than once.
        RuntimeError: at a training call, a forward that computed its loss without
            ``self.loss_function``.

    Example::

        import transformers
        from crossent.integrations.transformers import patch

        config = transformers.LlamaConfig(vocab_size=32000, hidden_size=256,
                                          intermediate_size=512, num_hidden_layers=2,
                                          num_attention_heads=4)
        model = patch(transformers.LlamaForCausalLM(config), z_loss=1e-4)
        out = model(input_ids, labels=input_ids)      # out.logits is None
        out.loss.backward()
        transformers.Trainer(model=model, ...).train()  # works as with the stock model

    References:
        Causal language modelling in transformers:
        https://huggingface.co/docs/transformers/main/en/tasks/language_modeling ;
        Wijmans et al., 2024, "Cut Your Losses in Large-Vocabulary Language Models".
    """
    opts = _check_options(loss_options)
    state = model.__dict__.get(_STATE)
    if state is not None:
        if state.options != opts:
            raise ValueError(f"this model is already patched with loss options {state.options};"
                             f" call unpatch(model) before patching it with {opts}")
        return model
    head = _output_head(model)
    if head is None:
        raise TypeError(f"{type(model).__name__} has no nn.Linear output embedding "
                        f"(get_output_embeddings()); patch() needs a *ForCausalLM model")
    if not hasattr(type(model), "loss_function"):
        raise TypeError(f"{type(model).__name__} has no loss_function: patch() needs a "
                        f"transformers PreTrainedModel")
    cls_forward = type(model).forward
    labels_pos = _labels_position(cls_forward)
    old_forward = model.__dict__.get("forward")
    model.__dict__[_STATE] = _State(
        options=opts, inner=old_forward, labels_pos=labels_pos,
        had_loss="_loss_function" in model.__dict__,
        old_loss=model.__dict__.get("_loss_function"))

    # A module-level function bound with MethodType (not a closure over the model): a
    # deepcopy of the patched model rebinds it to the copy.
    @functools.wraps(cls_forward)
    def forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        return _forward(self, args, kwargs)

    model.forward = types.MethodType(forward, model)
    model.__dict__["_loss_function"] = types.MethodType(_fused_loss, model)
    return model


def unpatch(model: M) -> M:
    """Undo :func:`patch`: the model's forward and loss function are its own again.

    Args:
        model: a model patched by :func:`patch` (an unpatched one is returned unchanged).

    Returns:
        ``model`` itself.

    Example::

        model = unpatch(patch(model))   # as before
    """
    state = model.__dict__.pop(_STATE, None)
    if state is None:
        return model
    if state.inner is None:
        model.__dict__.pop("forward", None)
    else:
        model.__dict__["forward"] = state.inner
    if state.had_loss:
        model.__dict__["_loss_function"] = state.old_loss
    else:
        model.__dict__.pop("_loss_function", None)
    return model


def is_patched(model: torch.nn.Module) -> bool:
    """Whether :func:`patch` has patched ``model`` (and :func:`unpatch` has not undone it).

    Args:
        model: any module.

    Returns:
        True for a patched model.
    """
    return _STATE in model.__dict__


# --------------------------------------------------------------------------- internals


@dataclass
class _Stash:
    hidden: torch.Tensor
    head: torch.nn.Linear
    ops: list[tuple[str, tuple[Any, ...]]]
    used: bool = False


@dataclass
class _State:
    options: dict[str, Any]
    inner: Any  # an instance-level forward that was there before patch() (or None)
    labels_pos: int | None
    had_loss: bool
    old_loss: Any
    stash: _Stash | None = None
    capturing: bool = False


class _Placeholder(torch.Tensor):
    """The empty (..., 0) tensor the head returns instead of the logits while capturing.

    It records what the forward does to it (``__torch_function__``), so the fused loss can
    replay a softcap or a logit scale, and refuse anything else instead of silently dropping it.
    """

    _crossent_ops: list[tuple[str, tuple[Any, ...]]]

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        ops = None
        for a in (*args, *kwargs.values()):
            if isinstance(a, _Placeholder):
                ops = a.__dict__.get("_crossent_ops")
                break
        out = super().__torch_function__(func, types, args, kwargs)
        if ops is not None:
            name = getattr(func, "__name__", str(func))
            if name not in _NEUTRAL:
                others = tuple(a for a in (*args[1:], *kwargs.values())
                               if not isinstance(a, _Placeholder))
                ops.append((name, others))
            for o in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(o, _Placeholder) and "_crossent_ops" not in o.__dict__:
                    o._crossent_ops = ops
        return out


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    for name in options:
        if name in _OWNED:
            raise ValueError(f"patch() does not take the loss option {name!r}: {_OWNED[name]}")
        if name not in _PASSED:
            raise TypeError(f"patch() got an unknown loss option {name!r}; the options are "
                            f"{', '.join(_PASSED)}")
    # a one-row dry run: linear_cross_entropy's own checks, with its messages naming the option
    linear_cross_entropy(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, dtype=torch.long),
                         **options)
    return dict(options)


def _output_head(model: torch.nn.Module) -> torch.nn.Linear | None:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, torch.nn.Linear) else None


def _labels_position(forward: Callable[..., Any]) -> int | None:
    """Index of ``labels`` among the forward's positional arguments (after ``self``)."""
    try:
        params = list(inspect.signature(forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    for i, p in enumerate(params):
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            return None
        if p.name == "labels":
            return i
    return None


def _forward(model: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    state: _State = model.__dict__[_STATE]
    inner = state.inner if state.inner is not None else types.MethodType(type(model).forward,
                                                                           model)
    labels = kwargs.get("labels")
    if labels is None and state.labels_pos is not None and len(args) > state.labels_pos:
        labels = args[state.labels_pos]
    # Only a call that computes a loss for training is changed: pure inference (eval mode
    # under no_grad) keeps the real logits, e.g. for Trainer's compute_metrics.
    fused = labels is not None and (model.training or torch.is_grad_enabled())
    head = _output_head(model) if fused else None
    if head is None or state.capturing:
        return inner(*args, **kwargs)

    def capture(hidden: torch.Tensor) -> torch.Tensor:
        if state.stash is not None:
            raise NotImplementedError(f"{type(model).__name__}'s forward calls its output "
                                      f"embedding more than once; patch() cannot fuse its loss")
        placeholder = hidden.new_zeros(*hidden.shape[:-1], 0).as_subclass(_Placeholder)
        placeholder._crossent_ops = []
        state.stash = _Stash(hidden, head, placeholder._crossent_ops)
        return placeholder

    saved = head.__dict__.get("forward")
    head.__dict__["forward"] = capture
    state.capturing = True
    try:
        out = inner(*args, **kwargs)
        stash = state.stash
    finally:
        state.capturing = False
        state.stash = None
        if saved is None:
            head.__dict__.pop("forward", None)
        else:
            head.__dict__["forward"] = saved
    if stash is None:  # the forward never called its head: nothing was substituted
        return out
    if not stash.used:
        raise RuntimeError(f"{type(model).__name__}'s forward computed its loss without "
                           f"self.loss_function; patch() cannot fuse it (call unpatch(model))")
    return _drop_placeholder(out)


def _drop_placeholder(out: Any) -> Any:
    """The output as the model builds it with ``logits=None``."""
    if isinstance(out, tuple):
        return type(out)(x for x in out if not isinstance(x, _Placeholder))
    if isinstance(out, dict) and isinstance(out.get("logits"), _Placeholder):
        fields = {k: v for k, v in out.items() if k != "logits"}
        try:
            return type(out)(**fields)
        except TypeError:
            out["logits"] = None
    return out


def _logit_transform(ops: list[tuple[str, tuple[Any, ...]]], name: str
                     ) -> tuple[float, float | None]:
    """(scale, softcap) such that the forward's logits are softcap(scale * head(hidden))."""
    def number(op: tuple[str, tuple[Any, ...]], *names: str) -> float | None:
        fn, others = op
        if fn.rstrip("_") in names and len(others) == 1 and isinstance(others[0], (int, float)) \
                and not isinstance(others[0], bool):
            return float(others[0])
        return None

    rest, cap = list(ops), None
    if len(rest) >= 3 and rest[-2][0].rstrip("_") == "tanh" and not rest[-2][1]:
        c1, c2 = number(rest[-3], "div"), number(rest[-1], "mul")
        if c1 is not None and c1 == c2 and c1 > 0:
            cap, rest = c1, rest[:-3]
    scale = 1.0
    for op in rest:
        m, d = number(op, "mul"), number(op, "div")
        if m is not None:
            scale *= m
        elif d is not None and d != 0:
            scale /= d
        else:
            raise NotImplementedError(
                f"{name}'s forward applies {op[0]} to the logits after its output embedding; "
                f"patch() can replay a softcap and a scale only (call unpatch(model))")
    return scale, cap


def _targets(labels: torch.Tensor, shift_labels: torch.Tensor | None, ignore_index: int,
             rows: torch.Tensor, holder: str) -> torch.Tensor:
    """The flat labels that the positions of ``rows`` predict, on its device: ``labels``
    shifted left by one (``ignore_index`` at the end) unless ``shift_labels`` is given. The
    shift moves the labels (a cheap int copy), never the logits or the hidden states.
    ``holder`` words the error, ``{}`` standing for the number of positions."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    target = shift_labels.reshape(-1).to(rows.device)
    if target.shape[0] != rows.shape[0]:
        raise ValueError(f"{holder.format(rows.shape[0])} but labels have {target.shape[0]}")
    return target


def _fused_loss(model: torch.nn.Module, logits: torch.Tensor, labels: torch.Tensor,
                vocab_size: int, num_items_in_batch: torch.Tensor | int | None = None,
                ignore_index: int = -100, shift_labels: torch.Tensor | None = None,
                **kwargs: Any) -> torch.Tensor:
    """The patched model's ``loss_function`` (``ForCausalLMLoss``'s signature)."""
    state: _State | None = model.__dict__.get(_STATE)
    stash = None if state is None else state.stash
    if (stash is None or not isinstance(logits, _Placeholder)
            or logits.__dict__.get("_crossent_ops") is not stash.ops):
        return causal_lm_loss(logits, labels, vocab_size, num_items_in_batch, ignore_index,
                              shift_labels, **kwargs)
    assert state is not None
    scale, cap = _logit_transform(stash.ops, type(model).__name__)
    hidden = stash.hidden
    weight = stash.head.weight
    bias: torch.Tensor | None = stash.head.bias
    # accelerate's device_map hooks move a head's input to its device inside the forward that
    # capture() replaced: move it here
    h = hidden.reshape(-1, hidden.shape[-1]).to(weight.device)
    target = _targets(labels, shift_labels, ignore_index, h,
                      "the model kept {} positions (logits_to_keep?)")
    if scale != 1.0:  # scale * (h W^T + b) = (scale h) W^T + scale b
        h = h * scale
        bias = None if bias is None else bias * scale
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = linear_cross_entropy(h, weight, target, bias, ignore_index=ignore_index,
                                reduction=reduction, softcap=cap, **state.options)
    if loss.dtype in (torch.float16, torch.bfloat16):
        loss = loss.float()  # transformers upcasts the logits: a float32 loss
    stash.used = True
    return _per_item(loss, num_items_in_batch)


def _per_item(loss: torch.Tensor, num_items_in_batch: torch.Tensor | int | None
              ) -> torch.Tensor:
    if num_items_in_batch is None:
        return loss
    if isinstance(num_items_in_batch, torch.Tensor):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch

