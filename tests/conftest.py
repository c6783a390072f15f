"""Test-wide settings: JAX in float64, Keras on the JAX backend, a bounded hypothesis profile."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
from hypothesis import settings  # noqa: E402

jax.config.update("jax_enable_x64", True)

settings.register_profile("crossent", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("crossent")
