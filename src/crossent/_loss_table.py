"""The names table: every loss crossent has, its math, and its names elsewhere.

The loss records are data, in ``losses.toml`` beside this module (one ``[[loss]]`` table per
loss; :mod:`crossent.names` turns them into :class:`~crossent.names.LossSpec` objects and does
the lookup). Besides text, each record has structured fields the command line reads instead of
parsing prose: ``task`` (``"multiclass"`` for logits + integer labels, ``"multilabel"`` for one
independent score per class, absent for the rest), ``sample`` (the kind of example inputs, a
key of :data:`crossent._samples.MAKERS`) and ``differentiable`` (false for a
piecewise-constant loss such as the 0-1 error). This module holds the tables that are not per
loss: the frameworks and families in display order, the module prefixes of each framework's
names, and each loss's PyTorch entry points.
"""

from __future__ import annotations

import sys
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

FRAMEWORKS: tuple[str, ...] = (
    "common",
    "PyTorch",
    "TensorFlow",
    "Keras",
    "Caffe",
    "Optax",
    "torchvision",
    "MXNet/Gluon",
    "PaddlePaddle",
    "scikit-learn",
    "SciPy",
    "pytorch-metric-learning",
    "timm",
    "Liger-Kernel",
    "MMDetection",
    "TensorFlow Addons",
)

#: Families in catalog order.
FAMILIES: tuple[str, ...] = (
    "softmax",
    "sigmoid",
    "focal",
    "information",
    "distillation",
    "extended",
    "margin",
    "ranking",
    "counter-example",
)

# The fields of a [[loss]] record in losses.toml, and the defaults of the optional ones.
_REQUIRED = ("name", "module", "family", "inputs", "formula", "gradient", "sample")
_OPTIONAL: dict[str, Any] = {"task": None, "differentiable": True, "aliases": {}, "notes": [],
                             "references": []}


def _records() -> list[dict[str, Any]]:
    """The records of ``losses.toml`` (shipped in the package), checked field by field."""
    text = resources.files("crossent").joinpath("losses.toml").read_text(encoding="utf-8")
    out = []
    for i, record in enumerate(tomllib.loads(text)["loss"]):
        name = record.get("name", f"record {i}")
        missing = [k for k in _REQUIRED if k not in record]
        unknown = sorted(set(record) - set(_REQUIRED) - set(_OPTIONAL))
        if missing or unknown:
            raise RuntimeError(f"losses.toml: {name}: missing {missing}, unknown {unknown}")
        entry = {**_OPTIONAL, **record}
        entry["aliases"] = {fw: tuple(names) for fw, names in entry["aliases"].items()}
        entry["notes"], entry["references"] = tuple(entry["notes"]), tuple(entry["references"])
        out.append(entry)
    return out


#: One dict per loss, in catalog order (the fields of :data:`_REQUIRED` and :data:`_OPTIONAL`).
ENTRIES: list[dict[str, Any]] = _records()


# Module prefixes (lower case) -> the frameworks whose names follow them. Longest first.
PREFIXES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("PyTorch",): ("torch.nn.functional.", "torch.nn.modules.loss.", "torch.nn.", "torch.",
                   "nn.functional.", "nn.", "f.",
                   # crossent's own PyTorch layer follows PyTorch's names
                   "crossent.torch.nn.", "crossent.torch."),
    ("TensorFlow",): ("tf.nn.", "tf.compat.v1.nn.", "tf.compat.v1.losses.", "tf.compat.v1.",
                      "tensorflow.nn.", "tensorflow.compat.v1.losses.",
                      "tensorflow.compat.v1."),
    ("TensorFlow", "Keras"): ("tf.losses.", "tf.", "tensorflow.losses.", "tensorflow."),
    ("Keras",): ("tf.keras.losses.", "tf.keras.", "tensorflow.keras.losses.",
                 "tensorflow.keras.", "keras.losses.", "keras."),
    ("Caffe",): ("caffe.layers.", "caffe.", "l."),
    ("Optax",): ("optax.losses.", "optax."),
    ("torchvision",): ("torchvision.ops.focal_loss.", "torchvision.ops.", "torchvision."),
    ("MXNet/Gluon",): ("mxnet.gluon.loss.", "mx.gluon.loss.", "gluon.loss.", "mxnet.gluon.",
                       "mx.gluon.", "gluon.", "mxnet.", "mx."),
    ("PaddlePaddle",): ("paddle.nn.functional.", "paddle.nn.", "paddle.fluid.layers.",
                        "fluid.layers.", "paddle."),
    ("scikit-learn",): ("sklearn.metrics.", "sklearn."),
    ("SciPy",): ("scipy.stats.", "scipy.special.", "scipy.spatial.distance.", "scipy."),
    ("pytorch-metric-learning",): ("pytorch_metric_learning.losses.",
                                   "pytorch_metric_learning.", "pml.losses.", "pml."),
    ("timm",): ("timm.loss.", "timm."),
    ("Liger-Kernel",): ("liger_kernel.transformers.functional.",
                        "liger_kernel.transformers.", "liger_kernel."),
    ("MMDetection",): ("mmdet.models.losses.", "mmdet.models.", "mmdet."),
    ("TensorFlow Addons",): ("tensorflow_addons.losses.", "tfa.losses.", "tfa."),
    ("crossent",): ("crossent.",),
}

