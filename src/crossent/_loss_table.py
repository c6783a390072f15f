"""The names table, as data: every loss crossent has, its math, and its names elsewhere.

One :func:`_loss` record per loss (:mod:`crossent.names` turns them into
:class:`~crossent.names.LossSpec` objects and does the lookup). Besides text, each record has
structured fields the command line reads instead of parsing prose: ``task`` (``"multiclass"``
for logits + integer labels, ``"multilabel"`` for one independent score per class, None for the
rest), ``sample`` (the kind of example inputs, a key of :data:`crossent._samples.MAKERS`) and
``differentiable`` (False for a piecewise-constant loss such as the 0-1 error).
"""

from __future__ import annotations

from typing import Any

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

# Where a function is looked for when its declared module does not have it (only on that
# failure path): the loss modules of the package, in layout order.
ENTRIES: list[dict[str, Any]] = []


def _loss(name: str, module: str, family: str, inputs: str, formula: str, gradient: str,
          aliases: dict[str, tuple[str, ...]], notes: tuple[str, ...] = (),
          references: tuple[str, ...] = (), *, task: str | None, sample: str,
          differentiable: bool = True) -> None:
    ENTRIES.append({"name": name, "module": module, "family": family, "inputs": inputs,
                    "formula": formula, "gradient": gradient, "aliases": aliases,
                    "notes": tuple(notes), "references": tuple(references), "task": task,
                    "sample": sample, "differentiable": differentiable})


# the four articles the family's names and worked examples come from, cited by title
_ART_NAMES = ("理解Cross-Entropy Loss, Softmax Loss, Focal Loss等名词 (blog article, 2020-04-24: "
              "the names of the family)")
_ART_LOSSES = ('"Loss functions" (notes, 2023-2025: entropy, KL, BCE, CCE, focal, ranking '
               "losses, mmdetection's FocalLoss)")
_ART_IMAGE = ("图像分类任务中的损失函数 (article: sigmoid / softmax cross-entropy, the TensorFlow "
              "verification table)")
_ART_WHY = ("Cross Entropy损失函数 (article: 0-1 error and MSE vs cross-entropy, the "
            "three-animal example of two models)")
_TORCH = "https://pytorch.org/docs/stable/nn.html#loss-functions"
_TF_NN = "https://www.tensorflow.org/api_docs/python/tf/nn"
_TF_V1 = "https://www.tensorflow.org/api_docs/python/tf/compat/v1/losses"
_KERAS_P = "https://keras.io/api/losses/probabilistic_losses/"
_KERAS_H = "https://keras.io/api/losses/hinge_losses/"
_CAFFE = "https://caffe.berkeleyvision.org/tutorial/layers.html"
_OPTAX = "https://optax.readthedocs.io/en/latest/api/losses.html"
_GLUON = "https://mxnet.apache.org/versions/1.9.1/api/python/docs/api/gluon/loss/index.html"
_PADDLE = "https://www.paddlepaddle.org.cn/documentation/docs/en/api/paddle/nn/Overview_en.html"
_PML = "https://kevinmusgrave.github.io/pytorch-metric-learning/losses/"

# --- softmax --------------------------------------------------------------------------------

_loss(
    "softmax_cross_entropy", "classification", "softmax",
    "logits (classes along axis) + integer labels or class probabilities",
    "l = -Σ_c w_c t_c log softmax(s)_c; for an integer label y: l = -w_y log(e^{s_y} / Σ_j "
    "e^{s_j}); label smoothing ε: t = (1 - ε) onehot(y) + ε / C",
    "∂l/∂s = softmax(s) - t (p_j - 1 at the true class, p_j elsewhere); with "
    "weights / smoothing: p · Σ_c w_c t_c - w ⊙ t; times 1 / Σ_i w_{y_i} for 'mean'",
    {
        "common": ("Softmax Loss", "Softmax Cross-Entropy Loss", "Categorical Cross-Entropy",
                   "Categorical Cross-Entropy Loss", "CCE", "Softmax CE",
                   "Cross-Entropy Loss", "CE Loss", "Negative Log-Likelihood", "NLL",
                   "Multinomial Logistic Regression Loss", "Label Smoothing Loss"),
        "PyTorch": ("CrossEntropyLoss", "cross_entropy", "NLLLoss", "nll_loss"),
        "TensorFlow": ("softmax_cross_entropy_with_logits",
                       "softmax_cross_entropy_with_logits_v2",
                       "sparse_softmax_cross_entropy_with_logits", "softmax_cross_entropy",
                       "sparse_softmax_cross_entropy"),
        "Keras": ("CategoricalCrossentropy", "categorical_crossentropy",
                  "SparseCategoricalCrossentropy", "sparse_categorical_crossentropy"),
        "Caffe": ("SoftmaxWithLoss", "SoftmaxWithLossLayer"),
        "Optax": ("softmax_cross_entropy", "softmax_cross_entropy_with_integer_labels",
                  "safe_softmax_cross_entropy"),
        "MXNet/Gluon": ("SoftmaxCrossEntropyLoss", "SoftmaxCELoss"),
        "PaddlePaddle": ("CrossEntropyLoss", "cross_entropy", "softmax_with_cross_entropy",
                         "NLLLoss", "nll_loss"),
        "timm": ("SoftTargetCrossEntropy", "LabelSmoothingCrossEntropy"),
        "Liger-Kernel": ("LigerCrossEntropyLoss", "liger_cross_entropy"),
    },
    (
        "In the usual naming, Categorical Cross-Entropy Loss, alias Softmax Loss, = Softmax + "
        "Cross-Entropy; Caffe SoftmaxWithLoss, PyTorch CrossEntropyLoss, TensorFlow "
        "softmax_cross_entropy. Mutually exclusive classes only (multi-label: "
        "sigmoid_cross_entropy).",
        "PyTorch CrossEntropyLoss / F.cross_entropy put the classes on dim 1 ((N, C, d1, ...)); "
        "crossent's generic API uses axis=-1, so pass axis=1 for PyTorch layouts (the "
        "crossent.torch.nn Modules use dim 1). Integer vs probability targets are chosen by "
        "dtype in both.",
        "When every target equals ignore_index, PyTorch's 'mean' is NaN (0/0); crossent returns "
        "0 with a zero gradient.",
        "PyTorch NLLLoss / F.nll_loss take LOG-PROBABILITIES, not logits: "
        "nll_loss(log_probs, y) == softmax_cross_entropy(log_probs, y), because log_softmax "
        "leaves normalised log-probabilities unchanged. On raw scores NLLLoss is just -s_y and "
        "differs.",
        "The bare name 'cross_entropy' resolves to crossent.cross_entropy(p, q) (H(p, q) on "
        "probabilities): crossent's own names win. Write 'F.cross_entropy', "
        "'torch.nn.functional.cross_entropy' or 'paddle.nn.functional.cross_entropy' for this "
        "function. 'Cross-Entropy Loss' is spelled like PyTorch's CrossEntropyLoss once case "
        "and punctuation are ignored, so it resolves here; the basic form on "
        "probabilities (-Σ t_i log s_i) is crossent.cross_entropy.",
        "TF tf.nn.softmax_cross_entropy_with_logits(labels=, logits=, axis=-1) takes "
        "PROBABILITY labels and returns one loss per example (crossent reduction='none'); "
        "tf.nn.sparse_softmax_cross_entropy_with_logits takes integer indices and has no "
        "ignore_index (an out-of-range label raises on CPU and gives NaN on GPU).",
        "tf.compat.v1.losses.softmax_cross_entropy(onehot_labels, logits, weights=1.0, "
        "label_smoothing=0): the same smoothing (1 - ε) t + ε / C, but its 'weights' are per "
        "example (crossent's weight is per class) and its default reduction "
        "SUM_BY_NONZERO_WEIGHTS divides by the number of non-zero weights.",
        "Keras categorical_crossentropy / CategoricalCrossentropy default from_logits=False: "
        "y_pred are PROBABILITIES, renormalised to sum 1 and clipped to [1e-7, 1 - 1e-7], which "
        "is crossent.cross_entropy(y_true, y_pred); pass from_logits=True for this function. "
        "axis=-1 as in crossent; argument order (y_true, y_pred) is the reverse of crossent's "
        "(logits, targets).",
        "Keras sparse_categorical_crossentropy: integer labels, ignore_class=None by default "
        "(crossent ignore_index=-100 by default).",
        "Caffe SoftmaxWithLoss takes raw scores (logits) with the classes on axis 1 and integer "
        "labels; its default normalization VALID divides by the non-ignored count, as crossent's "
        "'mean'. Caffe MultinomialLogisticLoss takes probabilities instead "
        "(-> crossent.cross_entropy).",
        "Optax softmax_cross_entropy(logits, labels) takes probability labels and "
        "softmax_cross_entropy_with_integer_labels integer ones; both return per-example losses "
        "(crossent reduction='none'), and neither has ignore_index, weights or smoothing "
        "(optax.smooth_labels is crossent.smooth_labels).",
        "MXNet Gluon SoftmaxCrossEntropyLoss(axis=-1, sparse_label=True, from_logits=False) "
        "takes logits; from_logits=True means pred are LOG-probabilities (not probabilities). "
        "It returns one loss per sample, averaged over the non-batch axes.",
        "PaddlePaddle CrossEntropyLoss / F.cross_entropy use axis=-1 by default, a soft_label "
        "flag instead of the targets' dtype, and use_softmax=False for probability inputs; "
        "softmax_with_cross_entropy returns (N, 1) per-example losses.",
        "timm SoftTargetCrossEntropy is this with probability targets and 'mean'; timm "
        "LabelSmoothingCrossEntropy(smoothing=0.1) is label_smoothing=0.1 (crossent defaults "
        "to 0).",
        "Liger-Kernel LigerCrossEntropyLoss has PyTorch's defaults (ignore_index=-100, "
        "label_smoothing=0.0); its extras, z-loss (lse_square_scale) and logit soft-capping, are "
        "crossent.torch.cross_entropy(z_loss=, softcap=), the fused torch path this function "
        "takes for torch tensors. The fused linear + cross-entropy "
        "(LigerFusedLinearCrossEntropyLoss) takes hidden states and a weight: "
        "crossent.torch.linear_cross_entropy, not this table entry.",
    ),
    (
        "Bridle 1990, 'Probabilistic interpretation of feedforward classification network "
        "outputs'",
        "Goodfellow, Bengio & Courville, Deep Learning (2016), 6.2.2.3",
        "Szegedy et al. 2016, 'Rethinking the Inception Architecture' (label smoothing), "
        "arXiv:1512.00567",
        _ART_NAMES, _ART_IMAGE, _ART_WHY,
        "https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html",
        "https://www.tensorflow.org/api_docs/python/tf/nn/softmax_cross_entropy_with_logits",
        _KERAS_P, "https://caffe.berkeleyvision.org/tutorial/layers/softmaxwithloss.html",
        _OPTAX, _GLUON, _PADDLE,
    ),
    task="multiclass", sample="logits_labels",
)

