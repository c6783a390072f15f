"""crossent: the cross-entropy family of losses, defined once on the array API.

Every loss runs on NumPy, PyTorch, JAX and any array-API library, has a closed-form gradient
(:func:`value_and_grad`), and is reachable by any framework's name (:func:`get`).

The package imports its loss modules on first use (PEP 562): ``import crossent`` and
``import crossent.names`` (``crossent list`` / ``explain``) load no loss module, and
``crossent.softmax_cross_entropy`` imports :mod:`crossent.classification` when first read.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Each module's ``__all__`` is its public API and the package re-exports exactly that (a test
# holds this table to the modules).
_EXPORTS: dict[str, tuple[str, ...]] = {
    "activations": ("sigmoid", "log_sigmoid", "softmax", "log_softmax", "logsumexp",
                    "one_hot", "smooth_labels"),
    "classification": ("softmax_cross_entropy", "sigmoid_cross_entropy",
                       "binary_cross_entropy", "mean_squared_error", "classification_error"),
    "distillation": ("distillation_loss",),
    "extended": ("poly1_cross_entropy", "asymmetric_loss", "sparsemax", "sparsemax_loss",
                 "binary_sparsemax_loss", "generalized_cross_entropy",
                 "class_balanced_weights"),
    "focal": ("sigmoid_focal_loss", "softmax_focal_loss"),
    "hinge": ("hinge_loss", "multi_margin_loss", "multiclass_hinge_loss",
              "categorical_hinge_loss", "perceptron_loss", "multiclass_perceptron_loss"),
    "information": ("entropy", "cross_entropy", "kl_divergence", "generalized_kl_divergence",
                    "js_divergence"),
    "margin_softmax": ("large_margin_softmax_loss", "sphereface_loss", "cosface_loss",
                       "arcface_loss", "soft_margin_softmax_loss"),
    "ranking": ("margin_ranking_loss", "contrastive_loss", "contrastive_loss_from_distances",
                "triplet_margin_loss", "ntxent_loss", "cosine_embedding_loss"),
    "scoring": ("log_loss",),
    "gradients": ("grad", "value_and_grad"),
    "names": ("LossSpec", "catalog", "get"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)

LOSS_MODULES = tuple(m for m in _EXPORTS if m not in ("activations", "gradients", "names"))


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        if name in _EXPORTS:  # a submodule not imported yet
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later reads skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_all() -> None:
    """Import every loss module (what lists of all losses need)."""
    for module in LOSS_MODULES:
        importlib.import_module(f"{__name__}.{module}")
