"""Worked examples from the literature, reproduced through the public API (our test vectors).

The three-animal example of two models comes from "Cross Entropy损失函数" (article: 0-1 error
and MSE vs cross-entropy); the TensorFlow verification table from "图像分类任务中的损失函数"
(article: sigmoid / softmax cross-entropy, checked against TensorFlow's output).
"""

import math
import runpy
from decimal import Decimal, getcontext
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import crossent

# the three-animal example of two models (cat, dog, pig); model 2 is better than model 1, but
# only the cross-entropy (and MSE) can tell.
LABELS = np.array([2, 1, 0])
MODEL1 = np.array([[0.3, 0.3, 0.4], [0.3, 0.4, 0.3], [0.1, 0.2, 0.7]])
MODEL2 = np.array([[0.1, 0.2, 0.7], [0.1, 0.7, 0.2], [0.3, 0.4, 0.3]])

# the TensorFlow verification table: logits and labels [1, 2, 0], smoothing 0.1 for sigmoid
TF_LOGITS = np.array([[0.7, 1.2, 0.3], [0.4, 0.2, 0.9], [0.6, 0.3, 0.4]])
TF_LABELS = np.array([1, 2, 0])
TF_SMOOTH = np.array(
    [[0.03333334, 0.93333334, 0.03333334],
     [0.03333334, 0.03333334, 0.93333334],
     [0.93333334, 0.03333334, 0.03333334]]
)
TF_SIGMOID = np.array(
    [[1.0798527, 0.34328249, 0.84435523],
     [0.89968193, 0.7914722, 0.40115389],
     [0.47748795, 0.84435523, 0.89968193]]
)
TF_SOFTMAX = np.array([0.69967604, 0.74342006, 0.93983102])


def test_three_animals_classification_error_cannot_tell_the_models_apart():
    assert crossent.classification_error(MODEL1, LABELS) == pytest.approx(1 / 3)
    assert crossent.classification_error(MODEL2, LABELS) == pytest.approx(1 / 3)
    onehot = crossent.one_hot(LABELS, 3)
    assert crossent.classification_error(MODEL1, onehot) == pytest.approx(1 / 3)


def test_three_animals_mean_squared_error_tables():
    per1 = crossent.mean_squared_error(MODEL1, LABELS, reduction="none")
    per2 = crossent.mean_squared_error(MODEL2, LABELS, reduction="none")
    np.testing.assert_allclose(per1, [0.54, 0.54, 1.34], atol=1e-12)
    np.testing.assert_allclose(per2, [0.14, 0.14, 0.74], atol=1e-12)
    # the article rounds the means to 0.81 and 0.34
    assert float(crossent.mean_squared_error(MODEL1, LABELS)) == pytest.approx(0.81, abs=0.005)
    assert float(crossent.mean_squared_error(MODEL2, LABELS)) == pytest.approx(0.34, abs=0.005)


def test_three_animals_cross_entropy_tables():
    # the article truncates to two decimals: 0.91, 0.91, 2.30 -> 1.37 and 0.35, 0.35, 1.20 -> 0.63
    log1, log2 = np.log(MODEL1), np.log(MODEL2)
    per1 = crossent.softmax_cross_entropy(log1, LABELS, reduction="none")
    per2 = crossent.softmax_cross_entropy(log2, LABELS, reduction="none")
    np.testing.assert_allclose(per1, [0.91, 0.91, 2.30], atol=0.01)
    np.testing.assert_allclose(per2, [0.35, 0.35, 1.20], atol=0.01)
    np.testing.assert_allclose(per1, -np.log([0.4, 0.4, 0.1]), rtol=1e-12)
    assert float(crossent.softmax_cross_entropy(log1, LABELS)) == pytest.approx(1.37, abs=0.01)
    assert float(crossent.softmax_cross_entropy(log2, LABELS)) == pytest.approx(0.63, abs=0.01)
    assert crossent.softmax_cross_entropy(log2, LABELS) < crossent.softmax_cross_entropy(
        log1, LABELS)


def test_tensorflow_table_softmax_probabilities_and_loss():
    p = crossent.softmax(TF_LOGITS)
    # the article's green tensor, row 0 (it prints 0.497 and, in the formula, 0.479: a typo)
    np.testing.assert_allclose(p[0], [0.301, 0.497, 0.202], atol=5e-4)
    loss = crossent.softmax_cross_entropy(TF_LOGITS, TF_LABELS, reduction="none")
    np.testing.assert_allclose(loss, TF_SOFTMAX, atol=1e-6)
    onehot = crossent.one_hot(TF_LABELS, 3)
    np.testing.assert_allclose(
        crossent.softmax_cross_entropy(TF_LOGITS, onehot, reduction="none"), TF_SOFTMAX,
        atol=1e-6)


