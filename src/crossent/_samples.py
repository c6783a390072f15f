"""Example inputs for every loss, by the kind of arguments it takes.

Used by ``crossent gradcheck`` (random points at which to compare the closed-form gradient
with finite differences) and ``crossent plot`` (the loss as a function of the probability of
the true class). The makers are keyed by the kind of inputs; which kind a loss takes is a
field of its entry in the names table, so a new loss needs no line here unless it takes a new
kind of input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Sample = tuple[tuple[Any, ...], dict[str, Any]]  # positional and keyword arguments of a call
Maker = Callable[[np.random.Generator], Sample]


def _logits_labels(rng: np.random.Generator) -> Sample:
    return (rng.normal(scale=2.0, size=(4, 5)), rng.integers(0, 5, size=4)), {}


def _logits_binary(rng: np.random.Generator) -> Sample:
    return (rng.normal(scale=2.0, size=(4, 3)), rng.integers(0, 2, size=(4, 3)).astype(float)), {}


def _logits_soft(rng: np.random.Generator) -> Sample:
    return (rng.normal(scale=2.0, size=(4, 3)), rng.uniform(size=(4, 3))), {}


def _probs_binary(rng: np.random.Generator) -> Sample:
    return (rng.uniform(0.05, 0.95, size=(6,)), rng.uniform(size=(6,))), {}


def _two_dists(rng: np.random.Generator) -> Sample:
    return (rng.dirichlet(np.ones(4), size=3), rng.dirichlet(np.ones(4), size=3)), {}


def _one_dist(rng: np.random.Generator) -> Sample:
    return (rng.dirichlet(np.ones(4), size=3),), {}


def _two_logits(rng: np.random.Generator) -> Sample:
    return (rng.normal(size=(3, 5)), rng.normal(size=(3, 5))), {"temperature": 2.0}


def _probs_labels(rng: np.random.Generator) -> Sample:
    return (rng.dirichlet(np.ones(4), size=3), rng.integers(0, 4, size=3)), {}


def _labels_probs(rng: np.random.Generator) -> Sample:
    # scikit-learn's argument order; labels= names every class a short y_true may miss
    return (rng.integers(0, 4, size=3), rng.dirichlet(np.ones(4), size=3)), {
        "labels": [0, 1, 2, 3]}


def _scores_pm1(rng: np.random.Generator) -> Sample:
    return (rng.normal(size=(6,)), rng.choice([-1.0, 1.0], size=6)), {}


def _embeddings_weight_labels(rng: np.random.Generator) -> Sample:
    return (rng.normal(size=(4, 6)), rng.normal(size=(5, 6)), rng.integers(0, 5, size=4)), {}


def _pair_ranking(rng: np.random.Generator) -> Sample:
    return (rng.normal(size=(6,)), rng.normal(size=(6,)), rng.choice([-1.0, 1.0], size=6)), {}


def _pairs_embeddings(rng: np.random.Generator) -> Sample:
    return (rng.normal(size=(5, 4)), rng.normal(size=(5, 4)),
            rng.integers(0, 2, size=5).astype(float)), {}


def _triplets(rng: np.random.Generator) -> Sample:
    return (rng.normal(size=(5, 4)), rng.normal(size=(5, 4)), rng.normal(size=(5, 4))), {}


def _embeddings_labels(rng: np.random.Generator) -> Sample:
    return (rng.normal(size=(6, 4)), np.array([0, 0, 1, 1, 2, 2])), {}


def _cos_pairs(rng: np.random.Generator) -> Sample:
    return (rng.normal(size=(5, 4)), rng.normal(size=(5, 4)), rng.choice([-1.0, 1.0], size=5)), {}


# kind -> maker; each loss names its kind in the names table (``LossSpec.sample``)
MAKERS: dict[str, Maker] = {
    name.lstrip("_"): fn for name, fn in list(globals().items())
    if name.startswith("_") and callable(fn) and getattr(fn, "__module__", None) == __name__
}


def kind_of(name: str) -> str:
    """The sample kind of loss ``name`` (any name the table knows), or ``name`` itself when it
    is already a kind."""
    if name in MAKERS:
        return name
    from . import names

    try:
        return names.get(name).sample
    except KeyError:
        raise KeyError(f"no example inputs for {name!r}") from None


def sample(name: str, seed: int = 0) -> Sample:
    """Positional and keyword arguments for one call of loss ``name`` (or of a sample kind)."""
    return MAKERS[kind_of(name)](np.random.default_rng(seed))


def true_class_curve(name: str, fn: Callable[..., Any], pt: np.ndarray,
                     options: dict[str, Any]) -> tuple[np.ndarray, str] | None:
    """The loss at each probability ``pt`` of the true class, and what the x axis means.

    Built for a two-class problem whose true class has probability ``pt``; None when the loss
    does not score a class prediction (ranking, margin heads).
    """
    try:
        kind = MAKERS[kind_of(name)]
    except KeyError:
        return None
    two = np.stack([pt, 1 - pt], axis=-1)
    if kind in (_logits_labels,):
        return np.asarray(fn(np.log(two), np.zeros(pt.size, dtype=np.int64), reduction="none",
                             **options)), "p_t = softmax(s)[true class]"
    if kind in (_logits_binary, _logits_soft):
        x = np.log(pt) - np.log1p(-pt)
        return np.asarray(fn(x, np.ones_like(pt), reduction="none", **options)), \
            "p_t = sigmoid(s)"
    if kind is _probs_binary:
        return np.asarray(fn(pt, np.ones_like(pt), reduction="none", **options)), "p_t"
    if kind is _two_dists:
        target = np.stack([np.ones_like(pt), np.zeros_like(pt)], axis=-1)
        return np.asarray(fn(target, two, reduction="none", **options)), "q(true class)"
    if kind is _probs_labels and name != "classification_error":
        return np.asarray(fn(two, np.zeros(pt.size, dtype=np.int64), reduction="none",
                             **options)), "p_t"
    return None