# --- sigmoid --------------------------------------------------------------------------------

_loss(
    "sigmoid_cross_entropy", "classification", "sigmoid",
    "logits (any shape, one independent score per element) + targets in [0, 1]",
    "l = -[z log σ(x) + (1 - z) log(1 - σ(x))] = max(x, 0) - x z + log(1 + e^{-|x|}) "
    "(TensorFlow's stable form); with pos_weight p_w: p_w z softplus(-x) + (1 - z) softplus(x)",
    "∂l/∂x = σ(x) - z; with pos_weight: (1 - z) σ(x) - p_w z (1 - σ(x)); times the "
    "element weight",
    {
        "common": ("Sigmoid Cross-Entropy", "Sigmoid Cross-Entropy Loss", "Sigmoid CE",
                   "BCE with logits", "Binary Cross-Entropy with Logits",
                   "Multi-label Cross-Entropy", "One-vs-Rest Cross-Entropy"),
        "PyTorch": ("BCEWithLogitsLoss", "binary_cross_entropy_with_logits",
                    "MultiLabelSoftMarginLoss", "multilabel_soft_margin_loss",
                    "SoftMarginLoss", "soft_margin_loss"),
        "TensorFlow": ("sigmoid_cross_entropy_with_logits", "sigmoid_cross_entropy",
                       "weighted_cross_entropy_with_logits"),
        "Caffe": ("SigmoidCrossEntropyLoss", "SigmoidCrossEntropyLossLayer"),
        "Optax": ("sigmoid_binary_cross_entropy",),
        "MXNet/Gluon": ("SigmoidBinaryCrossEntropyLoss", "SigmoidBCELoss"),
        "PaddlePaddle": ("BCEWithLogitsLoss", "binary_cross_entropy_with_logits",
                         "sigmoid_cross_entropy_with_logits", "MultiLabelSoftMarginLoss",
                         "multi_label_soft_margin_loss", "SoftMarginLoss", "soft_margin_loss"),
    },
    (
        "In the usual naming, Binary Cross-Entropy, alias Sigmoid Cross-Entropy = Sigmoid + CE, "
        "for binary and multi-label tasks (each class an independent yes/no). On logits that is "
        "this function; the bare names 'Binary Cross-Entropy' / 'BCE' resolve to "
        "crossent.binary_cross_entropy, crossent's own name, which takes probabilities.",
        "PyTorch BCEWithLogitsLoss / binary_cross_entropy_with_logits take logits (this "
        "function); BCELoss / binary_cross_entropy take probabilities "
        "(-> crossent.binary_cross_entropy, less stable).",
        "PyTorch pos_weight broadcasts along the last (class) axis like crossent's; weight is a "
        "per-element rescaling; 'mean' divides by the number of elements in both.",
        "PyTorch MultiLabelSoftMarginLoss averages over the classes of each sample: with "
        "reduction='mean' it equals this function's 'mean' on (N, C); its 'none' gives (N,) "
        "per-sample means, crossent's gives per-element losses.",
        "PyTorch SoftMarginLoss is log(1 + e^{-y x}) with y in {-1, 1}: this function with "
        "z = (y + 1) / 2 ('mean' over elements in both).",
        "TF tf.nn.sigmoid_cross_entropy_with_logits(labels=, logits=) returns element-wise "
        "losses (crossent reduction='none'); tf.nn.weighted_cross_entropy_with_logits(labels, "
        "logits, pos_weight) is pos_weight here.",
        "tf.compat.v1.losses.sigmoid_cross_entropy smooths labels towards 1/2: "
        "z (1 - ε) + ε / 2, unlike softmax smoothing's ε / C; crossent has no smoothing option "
        "here (smooth the targets yourself; YOLOv3-style smoothing of one-hot labels with "
        "ε / K before "
        "calling tf.nn.sigmoid_cross_entropy_with_logits).",
        "Caffe SigmoidCrossEntropyLoss takes scores; it sums over all elements and divides by "
        "the batch size N (normalization BATCH_SIZE), where crossent's 'mean' divides by every "
        "element: use reduction='sum' / N.",
        "Optax sigmoid_binary_cross_entropy(logits, labels) returns element-wise losses.",
        "MXNet Gluon SigmoidBinaryCrossEntropyLoss(from_sigmoid=False) takes logits (this "
        "function), from_sigmoid=True probabilities (-> binary_cross_entropy); it has "
        "pos_weight and returns per-sample means over the non-batch axes. Gluon's LogisticLoss "
        "(signed ±1 labels, scores) is also this loss with z = (y + 1) / 2, but its name is not "
        "in the table: 'Logistic Loss' resolves to binary_cross_entropy (its usual sense, "
        "on probabilities).",
        "Keras has no separate name: BinaryCrossentropy(from_logits=True) is this function "
        "(its default from_logits=False is binary_cross_entropy).",
    ),
    (
        _ART_NAMES, _ART_LOSSES, _ART_IMAGE, _ART_WHY,
        "https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html",
        "https://www.tensorflow.org/api_docs/python/tf/nn/sigmoid_cross_entropy_with_logits",
        "https://caffe.berkeleyvision.org/tutorial/layers/sigmoidcrossentropyloss.html",
        _OPTAX, _GLUON, _PADDLE,
    ),
    task="multilabel", sample="logits_soft",
)

_loss(
    "binary_cross_entropy", "classification", "sigmoid",
    "probabilities in [0, 1] (not logits) + targets in [0, 1]",
    "l = -w [y log p + (1 - y) log(1 - p)], each log clamped at -100 (as PyTorch BCELoss)",
    "∂l/∂p = w (p - y) / (p (1 - p)) (denominator floored at 1e-12, as PyTorch)",
    {
        "common": ("Binary Cross-Entropy", "Binary Cross-Entropy Loss", "BCE", "BCE Loss",
                   "Logistic Loss", "Log Loss", "Binary Log Loss",
                   "Bernoulli Negative Log-Likelihood"),
        "PyTorch": ("BCELoss", "binary_cross_entropy"),
        "TensorFlow": ("log_loss",),
        "Keras": ("BinaryCrossentropy", "binary_crossentropy", "bce"),
        "PaddlePaddle": ("BCELoss", "binary_cross_entropy", "log_loss"),
    },
    (
        "In the usual naming, 'Logistic Loss' and 'Multinomial Logistic Loss' are aliases of "
        "the basic "
        "cross-entropy on probabilities ('without activation': Caffe MultinomialLogisticLoss, "
        "PyTorch BCELoss, TF log_loss). Its binary case is this function; the multi-class case "
        "is crossent.cross_entropy. On scores with y in {-1, 1}, the logistic loss "
        "log(1 + e^{-y s}) is sigmoid_cross_entropy with z = (y + 1) / 2.",
        "PyTorch BCELoss / F.binary_cross_entropy take PROBABILITIES (this function) and clamp "
        "each log at -100; BCEWithLogitsLoss takes logits (-> sigmoid_cross_entropy, exact "
        "where this one saturates).",
        "tf.compat.v1.losses.log_loss(labels, predictions, weights=1.0, epsilon=1e-7) adds "
        "epsilon inside the logs, -y log(p + ε) - (1 - y) log(1 - p + ε); crossent adds none.",
        "Keras binary_crossentropy / BinaryCrossentropy default from_logits=False: "
        "probabilities (this function), clipped to [1e-7, 1 - 1e-7]; they average over the last "
        "axis (crossent 'none' is per element), and label_smoothing moves targets towards 1/2: "
        "y (1 - ε) + ε / 2. With from_logits=True they are sigmoid_cross_entropy.",
        "PaddlePaddle log_loss(input, label, epsilon=1e-4) adds epsilon inside the logs and "
        "does not reduce.",
        "scikit-learn's log_loss(y_true, y_prob) is crossent.log_loss (its label handling, "
        "clipping and weighted mean); bare 'log_loss' resolves there too (crossent's own "
        "names win), 'tf.losses.log_loss' here.",
        "The usual naming also calls sigmoid + BCE on scores 'Binary Cross-Entropy'; on logits "
        "use "
        "sigmoid_cross_entropy.",
    ),
    (
        _ART_NAMES, _ART_LOSSES, _ART_WHY,
        "https://pytorch.org/docs/stable/generated/torch.nn.BCELoss.html",
        "https://www.tensorflow.org/api_docs/python/tf/compat/v1/losses/log_loss",
        _KERAS_P,
        "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.log_loss.html",
    ),
    task=None, sample="probs_binary",
)

