"""The names table: every framework's name for a loss -> the crossent function.

The expectations below are written from the source articles and the frameworks'
documentation, not read from the table; where a framework is installed, the mapping is also
checked numerically (the crossent function found under a framework's name must give that
framework's numbers).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from crossent import names
from crossent.names import FAMILIES, FRAMEWORKS, LossSpec, UnknownLossName

# The functions the table must cover, by module (the layout of the library).
EXPECTED = {
    "classification": ("softmax_cross_entropy", "sigmoid_cross_entropy", "binary_cross_entropy",
                       "mean_squared_error", "classification_error"),
    "focal": ("sigmoid_focal_loss", "softmax_focal_loss"),
    "information": ("entropy", "cross_entropy", "kl_divergence", "generalized_kl_divergence",
                    "js_divergence"),
    "distillation": ("distillation_loss",),
    "hinge": ("hinge_loss", "multi_margin_loss", "multiclass_hinge_loss",
              "categorical_hinge_loss", "perceptron_loss", "multiclass_perceptron_loss"),
    "margin_softmax": ("large_margin_softmax_loss", "sphereface_loss", "cosface_loss",
                       "arcface_loss", "soft_margin_softmax_loss"),
    "ranking": ("margin_ranking_loss", "contrastive_loss", "triplet_margin_loss", "ntxent_loss",
                "cosine_embedding_loss"),
    "extended": ("poly1_cross_entropy", "asymmetric_loss", "sparsemax_loss",
                 "generalized_cross_entropy"),
    "scoring": ("log_loss",),
}
ALL_FUNCTIONS = [f for fs in EXPECTED.values() for f in fs]

# Names used by the four source articles and the crossent function each one must reach.
ARTICLE_NAMES = {
    # the naming article (理解Cross-Entropy Loss, Softmax Loss, Focal Loss等名词)
    "Cross-Entropy Loss": "softmax_cross_entropy",  # spelled like PyTorch's CrossEntropyLoss
    "Logistic Loss": "binary_cross_entropy",
    "Multinomial Logistic Loss": "cross_entropy",
    "Softmax Loss": "softmax_cross_entropy",
    "Categorical Cross-Entropy": "softmax_cross_entropy",
    "Categorical Cross-Entropy Loss": "softmax_cross_entropy",
    "Binary Cross-Entropy": "binary_cross_entropy",
    "Binary Cross-Entropy Loss": "binary_cross_entropy",
    "Sigmoid Cross-Entropy": "sigmoid_cross_entropy",
    "Sigmoid Cross-Entropy Loss": "sigmoid_cross_entropy",
    "Focal Loss": "sigmoid_focal_loss",
    "Multinomial Logistic Loss Layer": "cross_entropy",
    "MultinomialLogisticLossLayer": "cross_entropy",
    "MultinomialLogisticLoss": "cross_entropy",
    "SoftmaxWithLoss": "softmax_cross_entropy",
    "SoftmaxWithLoss Layer": "softmax_cross_entropy",
    "SigmoidCrossEntropyLossLayer": "sigmoid_cross_entropy",
    "SigmoidCrossEntropyLoss": "sigmoid_cross_entropy",
    "CrossEntropyLoss": "softmax_cross_entropy",
    "NLLLoss": "softmax_cross_entropy",
    "BCELoss": "binary_cross_entropy",
    "BCEWithLogitsLoss": "sigmoid_cross_entropy",
    "KLDivLoss": "kl_divergence",
    "tf.losses.log_loss": "binary_cross_entropy",  # bare log_loss is scikit-learn's
    "softmax_cross_entropy": "softmax_cross_entropy",
    "softmax_cross_entropy_with_logits": "softmax_cross_entropy",
    "sparse_softmax_cross_entropy_with_logits": "softmax_cross_entropy",
    "sigmoid_cross_entropy_with_logits": "sigmoid_cross_entropy",
    # the "Loss functions" notes
    "Softmax Cross-Entropy Loss": "softmax_cross_entropy",
    "KL Divergence": "kl_divergence",
    "Relative Entropy": "kl_divergence",
    "Knowledge Distillation Loss": "distillation_loss",
    "Triplet Loss": "triplet_margin_loss",
    "Contrastive Loss": "contrastive_loss",
    "Hinge Loss": "hinge_loss",
    "CE Loss": "softmax_cross_entropy",
    "BCE Loss": "binary_cross_entropy",
    "KD Loss": "distillation_loss",
    "Margin Loss": "margin_ranking_loss",
    "Ranking Loss": "margin_ranking_loss",
    "ArcFace Loss": "arcface_loss",
    # 图像分类任务中的损失函数 (image-classification losses)
    "Entropy": "entropy",
    "Mean Square Error": None,  # not a name anywhere: must not resolve silently (see below)
    # Cross Entropy损失函数 (why cross-entropy)
    "Classification Error": "classification_error",
    "Mean Squared Error": "mean_squared_error",
    "MSE": "mean_squared_error",
    "ArcFace": "arcface_loss",
    "L-Softmax": "large_margin_softmax_loss",
    "AM-Softmax": "cosface_loss",
    "A-Softmax": "sphereface_loss",
    "SM-Softmax": "soft_margin_softmax_loss",
}

# Framework names, with the framework prefix people write.
FRAMEWORK_NAMES = {
    "keras.losses.CategoricalCrossentropy": "softmax_cross_entropy",
    "keras.losses.SparseCategoricalCrossentropy": "softmax_cross_entropy",
    "keras.losses.BinaryCrossentropy": "binary_cross_entropy",
    "tf.keras.losses.categorical_crossentropy": "softmax_cross_entropy",
    "keras.losses.KLDivergence": "kl_divergence",
    "keras.losses.CategoricalFocalCrossentropy": "softmax_focal_loss",
    "keras.losses.BinaryFocalCrossentropy": "sigmoid_focal_loss",
    "keras.losses.Hinge": "hinge_loss",
    "keras.losses.SquaredHinge": "hinge_loss",
    "keras.losses.CategoricalHinge": "categorical_hinge_loss",
    "keras.losses.CategoricalGeneralizedCrossEntropy": "generalized_cross_entropy",
    "optax.softmax_cross_entropy": "softmax_cross_entropy",
    "optax.softmax_cross_entropy_with_integer_labels": "softmax_cross_entropy",
    "optax.sigmoid_binary_cross_entropy": "sigmoid_cross_entropy",
    "optax.sigmoid_focal_loss": "sigmoid_focal_loss",
    "optax.kl_divergence": "kl_divergence",
    "optax.poly_loss_cross_entropy": "poly1_cross_entropy",
    "optax.ntxent": "ntxent_loss",
    "optax.multiclass_hinge_loss": "multiclass_hinge_loss",
    "optax.hinge_loss": "hinge_loss",
    "optax.losses.multiclass_sparsemax_loss": "sparsemax_loss",
    "torchvision.ops.sigmoid_focal_loss": "sigmoid_focal_loss",
    "mx.gluon.loss.SoftmaxCrossEntropyLoss": "softmax_cross_entropy",
    "gluon.loss.SigmoidBinaryCrossEntropyLoss": "sigmoid_cross_entropy",
    "mxnet.gluon.loss.KLDivLoss": "kl_divergence",
    "gluon.loss.HingeLoss": "hinge_loss",
    "gluon.loss.SquaredHingeLoss": "hinge_loss",
    "gluon.loss.TripletLoss": "triplet_margin_loss",
    "gluon.loss.CosineEmbeddingLoss": "cosine_embedding_loss",
    "paddle.nn.CrossEntropyLoss": "softmax_cross_entropy",
    "paddle.nn.functional.softmax_with_cross_entropy": "softmax_cross_entropy",
    "paddle.nn.BCEWithLogitsLoss": "sigmoid_cross_entropy",
    "paddle.nn.functional.sigmoid_focal_loss": "sigmoid_focal_loss",
    "paddle.nn.KLDivLoss": "kl_divergence",
    "pml.losses.ArcFaceLoss": "arcface_loss",
    "pytorch_metric_learning.losses.CosFaceLoss": "cosface_loss",
    "pml.losses.SphereFaceLoss": "sphereface_loss",
    "pml.losses.LargeMarginSoftmaxLoss": "large_margin_softmax_loss",
    "pml.losses.NTXentLoss": "ntxent_loss",
    "pml.losses.ContrastiveLoss": "contrastive_loss",
    "pml.losses.TripletMarginLoss": "triplet_margin_loss",
    "torch.nn.MultiMarginLoss": "multi_margin_loss",
    "torch.nn.MarginRankingLoss": "margin_ranking_loss",
    "torch.nn.TripletMarginLoss": "triplet_margin_loss",
    "torch.nn.CosineEmbeddingLoss": "cosine_embedding_loss",
    "timm.loss.AsymmetricLossMultiLabel": "asymmetric_loss",
    "liger_kernel.transformers.LigerCrossEntropyLoss": "softmax_cross_entropy",
    "InfoNCE": "ntxent_loss",
    "SimCLR loss": "ntxent_loss",
    "NT-Xent": "ntxent_loss",
    "Crammer-Singer": "multiclass_hinge_loss",
    "poly-1": "poly1_cross_entropy",
    "ASL": "asymmetric_loss",
    "GCE": "generalized_cross_entropy",
    "knowledge distillation loss": "distillation_loss",
    "CosFace": "cosface_loss",
    "Jensen-Shannon divergence": "js_divergence",
}

# One prefix per framework, to check that every alias is reachable under its framework.
PREFIX_OF = {
    "PyTorch": "torch.nn.",
    "TensorFlow": "tf.nn.",
    "Keras": "keras.losses.",
    "Caffe": "caffe.",
    "Optax": "optax.",
    "torchvision": "torchvision.ops.",
    "MXNet/Gluon": "mxnet.gluon.loss.",
    "PaddlePaddle": "paddle.nn.",
    "scikit-learn": "sklearn.metrics.",
    "SciPy": "scipy.special.",
    "pytorch-metric-learning": "pytorch_metric_learning.losses.",
    "timm": "timm.loss.",
    "Liger-Kernel": "liger_kernel.transformers.",
    "MMDetection": "mmdet.models.losses.",
    "TensorFlow Addons": "tfa.losses.",
}


def _loss_module_available(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _fn_or_skip(spec: LossSpec):
    """The spec's function, or a skip while its module is still being written."""
    if not _loss_module_available(spec.module):
        pytest.skip(f"{spec.module} is not in this checkout yet")
    return spec.fn


