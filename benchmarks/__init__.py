"""Benchmarks of mcal_jax: the per-round core's speed and what training costs (``python -m``)."""