# --- focal ----------------------------------------------------------------------------------

_loss(
    "sigmoid_focal_loss", "focal", "focal",
    "logits (any shape) + targets in [0, 1]",
    "FL = -α_t (1 - p_t)^γ [t log p + (1 - t) log(1 - p)], p = σ(x), "
    "p_t = p t + (1 - p)(1 - t), α_t = α t + (1 - α)(1 - t); "
    "FL(p_t) = -α_t (1 - p_t)^γ log p_t for 0/1 targets; γ = 0, α = None is sigmoid CE",
    "∂FL/∂x = α_t (1 - p_t)^γ [(p - t) + γ (1 - 2t) ce p (1 - p) / (1 - p_t)], ce the "
    "unmodulated sigmoid CE; for hard labels y = 2t - 1: α_t y (1 - p_t)^γ (γ p_t log p_t + "
    "p_t - 1) (Lin et al., appendix)",
    {
        "common": ("Focal Loss", "Sigmoid Focal Loss", "Binary Focal Loss", "RetinaNet Loss",
                   "FL"),
        "Keras": ("BinaryFocalCrossentropy", "binary_focal_crossentropy"),
        "Optax": ("sigmoid_focal_loss",),
        "torchvision": ("sigmoid_focal_loss",),
        "PaddlePaddle": ("sigmoid_focal_loss",),
        "MMDetection": ("FocalLoss", "py_sigmoid_focal_loss"),
        "TensorFlow Addons": ("SigmoidFocalCrossEntropy", "sigmoid_focal_crossentropy"),
    },
    (
        "Focal Loss uses the sigmoid, so it is a Binary Cross-Entropy with a factor "
        "(1 - s_i)^γ in front of each term; γ = 0 gives BCE. The RetinaNet form is "
        "-α_t (1 - p_t)^γ log p_t (Lin et al. 2017, arXiv:1708.02002, eq. (5)); mmdetection "
        "implements it as py_sigmoid_focal_loss (https://mmdetection.readthedocs.io).",
        "Defaults differ: crossent alpha=0.25, reduction='mean'; torchvision.ops."
        "sigmoid_focal_loss alpha=0.25 but reduction='none' (and alpha < 0 disables the "
        "weighting, crossent uses alpha=None); optax.sigmoid_focal_loss alpha=None (no "
        "weighting) and returns element-wise losses.",
        "Keras BinaryFocalCrossentropy defaults from_logits=False (probabilities, clipped to "
        "1e-7) and apply_class_balancing=False, so its alpha=0.25 is IGNORED unless "
        "apply_class_balancing=True: the Keras default is alpha=None here. Keras averages over "
        "the last axis and smooths labels towards 1/2.",
        "PaddlePaddle sigmoid_focal_loss(logit, label, normalizer=None, alpha=0.25, gamma=2.0, "
        "reduction='sum'): the default reduction is 'sum', divided by normalizer (e.g. the "
        "number of positive anchors) when given.",
        "MMDetection FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25) takes integer labels and "
        "one-hot encodes them with an extra background column that is then dropped; "
        "loss_weight scales the result; weight is per element (N, C) or per row (N,), and "
        "avg_factor replaces the mean's denominator (sum / (avg_factor + float32 eps)). "
        "crossent.torch.nn.FocalLoss has that interface; the functional form takes weight= "
        "and avg_factor= on every backend.",
        "TensorFlow Addons sigmoid_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, "
        "from_logits=False) takes probabilities by default and sums over the last axis.",
        "For mutually exclusive classes (softmax) see softmax_focal_loss. crossent computes the "
        "modulation in log space, so loss and gradient are finite at any finite logit.",
    ),
    (
        "Lin, Goyal, Girshick, He & Dollár 2017, 'Focal Loss for Dense Object Detection', "
        "ICCV, arXiv:1708.02002",
        _ART_NAMES, _ART_LOSSES,
        "https://pytorch.org/vision/stable/generated/torchvision.ops.sigmoid_focal_loss.html",
        _OPTAX, _KERAS_P,
    ),
    task="multilabel", sample="logits_binary",
)

_loss(
    "softmax_focal_loss", "focal", "focal",
    "logits (classes along axis) + integer labels or class probabilities",
    "FL = -Σ_c α_c t_c (1 - p_c)^γ log p_c, p = softmax(s); for a label y: "
    "-α_y (1 - p_y)^γ log p_y; γ = 0, α = None is softmax cross-entropy",
    "∂FL/∂s_j = v_j - p_j Σ_c v_c with v_c = -α_c t_c (1 - p_c)^γ (1 - γ p_c log p_c / "
    "(1 - p_c)); for a label y: α_y (1 - p_y)^{γ-1} [γ p_y log p_y - (1 - p_y)] ([j = y] - p_j)",
    {
        "common": ("Softmax Focal Loss", "Categorical Focal Loss", "Multi-class Focal Loss",
                   "Focal Cross-Entropy"),
        "Keras": ("CategoricalFocalCrossentropy", "categorical_focal_crossentropy"),
    },
    (
        "Keras CategoricalFocalCrossentropy defaults alpha=0.25 (one scalar for every class) "
        "and from_logits=False (probabilities, clipped to 1e-7); crossent defaults alpha=None "
        "and takes logits. Keras's 'sum_over_batch_size' is crossent's 'mean'; Keras has no "
        "ignore_index.",
        "kornia.losses.focal_loss is a softmax focal loss with a scalar alpha (not in the table: "
        "its name 'FocalLoss' is the sigmoid one here). mmdet's FocalLoss(use_sigmoid=False) "
        "is not implemented there; crossent.torch.nn.FocalLoss(use_sigmoid=False) is this loss "
        "over C + 1 scores (background last), alpha for the foreground classes and 1 - alpha "
        "for the background.",
        "'Focal Loss' on its own resolves to sigmoid_focal_loss (RetinaNet's focal loss uses the "
        "sigmoid).",
    ),
    (
        "Lin, Goyal, Girshick, He & Dollár 2017, 'Focal Loss for Dense Object Detection', "
        "ICCV, arXiv:1708.02002",
        _KERAS_P, _ART_LOSSES,
    ),
    task="multiclass", sample="logits_labels",
)

# --- information ----------------------------------------------------------------------------

_loss(
    "entropy", "information", "information",
    "probabilities (classes along axis)",
    "H(p) = -Σ_i p_i log p_i, 0 log 0 = 0, in nats",
    "∂H/∂p_i = -(log p_i + 1)",
    {
        "common": ("Shannon Entropy", "Information Entropy", "H(p)"),
        "SciPy": ("entropy", "entr"),
    },
    (
        "scipy.stats.entropy(pk) normalises pk to sum 1 first (crossent does not renormalise); "
        "given qk it computes the KL divergence instead (-> kl_divergence). scipy.special.entr "
        "is element-wise: sum it over the class axis.",
        "Natural logarithm: divide by log 2 for bits (information-theory texts often use "
        "log base 2).",
    ),
    (
        "Shannon 1948, 'A Mathematical Theory of Communication'",
        "Cover & Thomas, Elements of Information Theory, ch. 2",
        _ART_LOSSES, _ART_IMAGE,
        "https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.entropy.html",
    ),
    task=None, sample="one_dist",
)