def test_tensorflow_table_label_smoothing_and_sigmoid():
    smooth = crossent.smooth_labels(crossent.one_hot(TF_LABELS, 3), 0.1)
    np.testing.assert_allclose(smooth, TF_SMOOTH, atol=1e-6)
    loss = crossent.sigmoid_cross_entropy(TF_LOGITS, smooth, reduction="none")
    np.testing.assert_allclose(loss, TF_SIGMOID, atol=1e-6)
    # equation (2-3), element (0, 0); the article's label is the float32 0.03333334
    assert loss[0, 0] == pytest.approx(1.07985271089, abs=1e-8)


def test_tensorflow_table_sigmoid_in_float32_matches_tensorflow_output():
    loss = crossent.sigmoid_cross_entropy(
        TF_LOGITS.astype(np.float32), TF_SMOOTH.astype(np.float32), reduction="none")
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss, TF_SIGMOID, atol=1e-6)


def test_softmax_gradient_is_p_minus_onehot():
    g = crossent.grad(crossent.softmax_cross_entropy)(TF_LOGITS, TF_LABELS, reduction="sum")
    np.testing.assert_allclose(g, crossent.softmax(TF_LOGITS) - crossent.one_hot(TF_LABELS, 3),
                               atol=1e-15)


def test_sigmoid_gradient_is_sigma_minus_y():
    s = np.array([-3.0, -0.5, 0.0, 2.0, 40.0])
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    g = crossent.grad(crossent.sigmoid_cross_entropy)(s, y, reduction="sum")
    np.testing.assert_allclose(g, 1 / (1 + np.exp(-s)) - y, atol=1e-15)


def test_indexing_by_class_count_bug_is_not_ours():
    # the sample code of the "Loss functions" notes indexes probs[np.arange(n_cls), targets],
    # which picks the wrong rows (and fails when N != C); the right pick is
    # probs[np.arange(N), targets]
    logits = np.random.default_rng(0).normal(size=(5, 3))
    labels = np.array([0, 2, 1, 1, 0])
    p = crossent.softmax(logits)
    expected = -np.mean(np.log(p[np.arange(5), labels]))
    assert float(crossent.softmax_cross_entropy(logits, labels)) == pytest.approx(expected)


# --- maximum likelihood = cross-entropy: the coin (10 tosses, 6 heads) ----------------------

EXAMPLES = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples"
                              / "worked_examples.py"))


def test_coin_probability_matches_50_digit_arithmetic():
    getcontext().prec = 50
    exact = Fraction(math.comb(10, 6)) * Fraction(3, 5) ** 6 * Fraction(2, 5) ** 4
    want = Decimal(exact.numerator) / Decimal(exact.denominator)
    assert str(want)[:8] == "0.250822"  # 0.2508 as the article prints it (its P(6;0.5) is a typo)
    got = EXAMPLES["coin_probability"](0.6)
    assert abs(Decimal(got) - want) < Decimal("1e-14")
    # theta = 0.5 gives another number: the article's label, not its value
    assert abs(EXAMPLES["coin_probability"](0.5) - 210 / 1024) < 1e-14


def test_coin_mle_is_the_bce_minimiser():
    theta = EXAMPLES["coin_mle"]()
    assert theta == pytest.approx(0.6, abs=1e-9)
    # the stationary point of the log-likelihood 6 log t + 4 log(1 - t), by its derivative
    assert 6 / theta - 4 / (1 - theta) == pytest.approx(0.0, abs=1e-6)
    # and the BCE there is below its value at any other theta on a grid
    bce = [float(crossent.binary_cross_entropy(np.full(10, t), EXAMPLES["TOSSES"]))
           for t in np.linspace(0.05, 0.95, 19)]
    assert min(bce) == pytest.approx(float(crossent.binary_cross_entropy(
        np.full(10, 0.6), EXAMPLES["TOSSES"])), abs=1e-15)


def test_kl_is_cross_entropy_minus_entropy_on_the_worked_pair():
    p, q = np.array([0.1, 0.2, 0.7]), np.array([0.3, 0.3, 0.4])
    getcontext().prec = 50
    want = sum(Decimal(a) * (Decimal(a) / Decimal(b)).ln() for a, b in
               (("0.1", "0.3"), ("0.2", "0.3"), ("0.7", "0.4")))
    kl = float(crossent.kl_divergence(p, q))
    assert abs(Decimal(kl) - want) < Decimal("1e-15")
    diff = float(crossent.cross_entropy(p, q)) - float(crossent.entropy(p))
    assert diff == pytest.approx(kl, rel=1e-14)
