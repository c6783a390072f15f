"""Move NumPy test data to each array-API backend and back."""

from __future__ import annotations

import numpy as np

BACKENDS = ("numpy", "torch", "jax", "array_api_strict")


def to_backend(name: str, x):
    if x is None:
        return None
    x = np.asarray(x)
    if name == "numpy":
        return x
    if name == "torch":
        import torch

        return torch.from_numpy(x.copy())
    if name == "jax":
        import jax.numpy as jnp

        return jnp.asarray(x)
    if name == "array_api_strict":
        import array_api_strict as xps

        return xps.asarray(x)
    raise ValueError(name)


def to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        return (x.float() if str(x.dtype) == "torch.bfloat16" else x).numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError):
        import array_api_strict as xps

        return np.asarray(xps.asarray(x)._array)


def finite_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar function of a float64 array."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp_, xm = x.copy(), x.copy()
        xp_[i] += h
        xm[i] -= h
        g[i] = (float(f(xp_)) - float(f(xm))) / (2 * h)
    return g


def half_inputs(backend: str, dtype: str, x32: np.ndarray):
    """``x32`` in half precision on ``backend``, and the same values upcast to a float32
    NumPy array (the reference a half-precision loss must match after fp32 accumulation)."""
    if backend == "torch":
        import torch

        xh = torch.from_numpy(x32).to(getattr(torch, dtype))
        return xh, xh.float().numpy()
    if backend == "jax":
        import jax.numpy as jnp

        xh = jnp.asarray(x32, dtype=getattr(jnp, dtype))
        return xh, np.asarray(xh.astype(jnp.float32))
    xh = x32.astype(np.float16)
    return xh, xh.astype(np.float32)