_loss(
    "cross_entropy", "information", "information",
    "two probability arrays: target p and model q (classes along axis)",
    "H(p, q) = -Σ_i p_i log q_i = H(p) + D_KL(p ‖ q), 0 log q = 0, in nats",
    "∂H/∂p_i = -log q_i (w.r.t. the first argument, crossent's convention); w.r.t. the model "
    "distribution: ∂H/∂q_i = -p_i / q_i (crossent.grad(cross_entropy, argnums=1))",
    {
        "common": ("H(p, q)", "Multinomial Logistic Loss", "Categorical Log Loss",
                   "Cross-Entropy on probabilities"),
        "Caffe": ("MultinomialLogisticLoss", "MultinomialLogisticLossLayer"),
    },
    (
        "Argument order: crossent cross_entropy(p, q) = H(p, q), the target distribution "
        "first, the model's probabilities second.",
        "The bare name 'cross_entropy' resolves here (crossent's own names win); PyTorch's "
        "F.cross_entropy and PaddlePaddle's paddle.nn.functional.cross_entropy take logits and "
        "are softmax_cross_entropy: write them with their prefix.",
        "In the usual naming, Cross-Entropy Loss CE = -Σ t_i log s_i, alias Logistic Loss and "
        "Multinomial "
        "Logistic Loss, applied after an activation. 'Cross-Entropy Loss' itself resolves to "
        "softmax_cross_entropy, because it is spelled like PyTorch's CrossEntropyLoss.",
        "Caffe MultinomialLogisticLoss takes probabilities (no softmax) and integer labels: "
        "cross_entropy(one_hot(labels, C), probs); Caffe clamps each probability at 1e-20. "
        "Caffe SoftmaxWithLoss takes scores (-> softmax_cross_entropy).",
        "Keras categorical_crossentropy with its default from_logits=False computes this, "
        "after renormalising y_pred to sum 1 and clipping it to [1e-7, 1 - 1e-7]; "
        "scikit-learn log_loss on a probability matrix is this with one-hot p.",
        "The three-animal example of two models ('Cross Entropy损失函数') is this function on "
        "the models' probabilities: model 1 1.378 (the article prints 1.37), model 2 0.639 "
        "(the article rounds each sample first and prints 0.63).",
        "'mean' is per distribution (PyTorch's 'batchmean'); rows are not renormalised; "
        "+inf where q_i = 0 < p_i.",
    ),
    (
        "Goodfellow, Bengio & Courville, Deep Learning (2016), 5.5",
        _ART_NAMES, _ART_LOSSES, _ART_IMAGE, _ART_WHY,
        "https://caffe.berkeleyvision.org/tutorial/layers/multinomiallogisticloss.html",
    ),
    task=None, sample="two_dists",
)

_loss(
    "kl_divergence", "information", "information",
    "two probability arrays: reference p and approximation q (classes along axis)",
    "D_KL(p ‖ q) = Σ_i p_i log(p_i / q_i) = H(p, q) - H(p), in nats",
    "∂D/∂p_i = log(p_i / q_i) + 1 (first argument, crossent's convention); "
    "∂D/∂q_i = -p_i / q_i (crossent.grad(kl_divergence, argnums=1))",
    {
        "common": ("KL Divergence", "Kullback-Leibler Divergence", "Relative Entropy", "KL",
                   "KLD", "D_KL", "Information Gain"),
        "PyTorch": ("KLDivLoss", "kl_div"),
        "Keras": ("KLDivergence", "kl_divergence", "kld", "KLD", "kullback_leibler_divergence"),
        "Optax": ("kl_divergence", "kl_divergence_with_log_targets"),
        "MXNet/Gluon": ("KLDivLoss",),
        "PaddlePaddle": ("KLDivLoss", "kl_div"),
        "SciPy": ("rel_entr",),
    },
    (
        "PyTorch kl_div(input, target) takes (log q, p): the LOG-probabilities of the "
        "approximation first, the target probabilities second (log_target=False); crossent "
        "kl_divergence(p, q) takes probabilities, reference first.",
        "PyTorch reduction='mean' averages over EVERY ELEMENT (divides by N·C, which is not a "
        "KL of anything); 'batchmean' divides by the batch size and is the true KL per "
        "distribution, which is crossent's 'mean' (for (N, d, C) inputs crossent divides by "
        "N·d distributions, PyTorch's 'batchmean' by N). kl_divergence(p, q, "
        "elementwise=True) reduces the terms themselves: PyTorch's 'none' (element-wise) and "
        "'mean' (over elements) exactly.",
        "Optax kl_divergence(log_predictions, targets) likewise takes the log of the "
        "approximation first and returns per-distribution values (crossent reduction='none'); "
        "kl_divergence_with_log_targets(log_predictions, log_targets) takes both in log space: "
        "crossent kl_divergence(log_targets, log_predictions, log_inputs=True). Optax's where= "
        "masks and tuple axis= are crossent's too.",
        "Keras kl_divergence(y_true, y_pred) has crossent's order, clips both to [1e-7, 1] and "
        "sums over the last axis; KLDivergence averages over the batch (= crossent 'mean'). "
        "'kld' / 'KLD' are its string identifiers; kullback_leibler_divergence is the Keras 2 "
        "(tf.keras) name.",
        "MXNet Gluon KLDivLoss(from_logits=True) takes LOG-probabilities as pred and AVERAGES "
        "(not sums) over the class axis: crossent's value / C.",
        "PaddlePaddle KLDivLoss / kl_div follow PyTorch (log-probability input first; 'mean' "
        "over elements is the default, 'batchmean' per distribution).",
        "scipy.special.rel_entr(p, q) is element-wise: sum it over the class axis; "
        "scipy.stats.entropy(p, q) also gives the KL but renormalises p and q.",
        "KL is not symmetric: for knowledge distillation the order is KL(teacher ‖ student) "
        "-> distillation_loss.",
    ),
    (
        "Kullback & Leibler 1951, 'On Information and Sufficiency'",
        _ART_LOSSES, _ART_IMAGE,
        "https://pytorch.org/docs/stable/generated/torch.nn.KLDivLoss.html",
        _KERAS_P, _OPTAX, _GLUON,
    ),
    task=None, sample="two_dists",
)

_loss(
    "generalized_kl_divergence", "information", "information",
    "two non-negative measures (not necessarily normalised): reference p and approximation q",
    "D(p ‖ q) = Σ_i p_i log(p_i / q_i) - p_i + q_i (the Bregman divergence of x log x - x)",
    "∂D/∂p_i = log(p_i / q_i); ∂D/∂q_i = 1 - p_i / q_i "
    "(crossent.grad(generalized_kl_divergence, argnums=1))",
    {
        "common": ("Generalized KL Divergence", "Generalized Kullback-Leibler Divergence",
                   "I-Divergence", "Convex KL Divergence"),
        "Optax": ("generalized_kl_divergence", "convex_kl_divergence"),
    },
    (
        "Optax generalized_kl_divergence(log_predictions, targets) takes the LOG of the "
        "approximation first and returns per-distribution values: crossent "
        "generalized_kl_divergence(targets, exp(log_predictions), reduction='none'); "
        "convex_kl_divergence is its deprecated name.",
        "For distributions that sum to 1 it equals kl_divergence; it is the loss of "
        "KL-divergence NMF (Lee & Seung).",
    ),
    ("Boyd & Vandenberghe, Convex Optimization (2004), p. 90",
     "Lee & Seung 2001, 'Algorithms for non-negative matrix factorization'", _OPTAX),
    task=None, sample="two_dists",
)

_loss(
    "js_divergence", "information", "information",
    "two probability arrays (classes along axis)",
    "JS(p, q) = ½ D_KL(p ‖ m) + ½ D_KL(q ‖ m), m = (p + q) / 2; 0 ≤ JS ≤ log 2, symmetric",
    "∂JS/∂p_i = ½ log(p_i / m_i)",
    {
        "common": ("Jensen-Shannon Divergence", "JS Divergence", "JSD", "Information Radius"),
    },
    (
        "scipy.spatial.distance.jensenshannon(p, q) returns the Jensen-Shannon DISTANCE, the "
        "square root of this divergence, and renormalises its inputs: not mapped.",
    ),
    (
        "Lin 1991, 'Divergence measures based on the Shannon entropy', IEEE Trans. Inf. Theory",
        "Goodfellow et al. 2014, 'Generative Adversarial Nets' (GANs minimise a JS divergence)",
    ),
    task=None, sample="two_dists",
)

# --- distillation ---------------------------------------------------------------------------

_loss(
    "distillation_loss", "distillation", "distillation",
    "student logits + teacher logits (classes along axis), temperature T",
    "L_KD = T² · D_KL(softmax(t / T) ‖ softmax(s / T)) (teacher ‖ student)",
    "∂L/∂s = T (softmax(s / T) - softmax(t / T))",
    {
        "common": ("Knowledge Distillation Loss", "KD Loss", "Distillation Loss",
                   "Soft Target Loss", "Hinton Distillation Loss"),
    },
    (
        "Direction: KL(teacher ‖ student), the difference seen from the teacher.",
        "Hinton et al. multiply the soft term by T² so that its gradient keeps its scale when "
        "T changes; crossent returns the soft term only: combine it yourself, e.g. "
        "α · distillation_loss(s, t, temperature=T) + (1 - α) · softmax_cross_entropy(s, y).",
        "The usual PyTorch code F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), "
        "reduction='batchmean') * T**2 gives the same value; with reduction='mean' it would "
        "divide by N·C instead of N.",
        "The teacher logits are not detached: .detach() / jax.lax.stop_gradient them if the "
        "teacher is frozen.",
    ),
    (
        "Hinton, Vinyals & Dean 2015, 'Distilling the Knowledge in a Neural Network', "
        "arXiv:1503.02531",
        _ART_LOSSES,
    ),
    task=None, sample="two_logits",
)

# --- extended cross-entropy family ----------------------------------------------------------