def _key(name: str) -> str:
    # an independent re-statement of the documented normalisation
    return "".join(ch for ch in name.lower() if ch.isalnum())


# --- the articles' names -----------------------------------------------------------


@pytest.mark.parametrize("name,expected", [(k, v) for k, v in ARTICLE_NAMES.items() if v])
def test_article_names_resolve_to_the_right_function(name, expected):
    assert names.get(name).name == expected


@pytest.mark.parametrize("name,expected", FRAMEWORK_NAMES.items())
def test_framework_names_resolve(name, expected):
    assert names.get(name).name == expected


def test_a_misspelt_name_does_not_resolve_silently():
    with pytest.raises(KeyError):
        names.get("Mean Square Error")


@pytest.mark.parametrize("function", ALL_FUNCTIONS)
def test_every_crossent_function_is_in_the_table_under_its_own_name(function):
    spec = names.get(function)
    assert spec.name == function
    assert names.resolve(function).frameworks == ("crossent",)
    assert names.get(f"crossent.{function}") is spec


# --- normalisation and prefixes -----------------------------------------------------------------


@pytest.mark.parametrize("variant", [
    "SoftmaxWithLoss", "softmaxwithloss", "SOFTMAX_WITH_LOSS", "Softmax With Loss",
    "softmax-with-loss", " SoftmaxWithLoss ", "SoftmaxWithLoss()", "caffe.SoftmaxWithLoss",
    "L.SoftmaxWithLoss", "Softmax.With.Loss",
])
def test_case_space_and_punctuation_are_ignored(variant):
    assert names.get(variant).name == "softmax_cross_entropy"


