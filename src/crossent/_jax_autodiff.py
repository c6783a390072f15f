"""The JAX side of :mod:`crossent.gradients`: a loss on JAX arrays is a ``jax.custom_jvp``
whose tangent map is the transpose of the definition's closed-form pullback.

Reverse mode transposes that linear map back into the pullback, evaluated on the forward's
own intermediates; higher derivatives differentiate the closed form itself (written in
``jax.numpy`` ops), and ``jit`` / ``vmap`` trace through as usual. Floating inputs the
definition has no closed form for, array-valued options included (a traced ``gamma`` one
differentiates, say), get their tangent from ``jax.jvp`` of the value code.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero


def _is_float(a: Any) -> bool:
    """A floating JAX or NumPy array (anything else, a torch scalar option say, is not an
    input JAX can differentiate)."""
    if not isinstance(a, (jax.Array, np.ndarray)):
        return False
    return bool(jnp.issubdtype(a.dtype, jnp.floating))


def apply(spec: Any, arrays: list[Any], options: dict[str, Any]) -> Any:
    # slots: (name, where) of every floating input; where is an index into arrays or the
    # option's keyword
    # JAX arrays that are not floating (traced labels) are slots too, so the custom_jvp does
    # not close over a tracer: their tangents arrive as symbolic zeros and are skipped
    slots: list[tuple[str, int | str]] = [
        (spec.arrays[i], i) for i, a in enumerate(arrays)
        if _is_float(a) or isinstance(a, jax.Array)]
    # so are array options of any dtype (a traced boolean where= mask, say)
    slots += [(k, k) for k, v in options.items() if isinstance(v, jax.Array)]
    if not slots:
        return spec.defn((), *arrays, **options)[0]

    def fill(values: tuple[Any, ...]) -> tuple[list[Any], dict[str, Any]]:
        full, opts = list(arrays), dict(options)
        for (_, where), v in zip(slots, values, strict=True):
            v = jnp.asarray(v)  # a NumPy primal under jvp: compute in JAX
            if isinstance(where, int):
                full[where] = v
            else:
                opts[where] = v
        return full, opts

    def value_of(values: tuple[Any, ...]) -> Any:
        full, opts = fill(values)
        return spec.defn((), *full, **opts)[0]

    @jax.custom_jvp
    def f(*values: Any) -> Any:
        return value_of(values)

    def rule(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
        live = [k for k, t in enumerate(tangents) if not isinstance(t, SymbolicZero)]
        closed = [k for k in live if isinstance(slots[k][1], int) and slots[k][0] in spec.wrt]
        need = tuple(slots[k][0] for k in closed)
        full, opts = fill(primals)
        value, pullback = spec.defn(need, *full, **opts)
        t_out = jnp.zeros_like(value)
        if need:
            def linear(c: Any) -> tuple[Any, ...]:
                grads = pullback(c)
                return tuple(grads[n] for n in need)

            t_closed = tuple(tangents[k] for k in closed)
            t_out = t_out + jax.linear_transpose(linear, value)(t_closed)[0]
        rest = [k for k in live if k not in closed]
        if rest:
            def value_rest(*vs: Any) -> Any:
                values = list(primals)
                for k, v in zip(rest, vs, strict=True):
                    values[k] = v
                return value_of(tuple(values))

            _, t_rest = jax.jvp(value_rest, tuple(jnp.asarray(primals[k]) for k in rest),
                                tuple(tangents[k] for k in rest))
            t_out = t_out + t_rest
        return value, t_out

    f.defjvp(rule, symbolic_zeros=True)
    return f(*(arrays[w] if isinstance(w, int) else options[w] for _, w in slots))
