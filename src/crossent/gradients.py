"""One definition per loss, and its closed-form gradient is the backward on every backend.

A loss is written once, as a *definition*::

    @loss(wrt=("logits", "targets"))
    def softmax_cross_entropy(need, logits, targets, *, axis=-1, ..., reduction="mean"):
        ...
        return value, pullback

``need`` is the tuple of argument names whose gradients the caller wants (empty for a plain
evaluation, so no gradient work is done). ``pullback(cotangent)`` maps a cotangent of
``value``'s shape to a dict ``{name: d<value, cotangent>/d arg}`` for the names in ``need``,
computed from the same intermediates as the value; ``pullback(None)`` means a cotangent of
ones (the gradient of the sum of the entries) and skips the multiplication. A pullback must
be linear in the cotangent (JAX transposes it). :func:`loss` derives from it, by one
mechanism and with the definition's own signature (defaults written once, options by
keyword):

* the public loss ``f(*arrays, **options)``: on NumPy and array-API libraries without
  autodiff a plain evaluation; on torch tensors that require grad an autograd Function whose
  backward is the pullback (double backward recomputes it with differentiable ops); on JAX a
  ``jax.custom_jvp`` whose tangent map is the transpose of the pullback, so ``jax.grad``,
  ``jit``, ``vmap`` and higher-order derivatives all use the closed form;
* :func:`value_and_grad` / :func:`grad` ``(f, argnums=0)``: value and gradient in one pass on
  any backend.

Arguments a definition has no closed form for (not in ``wrt``) are differentiated by the
backend's autodiff through the definition's value code, which is written autodiff-safe.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import array_api_compat

Array = Any
Pullback = Callable[[Array], dict[str, Array]]


class Loss(Protocol):
    """A public crossent loss: ``loss(*arrays, **options) -> value``, and its definition as
    ``loss.with_pullback(need, *arrays, **options) -> (value, pullback)``."""

    __name__: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def with_pullback(self, need: tuple[str, ...], *args: Any, **kwargs: Any
                      ) -> tuple[Array, Pullback | None]: ...

__all__ = ["loss", "value_and_grad", "grad", "has_closed_form", "closed_form_args",
           "scaled_pullback"]


def _always() -> bool:
    return True


def _autocast_query(torch_mod: Any) -> Callable[[], bool]:
    """Whether any ``torch.autocast`` region is on, as a function of no arguments (always True
    where torch cannot say cheaply: the per-device check in ``under_autocast`` then
    decides)."""
    return getattr(torch_mod._C, "_is_any_autocast_enabled", _always)


def _resolve(target: str) -> Callable[..., Any]:
    """The function a ``"module:function"`` registration names."""
    import importlib

    mod, _, name = target.partition(":")
    return getattr(importlib.import_module(mod), name)


class _Spec:
    """A registered definition: its function, array arguments, options and closed forms."""

    def __init__(self, defn: Callable[..., tuple[Array, Pullback | None]],
                 wrt: Sequence[str], torch: str | None = None,
                 numpy: str | None = None, jax: str | None = None) -> None:
        sig = inspect.signature(defn)
        params = list(sig.parameters.values())[1:]  # drop ``need``
        self.defn = defn
        self.arrays = tuple(p.name for p in params
                            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
        self.wrt = tuple(wrt)
        unknown = set(self.wrt) - set(self.arrays)
        if unknown:
            raise TypeError(f"{defn.__name__}: wrt names {sorted(unknown)} are not array "
                            f"arguments {self.arrays}")
        # the public loss returns the value only
        self.signature = sig.replace(parameters=params, return_annotation="Array")
        self.torch = torch
        self.numpy = numpy
        self.jax = jax
        self._jax_fn: Callable[..., Any] | None = None
        self._torch_fn: Callable[..., Any] | None = None
        self._numpy_fn: Callable[..., Any] | None = None
        self.autocast_query: Callable[[], bool] | None = None
        # what split needs without Signature.bind (a few microseconds a call): the options'
        # defaults; any other call shape goes through bind, which words the TypeError
        self.defaults = {p.name: p.default for p in params if p.kind == p.KEYWORD_ONLY}
        self.simple = all(p.default is p.empty for p in params if p.name in self.arrays) \
            and all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)

    def find_autocast_query(self, torch_mod: Any) -> Callable[[], bool]:
        """The autocast query, looked up on the first torch call."""
        self.autocast_query = _autocast_query(torch_mod)
        return self.autocast_query

    def torch_impl(self) -> Callable[..., Any] | None:
        """The registered torch implementation (imported on first use, so the core never
        imports ``crossent.torch`` itself), or None."""
        if self._torch_fn is None and self.torch is not None:
            self._torch_fn = _resolve(self.torch)
        return self._torch_fn

    def jax_impl(self) -> Callable[..., Any] | None:
        """The registered JAX implementation (public signature), or None."""
        if self._jax_fn is None and self.jax is not None:
            self._jax_fn = _resolve(self.jax)
        return self._jax_fn

    def numpy_defn(self) -> Callable[..., Any] | None:
        """The registered NumPy definition for the common case, or None."""
        if self._numpy_fn is None and self.numpy is not None:
            self._numpy_fn = _resolve(self.numpy)
        return self._numpy_fn

    def run(self, need: tuple[str, ...], arrays: list[Any], options: dict[str, Any]
            ) -> tuple[Array, Pullback | None]:
        """The definition on NumPy/array-API inputs: the registered NumPy path where it
        serves the call, else the generic one."""
        fast = self.numpy_defn()
        if fast is not None:
            out = fast(need, *arrays, **options)
            if out is not NotImplemented:
                return out
        return self.defn(need, *arrays, **options)

    def split(self, args: tuple, kwargs: dict) -> tuple[list[Any], dict[str, Any]]:
        if self.simple and len(args) == len(self.arrays) and kwargs.keys() <= self.defaults.keys():
            options = self.defaults.copy()
            options.update(kwargs)
            return list(args), options
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arrays = [bound.arguments[n] for n in self.arrays]
        options = {k: v for k, v in bound.arguments.items() if k not in self.arrays}
        return arrays, options


_SPECS: dict[Any, _Spec] = {}


def _is_float_array(x: Any) -> bool:
    dt = getattr(x, "dtype", None)
    if dt is None:
        return False
    kind = getattr(dt, "kind", None)  # NumPy and JAX dtypes; str() costs microseconds
    if kind == "f":
        return True
    if kind in ("b", "i", "u", "c"):
        return False
    is_fp = getattr(dt, "is_floating_point", None)  # torch
    if isinstance(is_fp, bool):
        return is_fp
    return "float" in str(dt).rsplit(".", 1)[-1]


def loss(*, wrt: Sequence[str], torch: str | None = None, numpy: str | None = None,
         jax: str | None = None) -> Callable[[Callable[..., Any]], Loss]:
    """Turn a definition ``defn(need, *arrays, **options) -> (value, pullback)`` into the
    public loss; ``wrt`` names the array arguments it has a closed-form gradient for, and
    ``torch`` optionally a ``"module:function"`` fast path with the public signature that
    serves torch tensors (a registered delegation; it must agree with the definition, and
    returns ``NotImplemented`` for calls it leaves to the definition), and ``numpy`` a
    ``"module:function"`` definition for the common NumPy case (same contract as the
    definition, ``NotImplemented`` for the rest), and ``jax`` one with the public signature
    that serves JAX arrays (``NotImplemented`` for what it leaves to the definition).

    The public function keeps the definition reachable as ``fn.with_pullback(need, *arrays,
    **options)`` for losses built on top of another one."""

    def make(defn: Callable[..., Any]) -> Loss:
        spec = _Spec(defn, wrt, torch, numpy, jax)

        @functools.wraps(defn)
        def public(*args: Any, **kwargs: Any) -> Any:
            torch_mod = sys.modules.get("torch")
            first = args[0] if args else kwargs.get(spec.arrays[0])
            if torch_mod is not None and isinstance(first, torch_mod.Tensor):
                impl = spec._torch_fn or spec.torch_impl()
                # one C call decides the common case (no autocast region at all); at small
                # shapes a loss's whole native fwd+bwd is ~60 us, so microseconds here count
                if ((spec.autocast_query or spec.find_autocast_query(torch_mod))()
                        and not getattr(impl, "handles_autocast", False)):
                    from . import _torch_autograd

                    out = _torch_autograd.under_autocast(public, first, args, kwargs)
                    if out is not NotImplemented:
                        return out
                if impl is not None:
                    # a registered torch path serves torch tensors straight from the call (it
                    # answers NotImplemented for what it leaves to the definition)
                    out = impl(*args, **kwargs)
                    if out is not NotImplemented:
                        return out
            arrays, options = spec.split(args, kwargs)
            return _evaluate(spec, arrays, options)

        public.__signature__ = spec.signature  # type: ignore[attr-defined]
        del public.__wrapped__  # help() and inspect show the public signature, without need
        public.with_pullback = defn  # type: ignore[attr-defined]
        _SPECS[public] = spec
        return cast(Loss, public)

    return make


def _spec_of(fn: Callable[..., Any]) -> _Spec:
    try:
        return _SPECS[fn]
    except (KeyError, TypeError):
        import crossent

        crossent.load_all()  # the list below names every loss, imported or not
        name = getattr(fn, "__name__", repr(fn))
        known = sorted(f.__name__ for f in _SPECS)
        raise ValueError(f"loss_fn {name!r} has no closed-form gradient in crossent; ones "
                         f"that do: {', '.join(known)}") from None


def has_closed_form(fn: Callable[..., Any]) -> bool:
    return fn in _SPECS


def closed_form_args(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The array arguments ``fn`` has a closed-form gradient for, in signature order."""
    return _spec_of(fn).wrt


