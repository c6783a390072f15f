"""crossent: the cross-entropy family of losses, defined once on the array API.

Every loss runs on NumPy, PyTorch, JAX and any array-API library, has a closed-form gradient
(:func:`value_and_grad`), and is reachable by any framework's name (:func:`get`).
"""

from .activations import (
    log_sigmoid,
    log_softmax,
    logsumexp,
    one_hot,
    sigmoid,
    smooth_labels,
    softmax,
)
from .classification import (
    binary_cross_entropy,
    binary_cross_entropy_grad,
    classification_error,
    mean_squared_error,
    mean_squared_error_grad,
    sigmoid_cross_entropy,
    sigmoid_cross_entropy_grad,
    softmax_cross_entropy,
    softmax_cross_entropy_grad,
)
from .distillation import distillation_loss, distillation_loss_grad
from .focal import (
    sigmoid_focal_loss,
    sigmoid_focal_loss_grad,
    softmax_focal_loss,
    softmax_focal_loss_grad,
)
from .gradients import grad, value_and_grad
from .information import (
    cross_entropy,
    cross_entropy_grad,
    cross_entropy_grad_q,
    entropy,
    entropy_grad,
    js_divergence,
    js_divergence_grad,
    kl_divergence,
    kl_divergence_grad,
    kl_divergence_grad_q,
)

__version__ = "0.1.0"

__all__ = [
    "cross_entropy",
    "cross_entropy_grad",
    "cross_entropy_grad_q",
    "distillation_loss",
    "distillation_loss_grad",
    "entropy",
    "entropy_grad",
    "js_divergence",
    "js_divergence_grad",
    "kl_divergence",
    "kl_divergence_grad",
    "kl_divergence_grad_q",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_grad",
    "softmax_focal_loss",
    "softmax_focal_loss_grad",
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "classification_error",
    "grad",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "mean_squared_error",
    "mean_squared_error_grad",
    "one_hot",
    "sigmoid",
    "sigmoid_cross_entropy",
    "sigmoid_cross_entropy_grad",
    "smooth_labels",
    "softmax",
    "softmax_cross_entropy",
    "softmax_cross_entropy_grad",
    "value_and_grad",
]