@pytest.mark.parametrize("name,expected", [
    ("torch.nn.CrossEntropyLoss", "softmax_cross_entropy"),
    ("nn.CrossEntropyLoss()", "softmax_cross_entropy"),
    ("torch.nn.functional.cross_entropy", "softmax_cross_entropy"),
    ("F.cross_entropy", "softmax_cross_entropy"),
    ("torch.nn.functional.nll_loss", "softmax_cross_entropy"),
    ("torch.nn.BCEWithLogitsLoss", "sigmoid_cross_entropy"),
    ("F.binary_cross_entropy", "binary_cross_entropy"),
    ("torch.nn.KLDivLoss", "kl_divergence"),
    ("F.kl_div", "kl_divergence"),
    ("tf.nn.sigmoid_cross_entropy_with_logits", "sigmoid_cross_entropy"),
    ("tf.nn.softmax_cross_entropy_with_logits", "softmax_cross_entropy"),
    ("tf.compat.v1.losses.log_loss", "binary_cross_entropy"),
    ("tf.compat.v1.losses.softmax_cross_entropy", "softmax_cross_entropy"),
    ("tf.losses.categorical_crossentropy", "softmax_cross_entropy"),
    ("tf.keras.losses.KLD", "kl_divergence"),
    ("keras.losses.CategoricalCrossentropy", "softmax_cross_entropy"),
    ("optax.softmax_cross_entropy", "softmax_cross_entropy"),
    ("optax.losses.sigmoid_focal_loss", "sigmoid_focal_loss"),
    ("paddle.nn.functional.cross_entropy", "softmax_cross_entropy"),
    ("sklearn.metrics.log_loss", "log_loss"),
    ("scipy.stats.entropy", "entropy"),
    ("mmdet.models.losses.FocalLoss", "sigmoid_focal_loss"),
    ("crossent.cross_entropy", "cross_entropy"),
    ("crossent.torch.cross_entropy", "softmax_cross_entropy"),  # the fused PyTorch path
    ("mylib.losses.BCEWithLogitsLoss", "sigmoid_cross_entropy"),  # unknown prefix: last part
])
def test_framework_prefixes(name, expected):
    assert names.get(name).name == expected