def _evaluate(spec: _Spec, arrays: list[Any], options: dict[str, Any]) -> Any:
    if any(array_api_compat.is_torch_array(a) for a in arrays):
        from . import _torch_autograd

        return _torch_autograd.apply(spec, arrays, options)
    if any(array_api_compat.is_jax_array(a) for a in arrays):
        fast = spec._jax_fn or spec.jax_impl()
        if fast is not None:
            out = fast(*arrays, **options)
            if out is not NotImplemented:
                return out
        from . import _jax_autodiff

        return _jax_autodiff.apply(spec, arrays, options)
    return spec.run((), arrays, options)[0]


def default_argnum(loss_fn: Callable[..., Any]) -> int:
    """Position of the argument :func:`value_and_grad` differentiates by default: the first
    array argument with a closed-form gradient (0 for a loss that has none)."""
    spec = _spec_of(loss_fn)
    return next((i for i, n in enumerate(spec.arrays) if n in spec.wrt), 0)


def value_and_grad(loss_fn: Callable[..., Any], argnums: int | Sequence[int] | None = None
                   ) -> Callable[..., tuple[Any, Any]]:
    """``f(*args, **kw) -> (loss, gradient)`` from the loss's closed form, on any backend.

    The gradient is that of the loss (for ``reduction="none"``, of the sum of its entries)
    with respect to the argument(s) ``argnums``, computed from the same intermediates as the
    value, in the array's own namespace: NumPy needs no autodiff framework.

    Args:
        loss_fn: a crossent loss, e.g. ``crossent.softmax_cross_entropy``.
        argnums: position(s) of the array argument(s) to differentiate (0: the prediction;
            1: e.g. probability targets, or ``q`` of a divergence). None: the first array
            argument with a closed form, the prediction (0) for every loss but those that
            take the labels first, as scikit-learn's ``log_loss(y_true, y_prob)``.

    Returns:
        A function with the loss's signature returning ``(loss, gradient)``, or
        ``(loss, (gradient, ...))`` when ``argnums`` is a sequence; each gradient has the
        shape and dtype of its argument.

    Raises:
        ValueError: ``loss_fn`` has no closed-form gradient, or none for an ``argnums``
            argument (or that argument is not floating).

    Example:
        >>> import numpy as np, crossent
        >>> loss, g = crossent.value_and_grad(crossent.softmax_cross_entropy)(
        ...     np.array([[0.0, 0.0]]), np.array([0]))
        >>> float(loss), g.tolist()
        (0.6931471805599453, [[-0.5, 0.5]])
    """
    spec = _spec_of(loss_fn)
    if argnums is None:
        argnums = default_argnum(loss_fn)
    many = not isinstance(argnums, int)
    nums: tuple[int, ...] = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for i in nums:
        if not isinstance(i, int) or not 0 <= i < len(spec.arrays):
            raise ValueError(f"argnums={argnums!r}: {loss_fn.__name__} takes the arrays "
                             f"{spec.arrays}")
        if spec.arrays[i] not in spec.wrt:
            raise ValueError(f"{loss_fn.__name__} has no closed-form gradient w.r.t. "
                             f"{spec.arrays[i]!r}; it has one w.r.t. {spec.wrt}")
    names = tuple(spec.arrays[i] for i in nums)
    # the differentiated arguments' positions, in signature order (the order of the checks)
    checked = sorted(set(nums))

    def vag(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        arrays, options = spec.split(args, kwargs)
        for i in checked:
            if not _is_float_array(arrays[i]):
                raise ValueError(f"{spec.arrays[i]} must be a floating-point array to be "
                                 f"differentiated, got {type(arrays[i]).__name__}")
        value, pullback = spec.run(names, arrays, options)
        assert pullback is not None  # a definition asked for gradients returns a pullback
        grads = pullback(None)
        if not many:
            return value, grads[names[0]]
        return value, tuple(grads[n] for n in names)

    vag.__name__ = f"value_and_grad_{loss_fn.__name__}"
    vag.__doc__ = f"Value and closed-form gradient of {loss_fn.__name__}."
    return vag


def grad(loss_fn: Callable[..., Any], argnums: int | Sequence[int] | None = None
         ) -> Callable[..., Any]:
    """Like :func:`value_and_grad` but returns only the gradient.

    Example:
        >>> import numpy as np, crossent
        >>> crossent.grad(crossent.sigmoid_cross_entropy)(
        ...     np.array([0.0]), np.array([1.0]), reduction="sum").tolist()
        [-0.5]
    """
    vag = value_and_grad(loss_fn, argnums)

    def gradient(*args: Any, **kwargs: Any) -> Any:
        return vag(*args, **kwargs)[1]

    gradient.__name__ = f"grad_{loss_fn.__name__}"
    gradient.__doc__ = f"Closed-form gradient of {loss_fn.__name__}."
    return gradient


def scaled_pullback(xp: Any, grads: dict[str, Array], expand: Callable[[Array], Array]
                    ) -> Pullback:
    """The pullback of a loss whose entries do not interact: each gradient (of the sum of
    the entries, in the argument's dtype) times the cotangent, broadcast by ``expand`` from
    the value's shape to the argument's (e.g. a new class axis)."""

    def pullback(cot: Array | None) -> dict[str, Array]:
        if cot is None:
            return dict(grads)
        c = expand(cot) if getattr(cot, "ndim", 0) else cot
        return {name: g * (xp.astype(c, g.dtype) if c.dtype != g.dtype else c)
                for name, g in grads.items()}

    return pullback
