"""Reproduce worked examples from the literature through crossent's public API.

The three-animal example of two models ("Cross Entropy损失函数"): 0-1 error cannot tell them
apart, MSE and cross-entropy can. The TensorFlow verification table ("图像分类任务中的损失函数"):
TensorFlow's output for sigmoid and softmax cross-entropy. The coin of maximum likelihood
(same article): ten tosses, six heads; the likelihood is exp(-n BCE), so maximum likelihood is
minimum cross-entropy; and D_KL(p || q) = H(p, q) - H(p) on a worked pair.
"""

from __future__ import annotations

import math

import numpy as np

import crossent

LABELS = np.array([2, 1, 0])  # pig, dog, cat
MODELS = {
    "model 1": np.array([[0.3, 0.3, 0.4], [0.3, 0.4, 0.3], [0.1, 0.2, 0.7]]),
    "model 2": np.array([[0.1, 0.2, 0.7], [0.1, 0.7, 0.2], [0.3, 0.4, 0.3]]),
}


def three_animal_rows() -> list[tuple[str, float, float, float]]:
    rows = []
    for name, probs in MODELS.items():
        rows.append((
            name,
            float(crossent.classification_error(probs, LABELS)),
            float(crossent.mean_squared_error(probs, LABELS)),
            # cross-entropy on probabilities: softmax of log p is p itself
            float(crossent.softmax_cross_entropy(np.log(probs), LABELS)),
        ))
    return rows


TOSSES = np.array([1, 1, 0, 1, 1, 0, 1, 0, 1, 0.0])  # heads, heads, tails, ...: six heads


def coin_probability(theta: float, heads: int = 6, n: int = 10) -> float:
    """P(heads of n; theta) = C(n, heads) exp(-n BCE(theta)) for one such sequence."""
    seq = np.array([1.0] * heads + [0.0] * (n - heads))
    bce = float(crossent.binary_cross_entropy(np.full(n, theta), seq))
    return math.comb(n, heads) * math.exp(-n * bce)


def coin_mle(theta: float = 0.5, steps: int = 50, lr: float = 0.2) -> float:
    """The maximum-likelihood theta, reached by gradient descent on the BCE of the tosses."""
    bce_grad = crossent.grad(crossent.binary_cross_entropy)
    for _ in range(steps):
        theta -= lr * float(bce_grad(np.full(len(TOSSES), theta), TOSSES).sum())
    return theta


def main() -> None:
    print("the three-animal example of two models: which model is better?")
    print(f"{'':10}{'0-1 error':>12}{'MSE':>10}{'cross-entropy':>16}")
    for name, err, mse, ce in three_animal_rows():
        print(f"{name:10}{err:12.4f}{mse:10.4f}{ce:16.4f}")
    print("(article: 1/3 and 1/3; 0.81 and 0.34; 1.37 and 0.63)\n")

    logits = np.array([[0.7, 1.2, 0.3], [0.4, 0.2, 0.9], [0.6, 0.3, 0.4]], dtype=np.float32)
    labels = np.array([1, 2, 0])
    smooth = crossent.smooth_labels(crossent.one_hot(labels, 3, dtype=np.float32), 0.1)
    print("the TensorFlow verification table (float32)")
    print("smooth labels:\n", smooth)
    print("sigmoid cross-entropy (stable form max(x,0) - x z + log(1 + exp(-|x|))):\n",
          crossent.sigmoid_cross_entropy(logits, smooth, reduction="none"))
    print("softmax cross-entropy:\n",
          crossent.softmax_cross_entropy(logits, labels, reduction="none"))
    print("(article: [0.69967604 0.74342006 0.93983102])\n")

    print("maximum likelihood is cross-entropy: a coin tossed 10 times, 6 heads")
    print(f"P(6 heads; theta=0.6) = C(10,6) 0.6^6 0.4^4 = {coin_probability(0.6):.4f}"
          "  (article: 0.2508)")
    print(f"theta minimising the binary cross-entropy of the tosses: {coin_mle():.6f}"
          "  (article: 0.6)")
    p, q = np.array([0.1, 0.2, 0.7]), np.array([0.3, 0.3, 0.4])
    kl = float(crossent.kl_divergence(p, q))
    diff = float(crossent.cross_entropy(p, q)) - float(crossent.entropy(p))
    print(f"D_KL(p || q) = {kl:.6f} = H(p, q) - H(p) = {diff:.6f}  (p = {p}, q = {q})")


if __name__ == "__main__":
    main()