def test_resolve_reports_the_spelling_and_the_framework():
    r = names.resolve("torch.nn.functional.cross_entropy")
    assert (r.spec.name, r.matched, r.frameworks) == ("softmax_cross_entropy", "cross_entropy",
                                                      ("PyTorch",))
    r = names.resolve("softmaxwithloss")
    assert (r.matched, r.frameworks) == ("SoftmaxWithLoss", ("Caffe",))
    r = names.resolve("BCELoss")  # PyTorch's and PaddlePaddle's, and the common "BCE Loss"
    assert set(r.frameworks) == {"PyTorch", "PaddlePaddle", "common"}


# --- ambiguity: crossent's own names win, prefixes select a framework ---------------------------


def test_own_names_win_over_aliases():
    # PyTorch's F.cross_entropy is softmax CE; crossent's own cross_entropy is H(p, q)
    assert names.get("cross_entropy").name == "cross_entropy"
    assert names.get("Cross Entropy").name == "cross_entropy"
    assert names.get("F.cross_entropy").name == "softmax_cross_entropy"
    assert names.get("paddle.nn.functional.cross_entropy").name == "softmax_cross_entropy"
    # Optax's sparsemax_loss is binary; crossent's own sparsemax_loss is the multi-class one
    assert names.get("sparsemax_loss").name == "sparsemax_loss"
    assert names.get("optax.sparsemax_loss").name == "binary_sparsemax_loss"
    # TensorFlow's log_loss is binary_cross_entropy; crossent's own log_loss is scikit-learn's
    assert names.get("log_loss").name == "log_loss"
    assert names.get("tf.losses.log_loss").name == "binary_cross_entropy"
    assert names.SHADOWED_ALIASES == {"crossentropy", "sparsemaxloss", "logloss"}


def test_the_shadowing_is_documented_in_the_notes():
    ce_notes = " ".join(names.get("cross_entropy").notes)
    assert "F.cross_entropy" in ce_notes and "softmax_cross_entropy" in ce_notes
    sm_notes = " ".join(names.get("softmax_cross_entropy").notes)
    assert "'cross_entropy'" in sm_notes and "own names win" in sm_notes
    assert "optax.sparsemax_loss" in " ".join(names.get("sparsemax_loss").notes)
    assert "tf.losses.log_loss" in " ".join(names.get("log_loss").notes)


def test_no_alias_maps_to_two_functions():
    seen: dict[str, str] = {}
    for spec in names.catalog():
        for fw, aliases in spec.aliases.items():
            for alias in aliases:
                owner = seen.setdefault(_key(alias), spec.name)
                assert owner == spec.name, f"{alias!r} ({fw}) -> {owner} and {spec.name}"


def test_own_names_are_distinct_and_shadow_only_the_documented_aliases():
    own = {_key(s.name): s.name for s in names.catalog()}
    assert len(own) == len(names.catalog())
    shadowed = {_key(a) for s in names.catalog() for al in s.aliases.values() for a in al
                if own.get(_key(a), s.name) != s.name}
    assert shadowed == set(names.SHADOWED_ALIASES)


def test_every_alias_is_reachable_bare_and_under_its_framework_prefix():
    for spec in names.catalog():
        for fw, aliases in spec.aliases.items():
            for alias in aliases:
                if _key(alias) not in names.SHADOWED_ALIASES:
                    assert names.get(alias) is spec, (alias, fw)
                if fw in PREFIX_OF:
                    got = names.get(PREFIX_OF[fw] + alias)
                    assert got is spec, (fw, alias, got.name)


def test_build_index_rejects_a_conflicting_alias(monkeypatch):
    spec = names.get("hinge_loss")
    clash = dataclasses.replace(spec, aliases={"Keras": ("CategoricalCrossentropy",)})
    monkeypatch.setitem(names._SPECS, "hinge_loss", clash)
    with pytest.raises(RuntimeError, match="CategoricalCrossentropy"):
        names._build_index()


# --- unknown names ------------------------------------------------------------------------------


@pytest.mark.parametrize("typo,suggestion", [
    ("SoftmaxWithLos", "SoftmaxWithLoss"),
    ("BCEWithLogitLoss", "BCEWithLogitsLoss"),
    ("torch.nn.CrossEntrpyLoss", "CrossEntropyLoss"),
    ("sigmoid_focal", "sigmoid_focal_loss"),
    ("ArcFaceLos", "ArcFace"),
])
def test_unknown_names_suggest_the_closest(typo, suggestion):
    with pytest.raises(KeyError) as info:
        names.get(typo)
    assert isinstance(info.value, UnknownLossName)
    message = info.value.args[0]
    assert typo in message and suggestion in message, message
    assert str(info.value) == message  # no KeyError quoting: the CLI prints it as is
    assert "\n" not in message