_loss(
    "poly1_cross_entropy", "extended", "extended",
    "logits (classes along axis) + integer labels or class probabilities",
    "Poly-1: l = CE + ε Σ_c t_c (1 - p_c) = CE + ε (1 - p_t), p = softmax(s), "
    "p_t = Σ_c t_c p_c; for a label y: -log p_y + ε (1 - p_y)",
    "∂l/∂s = p Σ_c t_c - t - ε p ⊙ (t - p_t)",
    {
        "common": ("Poly-1", "Poly-1 Loss", "PolyLoss", "Poly1 Cross-Entropy"),
        "Optax": ("poly_loss_cross_entropy",),
    },
    (
        "Optax poly_loss_cross_entropy(logits, labels, epsilon=2.0) takes probability labels "
        "and returns per-example losses (crossent reduction='none'); crossent has the same "
        "default epsilon=2.0 and also takes integer labels with ignore_index.",
        "ε = 0 is softmax cross-entropy; Leng et al. found ε > 0 helps on ImageNet and ε < 0 "
        "on detection.",
    ),
    (
        "Leng et al. 2022, 'PolyLoss: A Polynomial Expansion Perspective of Classification "
        "Loss Functions', ICLR, arXiv:2204.12511",
        _OPTAX,
    ),
    task="multiclass", sample="logits_labels",
)

_loss(
    "asymmetric_loss", "extended", "extended",
    "logits (any shape, multi-label) + targets in {0, 1}",
    "ASL: l = -[y (1 - p)^{γ+} log max(p, eps) + (1 - y) p_m^{γ-} log max(1 - p_m, eps)], "
    "p = σ(x), p_m = max(p - m, 0) (probability shifting by the clip margin m); defaults "
    "γ- = 4, γ+ = 1, m = 0.05",
    "∂l/∂x by the chain rule through p = σ(x), the focusing weights differentiated too (as "
    "timm's default disable_torch_grad_focal_loss=False)",
    {
        "common": ("ASL", "Asymmetric Loss", "Asymmetric Loss for Multi-Label Classification"),
        "timm": ("AsymmetricLossMultiLabel",),
    },
    (
        "timm AsymmetricLossMultiLabel(gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-8) has "
        "crossent's defaults but returns the SUM over the batch and the classes: "
        "reduction='sum' here (crossent defaults to 'mean'). Its "
        "disable_torch_grad_focal_loss=True detaches the focusing weights, which changes the "
        "gradient, not the value.",
        "timm's AsymmetricLossSingleLabel is a softmax variant: not mapped.",
        "With γ+ = γ- = γ and m = 0 (and the α weights of focal loss off) ASL is "
        "sigmoid_focal_loss(alpha=None).",
    ),
    (
        "Ben-Baruch, Ridnik et al. 2021, 'Asymmetric Loss For Multi-Label Classification', "
        "ICCV, arXiv:2009.14119",
        "https://github.com/huggingface/pytorch-image-models/blob/main/timm/loss/"
        "asymmetric_loss.py",
    ),
    task="multilabel", sample="logits_binary",
)

_loss(
    "sparsemax_loss", "extended", "extended",
    "logits (classes along axis) + integer labels",
    "l = -s_y + ½ Σ_{j ∈ S(s)} (s_j² - τ(s)²) + ½, with sparsemax(s) = max(s - τ(s), 0) and "
    "S(s) its support (the Fenchel-Young loss of sparsemax)",
    "∂l/∂s = sparsemax(s) - onehot(y)",
    {
        "common": ("Sparsemax Fenchel-Young Loss",
                   "Multiclass Sparsemax Loss"),
        "Optax": ("multiclass_sparsemax_loss",),
    },
    (
        "Optax multiclass_sparsemax_loss(scores, labels) is this loss with integer labels, per "
        "example. optax.sparsemax_loss(logits, labels) is the BINARY sparsemax loss "
        "(-> binary_sparsemax_loss); the bare name 'sparsemax_loss' is crossent's multi-class "
        "function (crossent's own names win): write 'optax.sparsemax_loss' for Optax's.",
        "Zero exactly when sparsemax(s) = onehot(y), so it can reach 0 unlike softmax "
        "cross-entropy.",
    ),
    (
        "Martins & Astudillo 2016, 'From Softmax to Sparsemax', ICML, arXiv:1602.02068",
        "Blondel, Martins & Niculae 2020, 'Learning with Fenchel-Young Losses', JMLR, "
        "arXiv:1901.02324",
        _OPTAX,
    ),
    task="multiclass", sample="logits_labels",
)

_loss(
    "binary_sparsemax_loss", "extended", "extended",
    "logits (any shape) + 0/1 labels",
    "v = -x for a positive label, x for a negative one; l = sparse_plus(v) = 0 (v ≤ -1), "
    "(v + 1)² / 4 (|v| < 1), v (v ≥ 1): the Fenchel-Young loss of the sparse sigmoid",
    "∂l/∂x = sparse_sigmoid(x) - y, sparse_sigmoid(x) = clip((x + 1) / 2, 0, 1)",
    {
        "common": ("Binary Sparsemax Loss", "Sparse Sigmoid Loss"),
        "Optax": ("sparsemax_loss", "binary_sparsemax_loss"),
    },
    (
        "Optax sparsemax_loss(logits, labels) (formerly binary_sparsemax_loss) is this loss, "
        "element-wise; the bare name 'sparsemax_loss' is crossent's multi-class sparsemax "
        "loss: write 'optax.sparsemax_loss' for this one.",
        "The sparse counterpart of sigmoid_cross_entropy: 0 once the logit is past ±1 on the "
        "right side.",
    ),
    (
        "Blondel, Martins & Niculae 2020, 'Learning with Fenchel-Young Losses', JMLR, sec. 4.4, "
        "arXiv:1901.02324",
        _OPTAX,
    ),
    task="multilabel", sample="logits_binary",
)

_loss(
    "generalized_cross_entropy", "extended", "extended",
    "logits (classes along axis) + integer labels",
    "GCE / L_q: l = (1 - p_y^q) / q, p = softmax(s), q ∈ (0, 1] (0.7 by default, the "
    "paper's); q → 0 gives CE, q = 1 gives MAE (1 - p_y)",
    "∂l/∂s = p_y^q (p - onehot(y)): CE's gradient damped on low-confidence examples",
    {
        "common": ("GCE", "Generalized Cross-Entropy", "L_q Loss", "Lq Loss"),
        "Keras": ("CategoricalGeneralizedCrossEntropy", "categorical_generalized_cross_entropy"),
    },
    (
        "Keras categorical_generalized_cross_entropy(y_true, y_pred, q=0.5) takes integer labels "
        "and PROBABILITIES (apply the softmax first) and defaults q=0.5; crossent takes logits "
        "and defaults q=0.7 (the paper).",
        "Robust to noisy labels: q trades the fast convergence of CE for the noise robustness "
        "of MAE.",
    ),
    (
        "Zhang & Sabuncu 2018, 'Generalized Cross Entropy Loss for Training Deep Neural "
        "Networks with Noisy Labels', NeurIPS, arXiv:1805.07836",
        _KERAS_P,
    ),
    task="multiclass", sample="logits_labels",
)

# --- margin ---------------------------------------------------------------------------------

_loss(
    "hinge_loss", "hinge", "margin",
    "real-valued scores + labels in {-1, 1} or {0, 1}; squared=True for the squared hinge",
    "l = max(0, 1 - t s), t ∈ {-1, 1} (a 0 label is read as -1); squared: max(0, 1 - t s)²",
    "∂l/∂s = -t [1 - t s > 0] (times 2 max(0, 1 - t s) when squared)",
    {
        "common": ("Hinge Loss", "Binary Hinge Loss", "SVM Loss", "Squared Hinge Loss",
                   "L2-SVM Loss"),
        "TensorFlow": ("hinge_loss",),
        "Keras": ("Hinge", "hinge", "SquaredHinge", "squared_hinge"),
        "Caffe": ("HingeLoss", "HingeLossLayer"),
        "Optax": ("hinge_loss",),
        "MXNet/Gluon": ("HingeLoss", "SquaredHingeLoss"),
        "scikit-learn": ("hinge_loss",),
    },
    (
        "Squared hinge (Keras SquaredHinge, Gluon SquaredHingeLoss) is hinge_loss(..., "
        "squared=True).",
        "Keras hinge / squared_hinge convert 0/1 labels to -1/1 and average over the last axis "
        "(per sample); crossent 'none' is per element.",
        "MXNet Gluon HingeLoss(margin=1) / SquaredHingeLoss take ±1 labels and return "
        "per-sample means over the non-batch axes; a margin other than 1 has no crossent "
        "option (scale the scores instead).",
        "Optax hinge_loss(predictor_outputs, targets) takes ±1 targets, element-wise.",
        "tf.compat.v1.losses.hinge_loss takes {0, 1} labels (converted to ±1) and reduces with "
        "SUM_BY_NONZERO_WEIGHTS.",
        "scikit-learn hinge_loss(y_true, pred_decision) is this mean for two classes; with more "
        "classes it is the Crammer-Singer loss (-> multiclass_hinge_loss).",
        "Caffe HingeLoss is multi-class one-vs-all: Σ_k max(0, 1 - δ_k s_k)^p / N with "
        "δ_k = +1 for the label and -1 otherwise (norm L1 or L2 = squared): this with ±1 "
        "one-hot targets and reduction='sum' / N.",
        "PyTorch HingeEmbeddingLoss is NOT this (it takes distances: x for y = 1, "
        "max(0, margin - x) for y = -1) and is not mapped.",
    ),
    (
        "Cortes & Vapnik 1995, 'Support-vector networks', Machine Learning 20",
        _ART_LOSSES, _ART_IMAGE, _KERAS_H, _OPTAX, _GLUON,
    ),
    task=None, sample="scores_pm1",
)