# Each loss's PyTorch entry points besides the generic function (which runs on torch tensors
# too): fused functions, drop-in Modules, chunked and distributed forms. ``crossent explain``
# prints them as usage lines (an option after a space goes into the call); a test checks that
# every public name of crossent.torch, crossent.torch.nn and crossent.torch.distributed is
# listed under some loss.


def _margin_linear(margin_type: str) -> tuple[str, ...]:
    """The chunked / class-parallel margin softmax entry points, with the option that selects
    ``margin_type`` (after a space: the usage line passes it to the call or constructor)."""
    opt = f' margin_type="{margin_type}"'
    return ("crossent.torch.margin_linear_cross_entropy" + opt,
            "crossent.torch.nn.MarginLinearCrossEntropyLoss" + opt,
            "crossent.torch.distributed.class_parallel_margin_cross_entropy" + opt)


TORCH_ENTRY_POINTS: dict[str, tuple[str, ...]] = {
    "softmax_cross_entropy": (
        "crossent.torch.cross_entropy", "crossent.torch.nn.CrossEntropyLoss",
        "crossent.torch.nn.NLLLoss", "crossent.torch.linear_cross_entropy",
        "crossent.torch.nn.LinearCrossEntropyLoss",
        "crossent.torch.distributed.vocab_parallel_cross_entropy",
        "crossent.torch.distributed.vocab_parallel_linear_cross_entropy",
        "crossent.integrations.transformers.patch",
        "crossent.integrations.transformers.causal_lm_loss"),
    "sigmoid_cross_entropy": ("crossent.torch.nn.BCEWithLogitsLoss",
                              "crossent.torch.nn.SigmoidCrossEntropyLoss"),
    "binary_cross_entropy": ("crossent.torch.nn.BCELoss",),
    "sigmoid_focal_loss": ("crossent.torch.nn.SigmoidFocalLoss", "crossent.torch.nn.FocalLoss"),
    "softmax_focal_loss": ("crossent.torch.nn.SoftmaxFocalLoss", "crossent.torch.nn.FocalLoss"),
    "kl_divergence": ("crossent.torch.nn.KLDivLoss",),
    "distillation_loss": ("crossent.torch.linear_distillation_loss",),
    "mean_squared_error": ("crossent.torch.nn.MSELoss",),
    "multi_margin_loss": ("crossent.torch.nn.MultiMarginLoss",),
    "triplet_margin_loss": ("crossent.torch.nn.TripletMarginLoss",),
    "margin_ranking_loss": ("crossent.torch.nn.MarginRankingLoss",),
    "cosine_embedding_loss": ("crossent.torch.nn.CosineEmbeddingLoss",),
    "arcface_loss": ("crossent.torch.nn.ArcFaceHead", *_margin_linear("arcface")),
    "cosface_loss": ("crossent.torch.nn.CosFaceHead", *_margin_linear("cosface")),
    "sphereface_loss": ("crossent.torch.nn.SphereFaceHead",
                        *_margin_linear("sphereface")),
    "large_margin_softmax_loss": ("crossent.torch.nn.LargeMarginSoftmaxHead",
                                  *_margin_linear("lsoftmax")),
}

# Entry points used otherwise than ``loss = f(required args)``: their usage line as written
# (also printed without importing their optional dependency).
USAGE_CALLS: dict[str, str] = {
    "crossent.torch.linear_cross_entropy":
        "loss = linear_cross_entropy(hidden, lm_head.weight, target)  # no N x V logits; "
        "shift=True for causal-LM labels",
    "crossent.integrations.transformers.patch":
        "model = patch(model)  # a transformers *ForCausalLM; labels= then trains chunked",
    "crossent.integrations.transformers.causal_lm_loss":
        "model.loss_function = causal_lm_loss",
}