def test_unknown_name_with_nothing_close():
    with pytest.raises(KeyError, match="crossent list"):
        names.get("zzzz")
    with pytest.raises(KeyError):
        names.get("")


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match="str"):
        names.get(3)  # type: ignore[arg-type]


# --- the specs ----------------------------------------------------------------------------------


def test_catalog_covers_every_function_in_a_stable_order():
    specs = names.catalog()
    assert {s.name for s in specs} >= set(ALL_FUNCTIONS)
    order = [(FAMILIES.index(s.family), s.name) for s in specs]
    assert order == sorted(order)
    assert [s.name for s in names.catalog()] == [s.name for s in specs]
    assert [s.name for s in names.catalog("focal")] == ["sigmoid_focal_loss",
                                                        "softmax_focal_loss"]
    assert {s.family for s in names.catalog()} == set(names.families())
    with pytest.raises(ValueError, match="family"):
        names.catalog("nope")


@pytest.mark.parametrize("family,members", [
    ("softmax", {"softmax_cross_entropy"}),
    ("information", {"entropy", "cross_entropy", "kl_divergence", "js_divergence",
                     "log_loss", "generalized_kl_divergence"}),
    ("counter-example", {"mean_squared_error", "classification_error"}),
    ("ranking", set(EXPECTED["ranking"])),
])
def test_families(family, members):
    assert {s.name for s in names.catalog(family)} == members


@pytest.mark.parametrize("spec", names.catalog(), ids=lambda s: s.name)
def test_spec_fields(spec):
    assert spec.family in FAMILIES
    assert spec.formula and spec.gradient and spec.inputs and spec.references
    assert set(spec.aliases) <= set(FRAMEWORKS)
    assert all(isinstance(v, tuple) and v for v in spec.aliases.values())
    assert re.fullmatch(r"crossent\.\w+:\w+", spec.target)
    assert spec.target.endswith(":" + spec.name)
    assert spec.names()[0] == spec.name


@pytest.mark.parametrize("spec", names.catalog(), ids=lambda s: s.name)
def test_fn_resolves_to_the_declared_function(spec):
    fn = _fn_or_skip(spec)
    assert callable(fn) and fn.__name__ == spec.name
    # the declared module really defines it (the fallback search is for robustness only)
    assert fn.__module__ == spec.module
    assert spec.available
    for module, functions in EXPECTED.items():
        if spec.name in functions:
            assert spec.module == f"crossent.{module}"


@pytest.mark.parametrize("spec", names.catalog(), ids=lambda s: s.name)
def test_grad_is_the_registered_closed_form(spec):
    fn = _fn_or_skip(spec)
    from crossent.gradients import has_closed_form

    assert (spec.grad is not None) == has_closed_form(fn)


def test_grad_for_the_core_losses():
    sce, sig = names.get("softmax_cross_entropy"), names.get("sigmoid_cross_entropy")
    assert sce.grad is not None and sig.grad is not None
    g = sce.grad(np.array([[0.0, 0.0]]), np.array([0]))
    np.testing.assert_allclose(g, [[-0.5, 0.5]])
    g = sig.grad(np.array([0.0]), np.array([1.0]), reduction="sum")
    np.testing.assert_allclose(g, [-0.5])
    assert names.get("classification_error").grad is None  # piecewise constant


def test_spec_is_frozen_hashable_and_its_aliases_read_only():
    spec = names.get("softmax_cross_entropy")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.aliases["PyTorch"] = ("x",)  # type: ignore[index]
    assert {spec: 1}[names.get("SoftmaxWithLoss")] == 1


def test_a_missing_module_raises_import_error_with_the_target():
    spec = dataclasses.replace(names.get("hinge_loss"), name="no_such_loss",
                               target="crossent.no_such_module:no_such_loss")
    assert not spec.available
    with pytest.raises(ImportError, match="no_such_loss"):
        _ = spec.fn


def test_names_imports_no_loss_module_at_import_time():
    tree = ast.parse(Path(inspect.getfile(names)).read_text(encoding="utf-8"))
    imported = set()
    for node in tree.body:  # module level only; imports inside functions are lazy
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not imported & (set(EXPECTED) | {f"crossent.{m}" for m in EXPECTED} | {"gradients"})


# --- notes: the semantic differences between frameworks -----------------------------------------