_loss(
    "multi_margin_loss", "hinge", "margin",
    "scores (..., C) + integer labels",
    "l = (w_y / C) Σ_{j≠y} max(0, margin - s_y + s_j)^p, p ∈ {1, 2}",
    "∂l/∂s_j = (w_y / C) p max(0, h_j)^{p-1} [h_j > 0] for j ≠ y, h_j = margin - s_y + s_j; "
    "∂l/∂s_y = -Σ_{j≠y} ∂l/∂s_j",
    {
        "common": ("Multi-class Margin Loss", "Weston-Watkins Loss",
                   "Weston-Watkins Multiclass SVM Loss"),
        "PyTorch": ("MultiMarginLoss", "multi_margin_loss"),
        "PaddlePaddle": ("MultiMarginLoss", "multi_margin_loss"),
    },
    (
        "PyTorch's definition divides by the number of classes C; the Weston-Watkins / cs231n "
        "multiclass SVM loss sums without 1/C (multiply by C).",
        "weight multiplies by the TRUE class's weight w_y; PyTorch's 'mean' is a plain mean over "
        "examples even with weight (unlike CrossEntropyLoss).",
        "Crammer-Singer takes the max over j ≠ y instead of the sum (-> multiclass_hinge_loss).",
    ),
    (
        "Weston & Watkins 1999, 'Support vector machines for multi-class pattern recognition', "
        "ESANN",
        "https://pytorch.org/docs/stable/generated/torch.nn.MultiMarginLoss.html",
    ),
    task="multiclass", sample="logits_labels",
)

_loss(
    "multiclass_hinge_loss", "hinge", "margin",
    "scores (..., C) + integer labels",
    "Crammer-Singer: l = max_j (s_j + 1 - [j = y]) - s_y = max(0, 1 + max_{j≠y} s_j - s_y)",
    "∂l/∂s = onehot(argmax_j (s_j + 1 - [j = y])) - onehot(y) (ties share the first term)",
    {
        "common": ("Crammer-Singer", "Crammer-Singer Loss", "Multiclass Hinge Loss",
                   "Crammer-Singer Multiclass SVM Loss"),
        "Optax": ("multiclass_hinge_loss",),
    },
    (
        "Optax multiclass_hinge_loss(scores, labels) returns per-example losses.",
        "scikit-learn hinge_loss with more than two classes and "
        "LinearSVC(multi_class='crammer_singer') use this loss ('hinge_loss' itself resolves to "
        "the binary hinge_loss).",
        "Keras categorical_hinge differs: its negative term max_j (1 - t_j) s_j lets the true "
        "class enter the max as 0 (-> categorical_hinge_loss).",
    ),
    (
        "Crammer & Singer 2001, 'On the algorithmic implementation of multiclass kernel-based "
        "vector machines', JMLR 2",
        _OPTAX,
    ),
    task="multiclass", sample="logits_labels",
)

_loss(
    "perceptron_loss", "hinge", "margin",
    "real-valued scores + labels in {-1, 1} or {0, 1}",
    "l = max(0, -t s), t ∈ {-1, 1} (a 0 label is read as -1): the hinge without its margin",
    "∂l/∂s = -t [-t s > 0] (0 at the kink s = 0)",
    {
        "common": ("Perceptron Loss", "Binary Perceptron Loss"),
        "Optax": ("perceptron_loss",),
    },
    (
        "Optax perceptron_loss(predictor_outputs, targets) takes ±1 targets and returns "
        "element-wise losses (crossent reduction='none').",
        "scikit-learn Perceptron / SGDClassifier(loss='perceptron') minimise this loss.",
    ),
    ("Rosenblatt 1958, 'The perceptron: a probabilistic model for information storage and "
     "organization in the brain'", _OPTAX),
    task=None, sample="scores_pm1",
)

_loss(
    "multiclass_perceptron_loss", "hinge", "margin",
    "scores (..., C) + integer labels",
    "l = max_j s_j - s_y (Crammer-Singer's hinge without its margin)",
    "∂l/∂s = onehot(argmax_j s_j) - onehot(y) (tied maxima share the first term)",
    {
        "common": ("Multiclass Perceptron Loss", "Structured Perceptron Loss"),
        "Optax": ("multiclass_perceptron_loss",),
    },
    (
        "Optax multiclass_perceptron_loss(scores, labels) returns per-example losses.",
    ),
    ("Collins 2002, 'Discriminative training methods for hidden Markov models: theory and "
     "experiments with perceptron algorithms', EMNLP", _OPTAX),
    task="multiclass", sample="logits_labels",
)

_loss(
    "categorical_hinge_loss", "hinge", "margin",
    "scores (..., C) + one-hot / probability targets or integer labels",
    "pos = Σ_j t_j s_j, neg = max_j (1 - t_j) s_j, l = max(0, neg - pos + 1) (Keras)",
    "∂l/∂s = [l > 0] ((1 - t_{j*}) onehot(j*) - t), j* = argmax_j (1 - t_j) s_j",
    {
        "common": ("Categorical Hinge Loss",),
        "Keras": ("CategoricalHinge", "categorical_hinge"),
    },
    (
        "Keras's definition: with one-hot targets the true class's own entry enters the max as "
        "0, so neg ≥ 0; it differs from Crammer-Singer (multiclass_hinge_loss) when every "
        "wrong-class score is negative.",
    ),
    (_KERAS_H, "Crammer & Singer 2001, JMLR 2"),
    task="multiclass", sample="logits_labels",
)

_MARGIN_NOTE_W = ("crossent takes weight of shape (num_classes, embedding_dim); "
                  "pytorch-metric-learning owns W of shape (embedding_size, num_classes): pass "
                  "its W.T. pml's loss also accepts miners and regularisers, which crossent "
                  "does not have. With many classes (1e5 and more) use "
                  "crossent.torch.margin_linear_cross_entropy(embeddings, weight, labels, "
                  "margin_type=...): the same loss chunked over the classes, never holding the "
                  "N x C logits, with sub_centers= (pml SubCenterArcFaceLoss); across processes "
                  "crossent.torch.distributed.class_parallel_margin_cross_entropy or the Module "
                  "crossent.torch.nn.MarginLinearCrossEntropyLoss (Partial FC: class centres "
                  "sharded over ranks, optional negative sampling).")

_loss(
    "large_margin_softmax_loss", "margin_softmax", "margin",
    "embeddings (N, D) + class weight W (C, D) + integer labels",
    "L-Softmax: z_j = s ‖W_j‖ ‖x‖ cos θ_j (j ≠ y), z_y = s ‖W_y‖ ‖x‖ ψ(θ_y), ψ(θ) = "
    "(-1)^k cos(mθ) - 2k for θ ∈ [kπ/m, (k+1)π/m]; l = -log softmax(z)_y",
    "∂l/∂x: softmax(z) - onehot(y) w.r.t. z, through z = s R f(cos θ) with cos(mθ) a "
    "Chebyshev polynomial of cos θ (closed form w.r.t. the embeddings, not the weight)",
    {
        "common": ("L-Softmax", "Large-Margin Softmax", "Large Margin Softmax Loss"),
        "pytorch-metric-learning": ("LargeMarginSoftmaxLoss",),
        "Caffe": ("LargeMarginInnerProduct",),
    },
    (
        "pytorch-metric-learning LargeMarginSoftmaxLoss(num_classes, embedding_size, margin=4, "
        "scale=1): margin is the integer multiplier m, as here.",
        _MARGIN_NOTE_W,
        "m = 1 is plain softmax cross-entropy on the logits s W x.",
        "Caffe LargeMarginInnerProduct (the authors' layer) produces the modified logits; a "
        "SoftmaxWithLoss follows it.",
    ),
    (
        "Liu, Wen, Yu & Yang 2016, 'Large-Margin Softmax Loss for Convolutional Neural "
        "Networks', ICML, arXiv:1612.02295",
        _ART_WHY, _PML,
    ),
    task=None, sample="embeddings_weight_labels",
)

