"""crossent: the cross-entropy family of losses, defined once on the array API.

Every loss runs on NumPy, PyTorch, JAX and any array-API library, has a closed-form gradient
(:func:`value_and_grad`), and is reachable by any framework's name (:func:`get`).
"""

# Each module's ``__all__`` is its public API; the package re-exports them, nothing else.
from . import (
    activations,
    classification,
    distillation,
    extended,
    focal,
    information,
    margin,
    ranking,
)
from .activations import *  # noqa: F403
from .classification import *  # noqa: F403
from .distillation import *  # noqa: F403
from .extended import *  # noqa: F403
from .focal import *  # noqa: F403
from .gradients import grad as grad
from .gradients import value_and_grad as value_and_grad
from .information import *  # noqa: F403
from .margin import *  # noqa: F403
from .names import LossSpec as LossSpec
from .names import catalog as catalog
from .names import get as get
from .ranking import *  # noqa: F403

__version__ = "0.1.0"

__all__ = sorted({
    *activations.__all__, *classification.__all__, *distillation.__all__, *extended.__all__,
    *focal.__all__, *information.__all__, *margin.__all__, *ranking.__all__,
    "LossSpec", "catalog", "get", "grad", "value_and_grad",
})