@pytest.mark.parametrize("name,fragments", [
    ("KLDivLoss", ("batchmean", "EVERY ELEMENT", "(log q, p)")),
    ("BCELoss", ("PROBABILITIES", "BCEWithLogitsLoss", "logits")),
    ("BCEWithLogitsLoss", ("BCELoss", "probabilities")),
    ("SoftmaxWithLoss", ("MultinomialLogisticLoss", "scores")),
    ("MultinomialLogisticLoss", ("probabilities", "SoftmaxWithLoss")),
    ("softmax_cross_entropy_with_logits", ("PROBABILITY labels", "sparse_softmax")),
    ("categorical_crossentropy", ("from_logits=False", "axis=-1")),
    ("NLLLoss", ("LOG-PROBABILITIES",)),
    ("keras.losses.MeanSquaredError", ("AVERAGES over the class axis",)),
    ("optax.sigmoid_focal_loss", ("alpha=None", "torchvision", "alpha=0.25")),
    ("ArcFaceLoss", ("DEGREES", "radians")),
    ("optax.kl_divergence", ("log_predictions",)),
])
def test_notes_record_the_differences(name, fragments):
    notes = " ".join(names.get(name).notes)
    for f in fragments:
        assert f in notes, (name, f)


def test_hinge_embedding_loss_is_not_mapped():
    # it takes distances, not scores: not the hinge loss (only exact maps)
    with pytest.raises(KeyError):
        names.get("torch.nn.HingeEmbeddingLoss")
    assert "HingeEmbeddingLoss" in " ".join(names.get("hinge_loss").notes)


# --- aliases_of / frameworks --------------------------------------------------------------------


def test_aliases_of():
    import crossent

    by_fn = names.aliases_of(crossent.softmax_cross_entropy)
    assert "SoftmaxWithLoss" in by_fn["Caffe"] and "CrossEntropyLoss" in by_fn["PyTorch"]
    assert names.aliases_of("SoftmaxWithLoss") is by_fn
    assert names.aliases_of(names.get("BCELoss"))["PyTorch"] == ("BCELoss",
                                                                 "binary_cross_entropy")
    with pytest.raises(KeyError):
        names.aliases_of(lambda x: x)
    with pytest.raises(TypeError):
        names.aliases_of(3.0)


def test_frameworks():
    fws = names.frameworks()
    assert fws[0] == "common"
    assert {"PyTorch", "TensorFlow", "Keras", "Caffe", "Optax", "torchvision", "MXNet/Gluon",
            "PaddlePaddle", "pytorch-metric-learning", "timm"} <= set(fws)
    assert list(fws) == [f for f in FRAMEWORKS if f in fws]


def test_known_names_all_resolve():
    known = names.known_names()
    assert "SoftmaxWithLoss" in known and "softmax_cross_entropy" in known
    for n in known:
        names.get(n)


# --- the mapping is semantic: the function under a framework's name gives its numbers ----------

TF_TABLE_LOGITS = np.array([[0.7, 1.2, 0.3], [0.4, 0.2, 0.9], [0.6, 0.3, 0.4]])
TF_TABLE_LABELS = np.array([1, 2, 0])


def test_tensorflow_verification_table_through_tf_names():
    onehot = np.eye(3)[TF_TABLE_LABELS]
    fn = _fn_or_skip(names.get("tf.nn.softmax_cross_entropy_with_logits"))
    np.testing.assert_allclose(fn(TF_TABLE_LOGITS, onehot, reduction="none"),
                               [0.69967604, 0.74342006, 0.93983102], atol=1e-6)
    fn = _fn_or_skip(names.get("tf.nn.sparse_softmax_cross_entropy_with_logits"))
    np.testing.assert_allclose(fn(TF_TABLE_LOGITS, TF_TABLE_LABELS, reduction="none"),
                               [0.69967604, 0.74342006, 0.93983102], atol=1e-6)
    smooth = 0.9 * onehot + 0.1 / 3
    fn = _fn_or_skip(names.get("tf.nn.sigmoid_cross_entropy_with_logits"))
    np.testing.assert_allclose(fn(TF_TABLE_LOGITS, smooth, reduction="none"),
                               [[1.0798527, 0.34328249, 0.84435523],
                                [0.89968193, 0.7914722, 0.40115389],
                                [0.47748795, 0.84435523, 0.89968193]], atol=1e-6)