_loss(
    "sphereface_loss", "margin_softmax", "margin",
    "embeddings (N, D) + class weight W (C, D) + integer labels",
    "A-Softmax: z_j = s ‖x‖ cos θ_j (j ≠ y), z_y = s ‖x‖ ψ(θ_y), ψ as in L-Softmax, unit-norm "
    "class weights; l = -log softmax(z)_y",
    "as L-Softmax with R = ‖x‖ (closed form w.r.t. the embeddings)",
    {
        "common": ("A-Softmax", "SphereFace", "Angular Softmax", "SphereFace Loss"),
        "pytorch-metric-learning": ("SphereFaceLoss",),
        "Caffe": ("MarginInnerProduct",),
    },
    (
        "pytorch-metric-learning SphereFaceLoss(num_classes, embedding_size, margin=4, "
        "scale=1).",
        _MARGIN_NOTE_W,
        "The paper anneals from plain softmax with a λ schedule; crossent leaves it to the "
        "caller.",
    ),
    (
        "Liu et al. 2017, 'SphereFace: Deep Hypersphere Embedding for Face Recognition', CVPR, "
        "arXiv:1704.08063",
        _ART_WHY, _PML,
    ),
    task=None, sample="embeddings_weight_labels",
)

_loss(
    "cosface_loss", "margin_softmax", "margin",
    "embeddings (N, D) + class weight W (C, D) + integer labels",
    "CosFace / AM-Softmax: z_j = s cos θ_j (j ≠ y), z_y = s (cos θ_y - m), features and "
    "weights normalised; l = -log softmax(z)_y",
    "∂l/∂z = softmax(z) - onehot(y), then through cos θ_j = Ŵ_j · x̂ (closed form w.r.t. the "
    "embeddings)",
    {
        "common": ("CosFace", "AM-Softmax", "Additive Margin Softmax", "LMCL",
                   "Large Margin Cosine Loss", "CosFace Loss"),
        "pytorch-metric-learning": ("CosFaceLoss",),
    },
    (
        "pytorch-metric-learning CosFaceLoss(num_classes, embedding_size, margin=0.35, "
        "scale=64): the same defaults; the cosine margin is not an angle.",
        _MARGIN_NOTE_W,
        "m = 0 is normalised-softmax cross-entropy.",
    ),
    (
        "Wang et al. 2018, 'CosFace: Large Margin Cosine Loss for Deep Face Recognition', CVPR, "
        "arXiv:1801.09414",
        "Wang, Cheng, Liu & Liu 2018, 'Additive Margin Softmax for Face Verification', "
        "arXiv:1801.05599",
        _ART_WHY, _PML,
    ),
    task=None, sample="embeddings_weight_labels",
)

_loss(
    "arcface_loss", "margin_softmax", "margin",
    "embeddings (N, D) + class weight W (C, D) + integer labels; margin in radians",
    "ArcFace: z_j = s cos θ_j (j ≠ y), z_y = s cos(θ_y + m) where θ_y + m < π, else "
    "s (cos θ_y - m sin m); l = -log softmax(z)_y",
    "∂l/∂z = softmax(z) - onehot(y), then through cos(θ + m) = cos θ cos m - sin θ sin m "
    "(closed form w.r.t. the embeddings)",
    {
        "common": ("ArcFace", "Additive Angular Margin Loss", "AAM-Softmax", "ArcFace Loss",
                   "Additive Angular Margin Softmax"),
        "pytorch-metric-learning": ("ArcFaceLoss",),
    },
    (
        "pytorch-metric-learning ArcFaceLoss(num_classes, embedding_size, margin=28.6, "
        "scale=64) takes the margin in DEGREES; crossent in radians (28.6° ≈ 0.5 rad, the "
        "paper's value and crossent's default): margin=math.radians(pml_margin).",
        _MARGIN_NOTE_W,
        "Past θ + m ≥ π both use the insightface fallback cos θ - m sin m; easy_margin=True "
        "(insightface) applies the margin only where cos θ > 0.",
    ),
    (
        "Deng, Guo, Xue & Zafeiriou 2019, 'ArcFace: Additive Angular Margin Loss for Deep Face "
        "Recognition', CVPR, arXiv:1801.07698",
        _ART_WHY, _PML,
    ),
    task=None, sample="embeddings_weight_labels",
)

_loss(
    "soft_margin_softmax_loss", "margin_softmax", "margin",
    "logits (N, C) + integer labels; margin m >= 0",
    "SM-Softmax: z'_y = z_y - m, z'_j = z_j (j ≠ y); l = -log softmax(z')_y (no normalisation: "
    "the margin is on the logit itself)",
    "∂l/∂z = softmax(z') - onehot(y)",
    {
        "common": ("SM-Softmax", "Soft-Margin Softmax", "Soft Margin Softmax"),
    },
    (
        "The additive margin of CosFace applied to the raw logits W_y x instead of cosines; "
        "m = 0 is softmax cross-entropy.",
    ),
    (
        "Liang, Wang, Li & Xie 2017, 'Soft-Margin Softmax for Deep Classification', ICONIP",
        _ART_WHY,
    ),
    task="multiclass", sample="logits_labels",
)

_loss(
    "log_loss", "scoring", "information",
    "class labels y_true (N,) of any sortable kind + probabilities y_prob (N, C) or (N,)",
    "l = Σ_i w_i (-log clip(p_{i, y_i}, ε, 1 - ε)) / Σ_i w_i, ε the machine epsilon of p's dtype",
    "∂l/∂p_{i, y_i} = -w_i / (p_{i, y_i} Σ_j w_j), 0 where the clip is active",
    {},
    (
        "scikit-learn's sklearn.metrics.log_loss(y_true, y_prob, sample_weight=None, "
        "labels=None), argument order and conventions included: labels are mapped to columns "
        "in sorted order, a 1-D y_prob is the probability of the larger of two classes, "
        "probabilities are clipped (not renormalised; rows that do not sum to 1 warn).",
        "sample_weight's mean divides by the sum of the weights; binary_cross_entropy's "
        "weight= scales each element and its mean divides by the element count.",
        "The bare name 'log_loss' is this function (crossent's own names win over the "
        "TensorFlow / PaddlePaddle alias of binary_cross_entropy, reachable as "
        "'tf.losses.log_loss').",
    ),
    (
        "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.log_loss.html",
        "Bishop 2006, Pattern Recognition and Machine Learning, p. 209",
    ),
    task=None, sample="labels_probs",
)

# --- ranking and metric learning ------------------------------------------------------------

_loss(
    "margin_ranking_loss", "ranking", "ranking",
    "two score arrays x1, x2 + targets y, usually ∈ {-1, 1} (x1 should rank higher when y = "
    "1; any real y is taken as PyTorch takes it)",
    "l = max(0, -y (x1 - x2) + margin)",
    "∂l/∂x1 = -y [l > 0] (and ∂l/∂x2 = y [l > 0])",
    {
        "common": ("Margin Ranking Loss", "Ranking Loss", "Margin Loss",
                   "Pairwise Hinge Ranking Loss",
                   "Pairwise Ranking Loss", "RankSVM Loss"),
        "PyTorch": ("MarginRankingLoss", "margin_ranking_loss"),
        "PaddlePaddle": ("MarginRankingLoss", "margin_ranking_loss"),
    },
    (
        "PyTorch's and PaddlePaddle's margin default 0.",
        "gombru's 'Understanding Ranking Loss, Contrastive Loss, Margin Loss, Triplet Loss, "
        "Hinge Loss' (2019) covers this family: the same loss goes by many names there too. "
        "'Ranking Loss' and 'Margin Loss' resolve here; they also name the whole family, whose "
        "pair and triplet forms are contrastive_loss and triplet_margin_loss.",
    ),
    (
        "https://pytorch.org/docs/stable/generated/torch.nn.MarginRankingLoss.html",
        _ART_LOSSES,
        "https://gombru.github.io/2019/04/03/ranking_loss/",
    ),
    task=None, sample="pair_ranking",
)

_loss(
    "contrastive_loss", "ranking", "ranking",
    "two embedding arrays + pair labels (1 = similar, 0 = dissimilar), a margin",
    "Hadsell et al.: l = ½ y D² + ½ (1 - y) max(0, margin - D)², D = ‖x1 - x2‖₂, "
    "y = 1 for a similar pair (the paper writes Y = 0 for similar)",
    "∂l/∂x1 = [y - (1 - y) max(0, margin - D) / D] (x1 - x2)",
    {
        "common": ("Contrastive Loss", "Siamese Contrastive Loss", "Pairwise Contrastive Loss"),
        "Caffe": ("ContrastiveLoss", "ContrastiveLossLayer"),
        "pytorch-metric-learning": ("ContrastiveLoss",),
    },
    (
        "Caffe ContrastiveLoss computes 1/(2N) Σ [y d² + (1 - y) max(margin - d, 0)²] "
        "(legacy_version=false): crossent's 'mean'.",
        "TF Addons contrastive_loss(y_true, y_pred) takes the DISTANCES and has no ½: "
        "2 × crossent.ranking.contrastive_loss_from_distances.",
        "pytorch-metric-learning ContrastiveLoss(pos_margin=0, neg_margin=1) is NOT squared: "
        "relu(d - pos_margin) for positive pairs, relu(neg_margin - d) for negative ones, "
        "forms all pairs from (embeddings, labels), normalises the embeddings (LpDistance) and "
        "averages over the non-zero losses (AvgNonZeroReducer); only the pair structure "
        "corresponds.",
        "In self-supervised learning 'contrastive loss' usually means InfoNCE / NT-Xent "
        "(-> ntxent_loss).",
    ),
    (
        "Hadsell, Chopra & LeCun 2006, 'Dimensionality Reduction by Learning an Invariant "
        "Mapping', CVPR",
        _ART_LOSSES, _PML,
    ),
    task=None, sample="pairs_embeddings",
)

