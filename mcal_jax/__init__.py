"""mcal_jax: minimum-cost active labeling in JAX."""

__version__ = "0.1.0"
