"""The MCAL labeling run: ``mcal(config, workdir)`` labels a whole dataset at minimum cost.

One job a module: ``settings`` (the config, checked and typed), ``workdir`` (the run's
files), ``lock`` (one process a workdir), ``integrity`` (whether the files agree),
``state`` (typed records and how they are replayed), ``prepare`` (data, pool, ledger),
``measure`` (one model's round), ``loop`` (the rounds), ``baselines`` (AL(δ),
oracle-assisted AL, hindsight) and ``finish`` (the certified final labeling).
"""

from mcal_jax.run.loop import mcal

__all__ = ["mcal"]