_loss(
    "triplet_margin_loss", "ranking", "ranking",
    "anchor, positive, negative embeddings (N, D)",
    "l = max(0, d(a, p) - d(a, n) + margin), d(x, y) = ‖x - y + eps‖_p (PyTorch); "
    "swap: d(a, n) ← min(d(a, n), d(p, n))",
    "∂l/∂a = [l > 0] (∂d(a, p)/∂a - ∂d(a, n)/∂a)",
    {
        "common": ("Triplet Loss", "Triplet Margin Loss", "Triplet Ranking Loss"),
        "PyTorch": ("TripletMarginLoss", "triplet_margin_loss"),
        "Optax": ("triplet_margin_loss",),
        "MXNet/Gluon": ("TripletLoss",),
        "PaddlePaddle": ("TripletMarginLoss", "triplet_margin_loss"),
        "pytorch-metric-learning": ("TripletMarginLoss",),
    },
    (
        "PyTorch adds eps to the DIFFERENCE, ‖a - p + eps‖_p; Optax triplet_margin_loss adds it "
        "under the root, (Σ |a - p|^p + eps)^{1/p}, has no swap and returns per-example losses.",
        "MXNet Gluon TripletLoss uses SQUARED Euclidean distances (FaceNet's form): "
        "relu(‖p - a‖² - ‖n - a‖² + margin); the values differ from this function's.",
        "pytorch-metric-learning TripletMarginLoss(margin=0.05) forms the triplets from "
        "(embeddings, labels) (all of them by default), normalises the embeddings and averages "
        "over the non-zero losses (AvgNonZeroReducer); the per-triplet term is this one.",
    ),
    (
        "Balntas, Riba, Ponsa & Mikolajczyk 2016, 'Learning local feature descriptors with "
        "triplets and shallow convolutional neural networks', BMVC",
        "Schroff, Kalenichenko & Philbin 2015, 'FaceNet', CVPR, arXiv:1503.03832",
        "https://pytorch.org/docs/stable/generated/torch.nn.TripletMarginLoss.html",
        _OPTAX, _PML,
    ),
    task=None, sample="triplets",
)

_loss(
    "ntxent_loss", "ranking", "ranking",
    "embeddings (N, D) + labels marking positive pairs (equal labels), temperature τ",
    "NT-Xent: s_ij = cos(z_i, z_j) / τ; for each positive pair (i, j) (same label, i ≠ j): "
    "l_ij = -log(e^{s_ij} / (e^{s_ij} + Σ_{k: y_k ≠ y_i} e^{s_ik})); mean over the positive "
    "pairs",
    "∂l/∂z through the softmax over similarities: (softmax - positive indicator) / τ, then "
    "through the cosine similarity",
    {
        "common": ("NT-Xent", "InfoNCE", "SimCLR Loss",
                   "Normalized Temperature-scaled Cross Entropy", "NT-Xent Loss"),
        "Optax": ("ntxent",),
        "pytorch-metric-learning": ("NTXentLoss",),
    },
    (
        "Optax ntxent(embeddings, labels, temperature=0.07): the same inputs and default "
        "temperature; with no positive pair in the batch Optax gives NaN, crossent 0.",
        "pytorch-metric-learning NTXentLoss(temperature=0.07) also keeps the other positives "
        "out of each pair's denominator and averages over the positive pairs.",
        "InfoNCE (van den Oord et al. 2018) is the general form with any critic; NT-Xent is "
        "InfoNCE with the cosine similarity over τ and in-batch negatives (SimCLR). In "
        "self-supervised papers it is often just 'the contrastive loss'.",
    ),
    (
        "Chen, Kornblith, Norouzi & Hinton 2020, 'A Simple Framework for Contrastive Learning "
        "of Visual Representations', ICML, arXiv:2002.05709",
        "van den Oord, Li & Vinyals 2018, 'Representation Learning with Contrastive Predictive "
        "Coding', arXiv:1807.03748",
        "Sohn 2016, 'Improved Deep Metric Learning with Multi-class N-pair Loss Objective', "
        "NeurIPS",
        _OPTAX, _PML,
    ),
    task=None, sample="embeddings_labels",
)

_loss(
    "cosine_embedding_loss", "ranking", "ranking",
    "two embedding arrays + labels y ∈ {-1, 1}",
    "l = 1 - cos(x1, x2) if y = 1; max(0, cos(x1, x2) - margin) if y = -1",
    "∂l/∂x1 = -∂cos/∂x1 (y = 1) or [cos > margin] ∂cos/∂x1 (y = -1), "
    "∂cos/∂x1 = x2 / (‖x1‖ ‖x2‖) - cos · x1 / ‖x1‖²",
    {
        "common": ("Cosine Embedding Loss",),
        "PyTorch": ("CosineEmbeddingLoss", "cosine_embedding_loss"),
        "MXNet/Gluon": ("CosineEmbeddingLoss",),
        "PaddlePaddle": ("CosineEmbeddingLoss", "cosine_embedding_loss"),
    },
    (
        "PyTorch's and Gluon's margin default 0; Gluon returns per-sample losses and floors "
        "the norm product at 1e-12.",
    ),
    (
        "https://pytorch.org/docs/stable/generated/torch.nn.CosineEmbeddingLoss.html",
        _GLUON,
    ),
    task=None, sample="cos_pairs",
)

# --- the counter-examples: MSE and the 0-1 error ------------------------------------------

_loss(
    "mean_squared_error", "classification", "counter-example",
    "predictions (probabilities or scores, classes along axis) + one-hot targets or labels",
    "l_i = Σ_c (ŷ_ic - y_ic)², MSE = mean_i l_i (summed over classes, averaged over "
    "examples)",
    "∂MSE/∂ŷ = 2 (ŷ - y) / N",
    {
        "common": ("Mean Squared Error", "MSE", "Squared Error", "Quadratic Loss",
                   "Brier Score"),
        "PyTorch": ("MSELoss", "mse_loss"),
        "Keras": ("MeanSquaredError", "mean_squared_error", "mse", "MSE"),
        "Caffe": ("EuclideanLoss", "EuclideanLossLayer"),
        "Optax": ("squared_error",),
        "MXNet/Gluon": ("L2Loss",),
        "PaddlePaddle": ("MSELoss", "mse_loss"),
        "scikit-learn": ("brier_score_loss",),
    },
    (
        "The three-animal example of two models ('Cross Entropy损失函数') sums the squared "
        "errors over the classes and averages over the examples "
        "(model 1: 0.81, model 2: 0.34), and uses it to show why MSE is a poor classification "
        "loss: with a sigmoid / softmax in front its gradient vanishes when the prediction is "
        "confidently wrong.",
        "Keras mean_squared_error AVERAGES over the class axis (= crossent / C); PyTorch "
        "MSELoss, PaddlePaddle MSELoss and scikit-learn mean_squared_error average over every "
        "element (also crossent / C for 'mean').",
        "Caffe EuclideanLoss is 1/(2N) Σ ‖ŷ - y‖²: crossent / 2; MXNet Gluon L2Loss is "
        "½ (ŷ - y)² averaged over the non-batch axes: crossent / (2C) per sample.",
        "Optax squared_error is element-wise (ŷ - y)² (no sum over classes, no reduction).",
        "The multi-class Brier score (Brier 1950) is exactly this on probabilities, and so is "
        "scikit-learn brier_score_loss(y_true, y_proba) on a multi-class probability matrix "
        "(0.8067 for model 1 of the three-animal example); given a binary problem's "
        "positive-class probability "
        "it is mean (p - y)², half of this on the two columns (p, 1 - p).",
    ),
    (
        _ART_WHY,
        "Brier 1950, 'Verification of forecasts expressed in terms of probability', Monthly "
        "Weather Review 78",
        "https://pytorch.org/docs/stable/generated/torch.nn.MSELoss.html",
        "https://keras.io/api/losses/regression_losses/",
    ),
    task=None, sample="probs_labels",
)

_loss(
    "classification_error", "classification", "counter-example",
    "scores / probabilities (classes along axis) + integer labels or one-hot targets",
    "error = count(argmax_c s_ic ≠ y_i) / N (the classification error)",
    "0 almost everywhere (piecewise constant): no gradient to train with",
    {
        "common": ("Classification Error", "0-1 Loss", "Zero-One Loss", "Error Rate",
                   "Misclassification Rate"),
        "scikit-learn": ("zero_one_loss",),
    },
    (
        "In the three-animal example of two models ('Cross Entropy损失函数'), models 1 and 2 "
        "both misclassify one sample in three (error 1/3), though "
        "model 2 is clearly better; cross-entropy and MSE tell them apart.",
        "It is 1 - accuracy; scikit-learn zero_one_loss(y_true, y_pred) takes predicted LABELS "
        "(argmax of the scores), normalize=True by default gives this fraction.",
        "Not differentiable: crossent registers no closed-form gradient for it.",
    ),
    (_ART_WHY,
     "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.zero_one_loss.html"),
    task=None, sample="probs_labels", differentiable=False,
)


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