def test_three_animal_tables_through_article_names():
    y = np.array([2, 1, 0])
    m1 = np.array([[0.3, 0.3, 0.4], [0.3, 0.4, 0.3], [0.1, 0.2, 0.7]])
    m2 = np.array([[0.1, 0.2, 0.7], [0.1, 0.7, 0.2], [0.3, 0.4, 0.3]])
    err = _fn_or_skip(names.get("Classification Error"))
    assert float(err(m1, y)) == pytest.approx(1 / 3) and float(err(m2, y)) == pytest.approx(1 / 3)
    mse = _fn_or_skip(names.get("Mean Squared Error"))
    assert round(float(mse(m1, y)), 2) == 0.81 and round(float(mse(m2, y)), 2) == 0.34
    # "Multinomial Logistic Loss" (Caffe: probabilities, no softmax) -> H(onehot, p)
    ce = _fn_or_skip(names.get("Multinomial Logistic Loss"))
    loop = [np.mean([-np.log(m[i, y[i]]) for i in range(3)]) for m in (m1, m2)]
    np.testing.assert_allclose([ce(np.eye(3)[y], m1), ce(np.eye(3)[y], m2)], loop)
    assert loop[0] > loop[1]  # cross-entropy tells model 2 is better


@pytest.fixture(scope="module")
def torch_data():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(6, 4))
    return torch, rng, logits, rng.integers(0, 4, size=6)


def _t(torch, x):
    return torch.from_numpy(np.asarray(x))


def test_pytorch_names_give_pytorch_numbers(torch_data):
    torch, rng, logits, y = torch_data
    F = torch.nn.functional
    tl, ty = _t(torch, logits), _t(torch, y)

    def check(name, got_args, want, **kw):
        fn = _fn_or_skip(names.get(name))
        np.testing.assert_allclose(np.asarray(fn(*got_args, **kw)), want.numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=name)

    check("F.cross_entropy", (logits, y), F.cross_entropy(tl, ty))
    logp = F.log_softmax(tl, dim=-1)
    check("torch.nn.NLLLoss", (logp.numpy(), y), F.nll_loss(logp, ty))
    p = rng.uniform(0.05, 0.95, size=(6, 4))
    t = rng.uniform(size=(6, 4))
    check("torch.nn.BCELoss", (p, t), F.binary_cross_entropy(_t(torch, p), _t(torch, t)))
    check("torch.nn.BCEWithLogitsLoss", (logits, t),
          F.binary_cross_entropy_with_logits(tl, _t(torch, t)))
    check("MultiLabelSoftMarginLoss", (logits, t),
          F.multilabel_soft_margin_loss(tl, _t(torch, t)))
    s = rng.choice([-1.0, 1.0], size=(6, 4))
    check("SoftMarginLoss", (logits, (s + 1) / 2), F.soft_margin_loss(tl, _t(torch, s)))
    pd, qd = rng.dirichlet(np.ones(4), size=6), rng.dirichlet(np.ones(4), size=6)
    # the note: kl_div takes (log q, p) and crossent's "mean" is "batchmean"
    check("KLDivLoss", (pd, qd),
          F.kl_div(_t(torch, np.log(qd)), _t(torch, pd), reduction="batchmean"))
    check("MultiMarginLoss", (logits, y), F.multi_margin_loss(tl, ty))
    x1, x2 = rng.normal(size=6), rng.normal(size=6)
    check("MarginRankingLoss", (x1, x2, s[:, 0]),
          F.margin_ranking_loss(_t(torch, x1), _t(torch, x2), _t(torch, s[:, 0])))
    a, pos, neg = (rng.normal(size=(6, 3)) for _ in range(3))
    check("TripletMarginLoss", (a, pos, neg),
          F.triplet_margin_loss(_t(torch, a), _t(torch, pos), _t(torch, neg)))
    check("CosineEmbeddingLoss", (a, pos, s[:, 0]),
          F.cosine_embedding_loss(_t(torch, a), _t(torch, pos), _t(torch, s[:, 0])))


def test_kl_div_mean_is_not_batchmean(torch_data):
    # the note's other half: PyTorch's "mean" divides by every element, N * C
    torch, rng, _, _ = torch_data
    pd, qd = rng.dirichlet(np.ones(4), size=5), rng.dirichlet(np.ones(4), size=5)
    kl = _fn_or_skip(names.get("KLDivLoss"))
    with warnings.catch_warnings():  # PyTorch warns that "mean" is not the KL
        warnings.simplefilter("ignore", UserWarning)
        torch_mean = torch.nn.functional.kl_div(_t(torch, np.log(qd)), _t(torch, pd),
                                                reduction="mean").item()
    assert float(kl(pd, qd)) == pytest.approx(torch_mean * 4)


