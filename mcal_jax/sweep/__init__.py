"""Sweeps: many MCAL runs of one config file, each in its own folder of the sweep's workdir.

A config file's ``sweep(arg)`` returns the points, each a dict of overrides with dotted
keys (``{"labeling.service": "satyam", "mcal.epsilon": 0.1, "seed": 2}``), built with
:func:`product`, :func:`zip_`, :func:`times` and :func:`seeds`. :func:`run_sweep` runs
them in ``workdir/<point_name>/``, each with the full outputs of a run (README.md).

Why it is safe to rerun and to split:
- A point is finished when its folder holds ``summary.json`` (written last by a run), so
  a rerun skips it. A point killed halfway has a folder without it; running it again
  resumes it (:func:`mcal_jax.run.mcal` replays its ledger and state).
- :func:`shard` deals the points round-robin (``points[index::count]``): the shards of one
  sweep are disjoint and together hold every point, so ``--shard=i/n`` or a SLURM job
  array can split a sweep over machines without coordination.
- Point names depend only on the point's own overrides, never on its position, so a
  sweep that grows (another seed) keeps its finished folders.

``points`` builds, names, applies and shards the points; ``runner`` runs them (here, or one
subprocess per group of local GPUs) and holds :func:`run_config_sweep`, the whole of
``python -m launch.sweep``.
"""

from mcal_jax.sweep.points import (
    MAX_NAME_CHARS,
    Point,
    apply_overrides,
    check_unique_names,
    parse_shard,
    point_name,
    product,
    seeds,
    shard,
    times,
    zip_,
)
from mcal_jax.sweep.runner import (
    device_slots,
    dry_run_lines,
    load_points,
    local_accelerators,
    point_argv,
    run_config_sweep,
    run_sweep,
)

__all__ = [
    "MAX_NAME_CHARS",
    "Point",
    "apply_overrides",
    "check_unique_names",
    "device_slots",
    "dry_run_lines",
    "load_points",
    "local_accelerators",
    "parse_shard",
    "point_argv",
    "point_name",
    "product",
    "run_config_sweep",
    "run_sweep",
    "seeds",
    "shard",
    "times",
    "zip_",
]