def test_optax_names_give_optax_numbers():
    optax = pytest.importorskip("optax")
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 4))
    probs = rng.dirichlet(np.ones(4), size=5)
    y = rng.integers(0, 4, size=5)

    def check(name, got, want):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-12,
                                   err_msg=name)

    fn = _fn_or_skip(names.get("optax.softmax_cross_entropy"))
    check("softmax_cross_entropy", fn(logits, probs, reduction="none"),
          optax.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(probs)))
    fn = _fn_or_skip(names.get("optax.softmax_cross_entropy_with_integer_labels"))
    check("with_integer_labels", fn(logits, y, reduction="none"),
          optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits), jnp.asarray(y)))
    t = rng.integers(0, 2, size=(5, 4)).astype(float)
    fn = _fn_or_skip(names.get("optax.sigmoid_focal_loss"))
    # the note: optax's default alpha is None
    check("sigmoid_focal_loss", fn(logits, t, alpha=None, reduction="none"),
          optax.sigmoid_focal_loss(jnp.asarray(logits), jnp.asarray(t)))
    fn = _fn_or_skip(names.get("optax.kl_divergence"))
    q = rng.dirichlet(np.ones(4), size=5)
    check("kl_divergence", fn(probs, q, reduction="none"),
          optax.kl_divergence(jnp.log(jnp.asarray(q)), jnp.asarray(probs)))
    fn = _fn_or_skip(names.get("optax.sparsemax_loss"))
    check("sparsemax_loss (binary)", fn(logits, t, reduction="none"),
          optax.losses.sparsemax_loss(jnp.asarray(logits), jnp.asarray(t)))
    fn = _fn_or_skip(names.get("optax.multiclass_hinge_loss"))
    check("multiclass_hinge_loss", fn(logits, y, reduction="none"),
          optax.losses.multiclass_hinge_loss(jnp.asarray(logits), jnp.asarray(y)))


def test_scikit_learn_names_give_scikit_learn_numbers():
    metrics = pytest.importorskip("sklearn.metrics")
    y = np.array([2, 1, 0, 1])
    p = np.array([[0.3, 0.3, 0.4], [0.3, 0.4, 0.3], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]])
    # the note: on a multi-class probability matrix the Brier score is the three-animal
    # example's MSE
    mse = _fn_or_skip(names.get("sklearn.metrics.brier_score_loss"))
    assert float(mse(p, y)) == pytest.approx(metrics.brier_score_loss(y, p))
    # log_loss on binary positive-class probabilities, with scikit-learn's argument order
    pb, yb = np.array([0.9, 0.2, 0.6]), np.array([1.0, 0.0, 0.0])
    ll = _fn_or_skip(names.get("sklearn.metrics.log_loss"))
    assert float(ll(yb, pb)) == pytest.approx(metrics.log_loss(yb, pb), rel=1e-14)
    err = _fn_or_skip(names.get("sklearn.metrics.zero_one_loss"))
    assert float(err(p, y)) == pytest.approx(metrics.zero_one_loss(y, p.argmax(-1)))


def test_keras_names_give_keras_numbers():
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(5, 3))
    onehot = np.eye(3)[rng.integers(0, 3, size=5)]
    fn = _fn_or_skip(names.get("keras.losses.CategoricalCrossentropy"))
    want = keras.losses.categorical_crossentropy(onehot, logits, from_logits=True)
    np.testing.assert_allclose(fn(logits, onehot, reduction="none"), np.asarray(want),
                               rtol=1e-6)
    # the note: Keras's MSE averages over the class axis, ours sums it
    p = rng.dirichlet(np.ones(3), size=5)
    fn = _fn_or_skip(names.get("keras.losses.MeanSquaredError"))
    want = keras.losses.mean_squared_error(onehot, p)
    np.testing.assert_allclose(fn(p, onehot, reduction="none"), 3 * np.asarray(want),
                               rtol=1e-6)
    fn = _fn_or_skip(names.get("keras.losses.CategoricalHinge"))
    want = keras.losses.categorical_hinge(onehot, logits)
    np.testing.assert_allclose(fn(logits, onehot, reduction="none"), np.asarray(want),
                               rtol=1e-6)


def test_every_catalog_entry_has_example_inputs_for_the_cli():
    # `crossent gradcheck` (no names) and `crossent plot` walk the catalog through each
    # entry's sample kind: an entry whose kind has no maker breaks them
    samples = pytest.importorskip("crossent._samples")
    missing = [s.name for s in names.catalog() if s.sample not in samples.MAKERS]
    assert not missing, f"give these table entries a sample kind of crossent._samples: {missing}"


def test_structured_fields_of_the_table():
    # the command line reads these fields instead of parsing prose
    assert names.get("SoftmaxWithLoss").task == "multiclass"
    assert names.get("BCEWithLogitsLoss").task == "multilabel"
    assert names.get("kl_divergence").task is None
    assert [s.name for s in names.catalog() if not s.differentiable] == ["classification_error"]
    for s in names.catalog():  # a loss the table calls differentiable has a closed form
        assert (s.grad is not None) == s.differentiable, s.name

